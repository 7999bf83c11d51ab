from __future__ import annotations

import json
import logging
from base64 import b64decode
from typing import Any

import pytest
from flask import Flask, Response, jsonify, request, url_for

from arcade.lambda_adapter import handle
from tests.support.lambda_events import SOURCE_IP, make_alb_event, make_v1_event, make_v2_event

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
# What Stripe signs is bytes: a body with bytes that are not UTF-8 must still arrive intact.
WEBHOOK_BODY = b'{"id": "evt_1", "note": "caf\xc3\xa9"}\x00\x80\xfe\xff'
TEXT_BODY = '{"machine_id": "cab001", "name": "Café Racer"}'.encode()
QUERY = [("tag", "a"), ("tag", "b"), ("next", "/machines/cab001"), ("q", "hello world")]
QUERY_ARGS = {"tag": ["a", "b"], "next": ["/machines/cab001"], "q": ["hello world"]}
CONTEXT = object()


@pytest.fixture
def closed() -> list[str]:
    return []


@pytest.fixture
def app(closed: list[str]) -> Flask:
    app = Flask(__name__)

    @app.route("/echo", methods=["GET", "POST", "PUT", "DELETE"])
    @app.route("/echo/<path:rest>", methods=["GET", "POST"])
    def echo(rest: str | None = None) -> dict[str, Any]:
        return {
            "method": request.method,
            "path": request.path,
            "rest": rest,
            "script_root": request.script_root,
            "url": request.url,
            "query_string": request.query_string.decode("latin-1"),
            "args": request.args.to_dict(flat=False),
            "headers": dict(request.headers),
            "cookies": request.cookies.to_dict(flat=False),
            "body_hex": request.get_data().hex(),
            "remote_addr": request.remote_addr,
        }

    @app.get("/status")
    def status() -> dict[str, str]:
        return {"status": "up", "self": url_for("status")}

    @app.get("/qr.png")
    def qr() -> Response:
        return Response(PNG, mimetype="image/png")

    @app.get("/cookies")
    def cookies() -> Response:
        response = jsonify(ok=True)
        response.set_cookie("first", "1")
        response.set_cookie("second", "2")
        return response

    @app.get("/latin-1")
    def latin_1() -> Response:
        return Response("café".encode("latin-1"), mimetype="text/plain")

    @app.get("/closing")
    def closing() -> Response:
        response = Response("done", mimetype="text/plain")
        response.call_on_close(lambda: closed.append("closed"))
        return response

    return app


def serve(app: Flask, event: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    response = handle(app, event, CONTEXT)
    body = response["body"]
    if not response["isBase64Encoded"] and body.startswith("{"):
        return response, json.loads(body)
    return response, body


class TestRestApiV1:
    def test_method_path_and_repeated_encoded_query_reach_flask(self, app: Flask) -> None:
        event = make_v1_event(method="DELETE", path="/echo", query=QUERY)

        response, echo = serve(app, event)

        assert response["statusCode"] == 200
        assert echo["method"] == "DELETE"
        assert echo["path"] == "/echo"
        assert echo["args"] == QUERY_ARGS
        assert echo["query_string"] == "tag=a&tag=b&next=%2Fmachines%2Fcab001&q=hello%20world"

    def test_percent_encoded_path_is_decoded_once(self, app: Flask) -> None:
        event = make_v1_event(path="/echo/caf%C3%A9%20bar%2525")

        _, echo = serve(app, event)

        assert echo["rest"] == "café bar%25"

    def test_repeated_headers_survive(self, app: Flask) -> None:
        event = make_v1_event(path="/echo", headers=[("X-Cabinet", "a"), ("X-Cabinet", "b")])

        _, echo = serve(app, event)

        assert echo["headers"]["X-Cabinet"] == "a, b"

    def test_cookie_headers_reach_flask(self, app: Flask) -> None:
        event = make_v1_event(
            path="/echo", headers=[("Cookie", "session=abc; theme=dark"), ("Cookie", "lang=en")]
        )

        _, echo = serve(app, event)

        assert echo["cookies"] == {"session": ["abc"], "theme": ["dark"], "lang": ["en"]}

    def test_base64_body_arrives_byte_exact(self, app: Flask) -> None:
        event = make_v1_event(method="POST", path="/echo", body=WEBHOOK_BODY, base64=True)

        _, echo = serve(app, event)

        assert bytes.fromhex(echo["body_hex"]) == WEBHOOK_BODY

    def test_text_body_arrives_as_utf8_bytes(self, app: Flask) -> None:
        event = make_v1_event(
            method="POST",
            path="/echo",
            headers=[("Content-Type", "application/json")],
            body=TEXT_BODY,
        )

        _, echo = serve(app, event)

        assert bytes.fromhex(echo["body_hex"]) == TEXT_BODY

    def test_png_goes_back_base64_encoded(self, app: Flask) -> None:
        event = make_v1_event(path="/qr.png")

        response, body = serve(app, event)

        assert response["statusCode"] == 200
        assert response["isBase64Encoded"] is True
        assert b64decode(body) == PNG
        assert response["multiValueHeaders"]["Content-Type"] == ["image/png"]

    def test_every_set_cookie_goes_back(self, app: Flask) -> None:
        event = make_v1_event(path="/cookies")

        response, _ = serve(app, event)

        cookies = response["multiValueHeaders"]["Set-Cookie"]
        assert [cookie.split(";")[0] for cookie in cookies] == ["first=1", "second=2"]
        assert response["headers"]["Set-Cookie"] == cookies[-1]

    def test_stage_stays_out_of_the_route_and_in_urls(self, app: Flask) -> None:
        event = make_v1_event(path="/status", stage="prod")

        response, status = serve(app, event)

        assert response["statusCode"] == 200
        assert status == {"status": "up", "self": "/prod/status"}

    def test_stage_in_a_custom_domain_path_is_stripped(self, app: Flask) -> None:
        # On a custom domain the path holds the stage only as the mapping's base path.
        event = make_v1_event(
            path="/status", stage="prod", custom_domain="pay.example.com", base_path="/prod"
        )

        response, status = serve(app, event)

        assert response["statusCode"] == 200
        assert status["self"] == "/prod/status"

    def test_client_address_comes_from_api_gateway_not_the_client(self, app: Flask) -> None:
        event = make_v1_event(path="/echo", headers=[("X-Forwarded-For", f"10.0.0.1, {SOURCE_IP}")])

        _, echo = serve(app, event)

        assert echo["remote_addr"] == SOURCE_IP
        assert echo["url"].startswith("https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/")

    def test_unknown_path_is_404(self, app: Flask) -> None:
        response, _ = serve(app, make_v1_event(path="/nope"))

        assert response["statusCode"] == 404

    def test_response_is_closed(self, app: Flask, closed: list[str]) -> None:
        response, body = serve(app, make_v1_event(path="/closing"))

        assert body == "done"
        assert closed == ["closed"]

    def test_undeclared_binary_response_fails_loudly(self, app: Flask) -> None:
        with pytest.raises(ValueError, match="text/plain.*BINARY_CONTENT_TYPES"):
            handle(app, make_v1_event(path="/latin-1"), CONTEXT)

    def test_console_test_event_with_nulls_is_served(self, app: Flask) -> None:
        event = make_v1_event(path="/echo")
        event["headers"] = event["multiValueHeaders"] = None
        event["requestContext"]["identity"] = None

        response, echo = serve(app, event)

        assert response["statusCode"] == 200
        assert echo["url"] == "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/prod/echo"


class TestHttpApiV2:
    def test_method_path_and_raw_query_reach_flask_exactly(self, app: Flask) -> None:
        raw_query = "tag=a&tag=b&next=%2Fmachines%2Fcab001&q=hello%20world&plus=a%2Bb&space=a+b"
        event = make_v2_event(method="PUT", path="/echo", raw_query=raw_query)

        response, echo = serve(app, event)

        assert response["statusCode"] == 200
        assert echo["method"] == "PUT"
        assert echo["path"] == "/echo"
        assert echo["query_string"] == raw_query
        assert echo["args"] == {**QUERY_ARGS, "plus": ["a+b"], "space": ["a b"]}

    def test_repeated_headers_survive(self, app: Flask) -> None:
        event = make_v2_event(path="/echo", headers=[("X-Cabinet", "a"), ("X-Cabinet", "b")])

        _, echo = serve(app, event)

        assert echo["headers"]["X-Cabinet"] == "a,b"

    def test_cookies_become_a_cookie_header(self, app: Flask) -> None:
        event = make_v2_event(path="/echo", cookies=["session=abc", "theme=dark"])

        _, echo = serve(app, event)

        assert echo["cookies"] == {"session": ["abc"], "theme": ["dark"]}

    def test_base64_body_arrives_byte_exact(self, app: Flask) -> None:
        event = make_v2_event(method="POST", path="/echo", body=WEBHOOK_BODY, base64=True)

        _, echo = serve(app, event)

        assert bytes.fromhex(echo["body_hex"]) == WEBHOOK_BODY

    def test_text_body_arrives_as_utf8_bytes(self, app: Flask) -> None:
        event = make_v2_event(method="POST", path="/echo", body=TEXT_BODY)

        _, echo = serve(app, event)

        assert bytes.fromhex(echo["body_hex"]) == TEXT_BODY

    def test_png_goes_back_base64_encoded_in_a_v2_answer(self, app: Flask) -> None:
        response, body = serve(app, make_v2_event(path="/qr.png"))

        assert response["statusCode"] == 200
        assert response["isBase64Encoded"] is True
        assert b64decode(body) == PNG
        assert response["headers"]["Content-Type"] == "image/png"
        assert "multiValueHeaders" not in response

    def test_set_cookies_go_back_in_cookies(self, app: Flask) -> None:
        response, _ = serve(app, make_v2_event(path="/cookies"))

        assert [cookie.split(";")[0] for cookie in response["cookies"]] == ["first=1", "second=2"]
        assert all(isinstance(value, str) for value in response["headers"].values())
        assert "Set-Cookie" not in response["headers"]

    def test_named_stage_is_stripped_from_raw_path(self, app: Flask) -> None:
        response, status = serve(app, make_v2_event(path="/status", stage="prod"))

        assert response["statusCode"] == 200
        assert status["self"] == "/prod/status"

    def test_default_stage_leaves_the_path_alone(self, app: Flask) -> None:
        response, status = serve(app, make_v2_event(path="/status"))

        assert response["statusCode"] == 200
        assert status["self"] == "/status"

    def test_client_address_is_the_source_ip(self, app: Flask) -> None:
        event = make_v2_event(path="/echo", headers=[("X-Forwarded-For", f"10.0.0.1,{SOURCE_IP}")])

        _, echo = serve(app, event)

        assert echo["remote_addr"] == SOURCE_IP

    def test_unknown_path_is_404(self, app: Flask) -> None:
        response, _ = serve(app, make_v2_event(path="/nope"))

        assert response["statusCode"] == 404


class TestFunctionUrl:
    def test_request_reaches_flask(self, app: Flask) -> None:
        event = make_v2_event(
            method="POST",
            path="/echo",
            query=QUERY,
            cookies=["session=abc"],
            body=WEBHOOK_BODY,
            base64=True,
            function_url=True,
        )

        response, echo = serve(app, event)

        assert response["statusCode"] == 200
        assert echo["args"] == QUERY_ARGS
        assert echo["cookies"] == {"session": ["abc"]}
        assert bytes.fromhex(echo["body_hex"]) == WEBHOOK_BODY
        assert echo["url"].startswith("https://abcdefghijklmnopqrstuvwxyz0123.lambda-url.")

    def test_png_goes_back_base64_encoded(self, app: Flask) -> None:
        response, body = serve(app, make_v2_event(path="/qr.png", function_url=True))

        assert response["isBase64Encoded"] is True
        assert b64decode(body) == PNG


class TestAlb:
    @pytest.mark.parametrize("multi_value", [True, False])
    def test_encoded_query_is_decoded_once(self, app: Flask, multi_value: bool) -> None:
        event = make_alb_event(
            path="/echo",
            query=[("next", "/machines/cab001"), ("q", "a b&c")],
            multi_value=multi_value,
        )

        _, echo = serve(app, event)

        assert echo["args"] == {"next": ["/machines/cab001"], "q": ["a b&c"]}

    def test_repeated_query_keys_and_headers_survive_with_multi_value(self, app: Flask) -> None:
        event = make_alb_event(
            method="POST",
            path="/echo",
            query=QUERY,
            headers=[("x-cabinet", "a"), ("x-cabinet", "b")],
            multi_value=True,
        )

        _, echo = serve(app, event)

        assert echo["method"] == "POST"
        assert echo["args"] == QUERY_ARGS
        assert echo["headers"]["X-Cabinet"] == "a, b"

    def test_headers_reach_flask_without_multi_value(self, app: Flask) -> None:
        event = make_alb_event(path="/echo", headers=[("x-cabinet", "a")], multi_value=False)

        _, echo = serve(app, event)

        assert echo["headers"]["X-Cabinet"] == "a"

    @pytest.mark.parametrize("multi_value", [True, False])
    def test_base64_body_arrives_byte_exact(self, app: Flask, multi_value: bool) -> None:
        event = make_alb_event(
            method="POST", path="/echo", body=WEBHOOK_BODY, base64=True, multi_value=multi_value
        )

        _, echo = serve(app, event)

        assert bytes.fromhex(echo["body_hex"]) == WEBHOOK_BODY

    def test_multi_value_answer_uses_multi_value_headers(self, app: Flask) -> None:
        response, body = serve(app, make_alb_event(path="/qr.png", multi_value=True))

        assert response["statusCode"] == 200
        assert response["statusDescription"] == "200 OK"
        assert response["isBase64Encoded"] is True
        assert b64decode(body) == PNG
        assert response["multiValueHeaders"]["Content-Type"] == ["image/png"]
        assert "headers" not in response

    def test_single_value_answer_uses_headers(self, app: Flask) -> None:
        response, body = serve(app, make_alb_event(path="/qr.png", multi_value=False))

        assert response["statusDescription"] == "200 OK"
        assert b64decode(body) == PNG
        assert response["headers"]["Content-Type"] == "image/png"
        assert "multiValueHeaders" not in response

    def test_every_set_cookie_goes_back_with_multi_value(self, app: Flask) -> None:
        response, _ = serve(app, make_alb_event(path="/cookies", multi_value=True))

        assert len(response["multiValueHeaders"]["Set-Cookie"]) == 2

    def test_only_one_set_cookie_fits_without_multi_value(
        self, app: Flask, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="arcade.lambda_adapter"):
            response, _ = serve(app, make_alb_event(path="/cookies", multi_value=False))

        assert response["headers"]["Set-Cookie"].startswith("second=2")
        assert [record.getMessage() for record in caplog.records] == ["lambda_set_cookie_dropped"]

    def test_client_address_is_the_peer_the_load_balancer_saw(self, app: Flask) -> None:
        event = make_alb_event(
            path="/echo", headers=[("x-forwarded-for", f"10.0.0.1, {SOURCE_IP}")]
        )

        _, echo = serve(app, event)

        assert echo["remote_addr"] == SOURCE_IP

    def test_unknown_path_is_404(self, app: Flask) -> None:
        response, _ = serve(app, make_alb_event(path="/nope"))

        assert response["statusCode"] == 404
        assert response["statusDescription"] == "404 NOT FOUND"


class TestUnknownEvents:
    @pytest.mark.parametrize(
        ("event", "message"),
        [
            ({}, "no 'httpMethod'"),
            ({"Records": [{"eventSource": "aws:sqs"}]}, r"keys: \['Records'\]"),
            ({"version": "3.0", "rawPath": "/"}, "version '3.0'"),
            ({"httpMethod": "GET"}, "payload format 1.0 event has no 'path'"),
            ({"version": "2.0", "rawPath": "/"}, "has no 'requestContext.http.method'"),
            ({"requestContext": {"elb": {}}, "path": "/"}, "ALB event has no 'httpMethod'"),
        ],
    )
    def test_raises_value_error_naming_what_is_missing(
        self, app: Flask, event: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            handle(app, event, CONTEXT)

    def test_non_object_event_raises_value_error(self, app: Flask) -> None:
        with pytest.raises(ValueError, match="JSON object, not list"):
            handle(app, [], CONTEXT)  # type: ignore[arg-type]


# --- custom domains with a base path mapping --------------------------------------------------
def test_a_rest_api_behind_a_base_path_mapping_routes_from_the_proxy_parameter():
    """GIVEN https://pay.example.com/pay mapped to the API WHEN /pay/status comes THEN the app
    routes /status, and builds its own links under /pay."""
    seen = {}

    def app(environ, start_response):
        seen["path"], seen["script"] = environ["PATH_INFO"], environ["SCRIPT_NAME"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    answer = handle(
        app, make_v1_event(path="/status", custom_domain="pay.example.com", base_path="/pay"), None
    )

    assert answer["statusCode"] == 200
    assert seen == {"path": "/status", "script": "/pay"}


def test_api_base_path_strips_a_base_path_the_event_does_not_name(monkeypatch):
    seen = {}

    def app(environ, start_response):
        seen["path"] = environ["PATH_INFO"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    monkeypatch.setenv("API_BASE_PATH", "/pay")
    handle(app, make_v2_event(path="/pay/webhook", method="POST"), None)

    assert seen["path"] == "/webhook"


def _routing_app(seen: dict[str, str]):
    def app(environ, start_response):
        seen["path"], seen["script"] = environ["PATH_INFO"], environ["SCRIPT_NAME"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


@pytest.mark.parametrize(
    ("event", "path", "script"),
    [
        (
            make_v2_event(
                path="/status",
                custom_domain="pay.example.com",
                base_path="/pay",
                route="ANY /{proxy+}",
            ),
            "/status",
            "/pay",
        ),
        (
            make_v2_event(
                method="POST",
                path="/webhook",
                custom_domain="pay.example.com",
                base_path="/a/b",
                route="POST /webhook",
            ),
            "/webhook",
            "/a/b",
        ),
        (
            make_v2_event(path="/status", stage="prod", route="ANY /{proxy+}"),
            "/status",
            "/prod",
        ),
        (
            make_v1_event(
                path="/webhook",
                custom_domain="pay.example.com",
                base_path="/pay",
                resource="/webhook",
            ),
            "/webhook",
            "/pay",
        ),
        (
            make_v1_event(
                path="/", custom_domain="pay.example.com", base_path="/a/b", resource="/"
            ),
            "/",
            "/a/b",
        ),
        (
            make_v1_event(path="/status", custom_domain="pay.example.com", base_path="/p%61y"),
            "/status",
            "/pay",
        ),
    ],
    ids=[
        "http_api_mapping_proxy",
        "http_api_nested_mapping_route",
        "http_api_named_stage_proxy",
        "rest_mapping_plain_resource",
        "rest_nested_mapping_root",
        "rest_encoded_mapping",
    ],
)
def test_every_event_that_names_its_route_routes_behind_a_base_path_mapping(event, path, script):
    """GIVEN a custom domain whose API mapping puts a base path (and a stage) in front WHEN the
    event names the route it matched (a REST resource, an HTTP API route key, with their path
    parameters) THEN the app routes that, whatever the base path, and links under it."""
    seen: dict[str, str] = {}

    answer = handle(_routing_app(seen), event, None)

    assert answer["statusCode"] == 200
    assert seen == {"path": path, "script": script}


@pytest.mark.parametrize("stage", ["machines", "status"])
def test_a_rest_api_stage_named_like_a_route_is_not_cut_from_the_route(stage):
    """GIVEN a REST API on its execute-api domain, whose path never holds the stage WHEN the
    stage is named like the route's first segment THEN the route stays whole."""
    seen: dict[str, str] = {}

    handle(_routing_app(seen), make_v1_event(path=f"/{stage}/cab001", stage=stage), None)

    assert seen == {"path": f"/{stage}/cab001", "script": f"/{stage}"}


@pytest.mark.parametrize("stage", ["machines", "status"])
def test_a_custom_domain_without_base_path_keeps_a_route_named_like_the_stage(stage):
    """GIVEN a REST API on a custom domain mapped with no base path (the path is the route,
    as its resource and {proxy+} parameter say) WHEN the stage is named like the route's first
    segment THEN the route stays whole (the stage was cut from it: a 404)."""
    seen: dict[str, str] = {}
    event = make_v1_event(
        path=f"/{stage}/cab001", stage=stage, custom_domain="pay.example.com", base_path=""
    )

    handle(_routing_app(seen), event, None)

    assert seen["path"] == f"/{stage}/cab001"


def test_an_empty_multi_value_field_does_not_hide_the_single_value_headers():
    """GIVEN a REST event (a console test event, say) whose multiValueHeaders is {} and whose
    headers hold the Stripe-Signature WHEN served THEN the app sees the headers."""
    seen = {}

    def app(environ, start_response):
        seen["signature"] = environ.get("HTTP_STRIPE_SIGNATURE")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    event = make_v1_event(method="POST", path="/webhook", headers=[("Stripe-Signature", "t=1")])
    event["multiValueHeaders"] = {}
    handle(app, event, None)

    assert seen["signature"] == "t=1"


# --- events of a known shape whose fields no AWS service sends that way -----------------------
def _changed(event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**event, **fields}


def _post(make: Any, **options: Any) -> dict[str, Any]:
    return make(method="POST", path="/echo", body=b'{"a": 1}', **options)


def _with_context(event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**event, "requestContext": {**event["requestContext"], **fields}}


MALFORMED_EVENTS = {
    "v1_base64_not_base64": lambda: _changed(
        _post(make_v1_event), body="!!not base64$$", isBase64Encoded=True
    ),
    "v1_base64_bad_padding": lambda: _changed(
        _post(make_v1_event), body='{"a": 1}', isBase64Encoded=True
    ),
    "v2_base64_not_ascii": lambda: _changed(
        _post(make_v2_event), body="€€€€", isBase64Encoded=True
    ),
    "alb_base64_not_base64": lambda: _changed(
        _post(make_alb_event), body="***", isBase64Encoded=True
    ),
    "v1_base64_flag_is_text": lambda: _changed(_post(make_v1_event), isBase64Encoded="false"),
    "v1_body_is_an_object": lambda: _changed(_post(make_v1_event), body={"a": 1}),
    "v2_body_is_a_number": lambda: _changed(_post(make_v2_event), body=5),
    "v1_header_value_is_a_number": lambda: _changed(
        make_v1_event(path="/echo"), headers={"Authorization": 5}, multiValueHeaders=None
    ),
    "v1_multi_value_header_is_text": lambda: _changed(
        make_v1_event(path="/echo"), multiValueHeaders={"Authorization": "Bearer x"}
    ),
    "v1_query_values_not_a_list": lambda: _changed(
        make_v1_event(path="/echo"), multiValueQueryStringParameters={"a": 7}
    ),
    "v1_headers_is_text": lambda: _changed(
        make_v1_event(path="/echo"), headers="a: b", multiValueHeaders=None
    ),
    "v2_header_value_is_a_list": lambda: _changed(
        make_v2_event(path="/echo"), headers={"authorization": ["Bearer x"]}
    ),
    "v2_cookies_hold_a_number": lambda: _changed(make_v2_event(path="/echo"), cookies=[1, "a=b"]),
    "v2_cookies_is_text": lambda: _changed(make_v2_event(path="/echo"), cookies="a=b"),
    "v2_raw_query_is_a_number": lambda: _changed(make_v2_event(path="/echo"), rawQueryString=5),
    "alb_forwarded_for_is_a_number": lambda: _changed(
        make_alb_event(path="/echo", multi_value=False), headers={"x-forwarded-for": 5}
    ),
}


@pytest.mark.parametrize("name", MALFORMED_EVENTS)
def test_a_field_no_aws_service_sends_that_way_is_a_400_in_the_events_shape(app, caplog, name):
    """GIVEN an HTTP event with a body flagged base64 that is not, or a header, cookie or query
    field of the wrong type (a misconfigured trigger, a hand-made invoke) WHEN served THEN a 400
    naming the field in the event's own answer shape, a warning, and no ERROR line (the handler
    raised binascii.Error, TypeError or AttributeError: API Gateway's 502)."""
    from arcade.logs import REFUSALS

    REFUSALS._window.clear()  # the allowance of 20 a minute is shared by the whole run
    event = json.loads(json.dumps(MALFORMED_EVENTS[name]()))

    answer, body = serve(app, event)

    assert answer["statusCode"] == 400
    assert body["code"] == "bad_request"
    assert "the event's" in body["error"]
    assert "headers" in answer or "multiValueHeaders" in answer
    if "elb" in event["requestContext"]:
        assert answer["statusDescription"] == "400 Bad Request"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "lambda_event_refused")
    ]


@pytest.mark.parametrize(
    "context",
    [None, "x", [], {"identity": None, "stage": 5, "domainName": 7, "path": 5}, {"identity": "x"}],
)
def test_a_request_context_of_the_wrong_shape_tells_nothing_and_the_request_is_served(app, context):
    """GIVEN a REST event whose requestContext (or its identity) is null, text or a list WHEN
    served THEN the request is answered (the handler raised AttributeError)."""
    event = _changed(make_v1_event(path="/status", stage="prod"), requestContext=context)

    answer, body = serve(app, event)

    assert answer["statusCode"] == 200
    assert body["status"] == "up"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (_changed(make_v1_event(path="/status"), httpMethod=5), "'httpMethod' is not text"),
        (_changed(make_v1_event(path="/status"), path=["/status"]), "'path' is not text"),
        (_changed(make_v2_event(path="/status"), rawPath=5), "'rawPath' is not text"),
        (
            _with_context(make_v2_event(path="/status"), http={"method": 5}),
            "'requestContext.http.method' is not text",
        ),
    ],
)
def test_a_request_with_no_method_or_path_as_text_is_refused_by_name(app, event, message):
    with pytest.raises(ValueError, match=message):
        handle(app, event, CONTEXT)


@pytest.mark.parametrize("make", [make_v1_event, make_v2_event, make_alb_event])
def test_a_base64_body_is_decoded_strictly_to_the_exact_bytes(app, make):
    """Base64 with a stray character is refused, never decoded around it: the bytes that reach
    the webhook are the ones Stripe signed, or none."""
    event = make(method="POST", path="/echo", body=WEBHOOK_BODY, base64=True)
    sound, body = serve(app, event)
    stray = json.loads(json.dumps({**event, "body": "*" + event["body"]}))

    refused, _ = serve(app, stray)

    assert bytes.fromhex(body["body_hex"]) == WEBHOOK_BODY
    assert refused["statusCode"] == 400
