"""The real app as Lambda serves it: every event shape, a DynamoDB store, warm connections."""

from __future__ import annotations

import base64
import gc
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from arcade.config import load_local_env
from arcade.lambda_adapter import handle
from tests.support.api_process import run_lambda_handler
from tests.support.app import ADMIN_KEY, TOPIC_PREFIX, WEBHOOK_SECRET
from tests.support.lambda_events import make_alb_event, make_v1_event, make_v2_event
from tests.support.stripe_standin import checkout_session, event, sign_payload

ROOT = Path(__file__).resolve().parent.parent
MAKERS = {
    "rest_v1": lambda **kw: make_v1_event(**kw),
    "http_api_v2": lambda **kw: make_v2_event(**kw),
    "function_url": lambda **kw: make_v2_event(function_url=True, **kw),
    "alb": lambda **kw: make_alb_event(**kw),
    "alb_single_value": lambda **kw: make_alb_event(multi_value=False, **kw),
    # Custom domains whose mapping puts a base path in front of the route the event names.
    "rest_v1_base_path": lambda **kw: make_v1_event(
        custom_domain="pay.example.com", base_path="/pay", **kw
    ),
    "rest_v1_nested_base_path_plain_resource": lambda **kw: make_v1_event(
        custom_domain="pay.example.com", base_path="/a/b", resource=kw["path"], **kw
    ),
    "http_api_v2_mapping": lambda **kw: make_v2_event(
        custom_domain="pay.example.com", base_path="/pay", route="ANY /{proxy+}", **kw
    ),
}


@pytest.fixture
def lambda_app(make_app, moto_endpoint, dynamodb_table, monkeypatch):
    """Build the app as Lambda runs it: function name set, DynamoDB store through moto."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    app = make_app(
        AWS_LAMBDA_FUNCTION_NAME="arcade-pay", DATABASE_URL=f"dynamodb://{dynamodb_table}"
    )
    app.extensions["arcade"].store.create_table()
    return app


def body_of(answer: dict) -> bytes:
    raw = answer.get("body") or ""
    return base64.b64decode(raw) if answer.get("isBase64Encoded") else raw.encode()


def register_with_link(app) -> tuple[dict[str, str], str]:
    _, token = app.extensions["arcade"].registry.register("cab001")
    auth = {"Authorization": f"Bearer {token}"}
    link = (
        app.test_client()
        .post("/create-payment-link", json={"machine_id": "cab001"}, headers=auth)
        .json
    )
    return auth, link["payment_link_id"]


@pytest.mark.parametrize("shape", MAKERS)
def test_status_answers_in_every_event_shape(lambda_app, shape):
    """GIVEN each Lambda event shape WHEN /status is asked THEN 200 JSON, up."""
    answer = handle(lambda_app, MAKERS[shape](path="/status"), None)

    assert answer["statusCode"] == 200
    assert json.loads(body_of(answer))["status"] == "up"


@pytest.mark.parametrize("shape", MAKERS)
def test_signed_base64_webhook_grants_on_dynamodb_in_every_shape(lambda_app, subscribe, shape):
    """GIVEN a base64 body as API Gateway sends it WHEN signed by Stripe THEN it verifies."""
    register_with_link(lambda_app)
    link_id = (
        lambda_app.extensions["arcade"].store.get_link("cab001|price_default_credit|0").link_id
    )
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")
    payload = json.dumps(
        event(
            "checkout.session.completed",
            checkout_session(id=f"cs_{shape}", payment_link=link_id, amount_subtotal=150),
        )
    ).encode()
    headers = [
        ("content-type", "application/json"),
        ("stripe-signature", sign_payload(payload, WEBHOOK_SECRET)),
    ]

    answer = handle(
        lambda_app,
        MAKERS[shape](method="POST", path="/webhook", headers=headers, body=payload, base64=True),
        None,
    )

    assert answer["statusCode"] == 200, body_of(answer)
    assert subscriber.wait_for(1)[0].payload["credits"] == 3
    stored = lambda_app.extensions["arcade"].store.get_payment(f"cs_{shape}")
    assert stored.status == "delivered"


def test_a_tampered_base64_body_is_refused(lambda_app):
    """GIVEN a signed body WHEN one byte changes on the way THEN 400 and nothing recorded."""
    payload = json.dumps(
        event("checkout.session.completed", checkout_session(id="cs_tamper", amount_subtotal=50))
    ).encode()
    headers = [("stripe-signature", sign_payload(payload, WEBHOOK_SECRET))]

    answer = handle(
        lambda_app,
        make_v2_event(
            method="POST", path="/webhook", headers=headers, body=payload + b" ", base64=True
        ),
        None,
    )

    assert answer["statusCode"] == 400
    assert lambda_app.extensions["arcade"].store.get_payment("cs_tamper") is None


@pytest.mark.parametrize("shape", ["rest_v1", "function_url", "alb"])
def test_qr_png_goes_back_base64(lambda_app, shape):
    """GIVEN a machine with a link WHEN its QR PNG is asked through Lambda THEN real PNG bytes."""
    register_with_link(lambda_app)

    answer = handle(lambda_app, MAKERS[shape](path="/machines/cab001/qr.png"), None)

    assert answer["statusCode"] == 200
    assert answer["isBase64Encoded"] is True
    assert body_of(answer).startswith(b"\x89PNG\r\n\x1a\n")


def test_game_over_state_lives_in_dynamodb_across_app_instances(
    lambda_app, make_app, dynamodb_table, subscribe
):
    """GIVEN credits granted by one Lambda instance WHEN another serves game over THEN it counts."""
    auth, link_id = register_with_link(lambda_app)
    payload = json.dumps(
        event(
            "checkout.session.completed",
            checkout_session(id="cs_dyn", payment_link=link_id, amount_subtotal=100),
        )
    ).encode()
    handle(
        lambda_app,
        make_v2_event(
            method="POST",
            path="/webhook",
            body=payload,
            headers=[("stripe-signature", sign_payload(payload, WEBHOOK_SECRET))],
        ),
        None,
    )
    other = make_app(
        AWS_LAMBDA_FUNCTION_NAME="arcade-pay", DATABASE_URL=f"dynamodb://{dynamodb_table}"
    )
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/gameover")
    over = make_v2_event(
        method="POST",
        path="/gameover",
        headers=[("content-type", "application/json"), ("authorization", auth["Authorization"])],
        body=b'{"machine_id": "cab001"}',
    )

    assert handle(other, over, None)["statusCode"] == 200
    subscriber.wait_for(1)
    state = json.loads(
        body_of(
            handle(
                other,
                make_v2_event(
                    path="/machines/cab001", headers=[("authorization", auth["Authorization"])]
                ),
                None,
            )
        )
    )
    assert state["credits"] == {"granted": 2, "used": 1, "left": 1}
    assert state["payments"][0]["id"] == "cs_dyn"


def test_sqlite_is_refused_in_lambda(make_app):
    """GIVEN Lambda and a sqlite: store WHEN a request needs the store THEN 503 naming it."""
    app = make_app(AWS_LAMBDA_FUNCTION_NAME="arcade-pay")

    status = json.loads(body_of(handle(app, make_v1_event(path="/status"), None)))
    answer = handle(
        app,
        make_v1_event(path="/machines/cab001", headers=[("authorization", f"Bearer {ADMIN_KEY}")]),
        None,
    )

    assert any("DATABASE_URL" in problem for problem in status["problems"])
    assert answer["statusCode"] == 503
    assert "DATABASE_URL" in json.loads(body_of(answer))["error"]


def test_env_local_is_read_locally_and_never_in_lambda(tmp_path):
    """GIVEN a .env.local WHEN loading settings THEN used locally, ignored in Lambda."""
    env_file = tmp_path / ".env.local"
    env_file.write_text("STRIPE_PRICE_ID=price_from_file\nPORT=6000\n")
    local = {"PORT": "7000"}
    in_lambda = {"AWS_LAMBDA_FUNCTION_NAME": "arcade-pay"}

    assert load_local_env(env_file, local) is True
    assert load_local_env(env_file, in_lambda) is False
    assert local == {"PORT": "7000", "STRIPE_PRICE_ID": "price_from_file"}
    assert in_lambda == {"AWS_LAMBDA_FUNCTION_NAME": "arcade-pay"}


def in_fresh_lambda_interpreter(code: str) -> str:
    """Run ``code`` in a new interpreter set up as Lambda starts one; return what it printed."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={
            "PATH": "/usr/bin:/bin",
            "AWS_LAMBDA_FUNCTION_NAME": "x",
            "DATABASE_URL": "dynamodb://t",
        },
    )
    return out.stdout.strip()


def test_importing_app_connects_to_nothing_and_loads_no_heavy_library():
    """GIVEN a fresh interpreter WHEN app is imported THEN no stripe, boto3 or qrcode yet."""
    code = (
        "import sys, app; heavy = [m for m in ('stripe', 'boto3', 'botocore', 'qrcode',"
        " 'paho.mqtt.client') if m in sys.modules]; print(heavy)"
    )
    assert in_fresh_lambda_interpreter(code) == "[]"


def test_a_cold_start_status_builds_none_of_the_money_path():
    """GIVEN a fresh interpreter in Lambda WHEN app is imported and answers one /status THEN
    no module of the money path (ledger, payment states, store records, Stripe objects,
    pricing, plans, operators) was imported: a cold start pays only for what it answers."""
    code = (
        "import json, sys, app\n"
        "from tests.support.lambda_events import make_v1_event\n"
        "answer = app.lambda_handler(make_v1_event(path='/status'), None)\n"
        "money = ['arcade.ledger', 'arcade.payment_states', 'arcade.store.base',"
        " 'arcade.stripe_objects', 'arcade.pricing', 'arcade.plans', 'arcade.operators',"
        " 'arcade.payments', 'arcade.links', 'arcade.presence']\n"
        "print(json.dumps([answer['statusCode'], [m for m in money if m in sys.modules]]))"
    )
    assert json.loads(in_fresh_lambda_interpreter(code)) == [200, []]


# paho leaves the socket of a TLS handshake that timed out to the garbage collector.
@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")
def test_warm_invocations_reuse_the_connection_and_survive_a_frozen_broker(
    make_app, fresh_broker, moto_endpoint, dynamodb_table, monkeypatch, subscribe
):
    """GIVEN a warm function WHEN the broker froze between calls THEN 503, then one grant."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    app = make_app(
        on=fresh_broker,
        AWS_LAMBDA_FUNCTION_NAME="arcade-pay",
        DATABASE_URL=f"dynamodb://{dynamodb_table}",
    )
    app.extensions["arcade"].store.create_table()
    _, link_id = register_with_link(app)
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse", on=fresh_broker)

    def webhook(session_id: str) -> dict:
        payload = json.dumps(
            event(
                "checkout.session.completed",
                checkout_session(id=session_id, payment_link=link_id, amount_subtotal=50),
            )
        ).encode()
        return handle(
            app,
            make_v2_event(
                method="POST",
                path="/webhook",
                body=payload,
                base64=True,
                headers=[("stripe-signature", sign_payload(payload, WEBHOOK_SECRET))],
            ),
            None,
        )

    assert webhook("cs_first")["statusCode"] == 200
    first_client = app.extensions["arcade"].publisher._client
    assert webhook("cs_second")["statusCode"] == 200
    assert app.extensions["arcade"].publisher._client is first_client
    fresh_broker.freeze()
    frozen = webhook("cs_third")
    fresh_broker.thaw()
    retried = webhook("cs_third")

    assert frozen["statusCode"] == 503
    assert retried["statusCode"] == 200
    third = [m.payload for m in subscriber.settle(1.0) if m.payload["paymentId"] == "cs_third"]
    assert third and all(p == third[0] for p in third)
    assert app.extensions["arcade"].store.get_machine_state("cab001").credits_granted == 3
    gc.collect()


def test_the_hourly_schedule_reconciles_through_lambda_handler(
    lambda_app, broker, stripe_standin, subscribe, moto_endpoint, dynamodb_table, tmp_path
):
    """GIVEN a paid session whose webhook never arrived WHEN the hourly schedule invokes
    lambda_handler in a fresh interpreter on the DynamoDB store THEN it is granted and published,
    and the answer is the job's summary, not HTTP."""
    from tests.support.app import DEFAULT_PRICE, app_environment

    _, link_id = register_with_link(lambda_app)
    stripe_standin.add_checkout_session("cs_scheduled", [(DEFAULT_PRICE, 2)], payment_link=link_id)
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")

    answer = run_lambda_handler(
        {"arcade_job": "reconcile"},
        app_environment(broker, stripe_standin, tmp_path / "unused.db"),
        endpoint=moto_endpoint,
        table=dynamodb_table,
    )

    assert "statusCode" not in answer
    assert answer["reconcile"]["seen"] == 1
    assert answer["reconcile"]["granted_now"] == 1
    assert subscriber.wait_for(1)[0].payload["paymentId"] == "cs_scheduled"


def test_the_real_app_behind_a_base_path_mapping_answers_status_and_webhooks(lambda_app, subscribe):
    """GIVEN a REST API on pay.example.com with the base path /pay WHEN /pay/status and a
    signed /pay/webhook come THEN both are routed (not 404)."""
    _, link_id = register_with_link(lambda_app)
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")
    payload = json.dumps(
        event(
            "checkout.session.completed",
            checkout_session(id="cs_mapped", payment_link=link_id, amount_subtotal=50),
        )
    ).encode()

    status = handle(
        lambda_app,
        make_v1_event(path="/status", custom_domain="pay.example.com", base_path="/pay"),
        None,
    )
    hook = handle(
        lambda_app,
        make_v1_event(
            method="POST",
            path="/webhook",
            body=payload,
            headers=[("Stripe-Signature", sign_payload(payload, WEBHOOK_SECRET))],
            custom_domain="pay.example.com",
            base_path="/pay",
        ),
        None,
    )

    assert status["statusCode"] == 200
    assert hook["statusCode"] == 200, hook
    assert subscriber.wait_for(1)[0].payload["paymentId"] == "cs_mapped"


@pytest.mark.parametrize("path", ["/machines/cab001", "/payments", "/machines"])
@pytest.mark.parametrize("shape", ["rest_v1", "function_url"])
def test_a_token_no_client_could_have_been_given_is_a_401_through_lambda(
    lambda_app, caplog, shape, path
):
    """GIVEN an event whose Authorization holds a lone surrogate (JSON can carry "\\udc80")
    WHEN a machine's or an admin route is asked through the handler THEN 401, no ERROR line
    (encoding the token for the comparison raised UnicodeEncodeError: a 500)."""
    lambda_app.extensions["arcade"].registry.register("cab001")
    raw = MAKERS[shape](path=path, headers=[("Authorization", "Bearer mt_\udc80")])
    sent = json.loads(json.dumps(raw))  # as Lambda hands it over: parsed from JSON text

    answer = handle(lambda_app, sent, None)

    assert answer["statusCode"] == 401
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def _with(event: dict, **fields) -> dict:
    event.update(fields)
    return event


# Fields an event carries as the client sent them, holding what a WSGI string cannot: a
# character sent unencoded in the query, a lone surrogate (JSON can carry "\udc80").
RAW_EVENT_FIELDS = {
    "query_euro": lambda: make_v2_event(path="/machines/cab001/qr.png", raw_query="quantity=€"),
    "query_surrogate": lambda: make_v2_event(
        path="/machines/cab001/qr.png", raw_query="quantity=\udc80"
    ),
    "rest_query_surrogate": lambda: _with(
        make_v1_event(path="/machines/cab001/qr.png"),
        queryStringParameters={"quantity": "\udc80"},
        multiValueQueryStringParameters={"quantity": ["\udc80"]},
    ),
    "alb_query_euro": lambda: _with(
        make_alb_event(path="/machines/cab001/qr.svg"),
        multiValueQueryStringParameters={"quantity": ["€"]},
    ),
    "path_surrogate": lambda: make_v2_event(path="/machines/cab\udc80/qr.png"),
    "body_surrogate": lambda: _with(
        make_v2_event(method="POST", path="/create-payment-link"),
        body='{"machine_id": "\udc80"}',
        headers={"content-type": "application/json"},
    ),
}


@pytest.mark.parametrize("fields", RAW_EVENT_FIELDS)
def test_what_no_wsgi_string_can_hold_in_an_event_is_a_400_not_a_crash(lambda_app, caplog, fields):
    """GIVEN an event whose query, path or body holds a character sent unencoded or a lone
    surrogate WHEN the handler serves it THEN a 400 with no ERROR line (the handler raised
    UnicodeEncodeError, or Werkzeug a UnicodeDecodeError 500, for an anonymous caller)."""
    lambda_app.extensions["arcade"].registry.register("cab001")
    sent = json.loads(json.dumps(RAW_EVENT_FIELDS[fields]()))

    answer = handle(lambda_app, sent, None)

    assert answer["statusCode"] == 400
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("shape", ["rest_v1", "http_api_v2", "alb"])
@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Forwarded-Proto", "javascript"),
        ("X-Forwarded-Proto", "https\r\nSet-Cookie: a=b"),
        ("X-Forwarded-Proto", "\udc80"),
        ("X-Forwarded-Port", "\udc80"),
        ("X-Forwarded-Port", "443\r\nX: y"),
    ],
)
def test_a_forwarded_scheme_or_port_that_is_none_leaves_links_on_https(
    lambda_app, caplog, shape, header, value
):
    """GIVEN an event whose X-Forwarded-Proto or X-Forwarded-Port is no scheme or port (a
    hand-made event, a trigger passing the client's header on) WHEN /admin redirects THEN the
    Location is https on the event's host (the handler raised UnicodeEncodeError or
    ValueError building the Location, outside the app's error handlers)."""
    sent = json.loads(json.dumps(MAKERS[shape](path="/admin", headers=[(header, value)])))

    answer = handle(lambda_app, sent, None)

    headers = answer.get("headers") or {k: v[-1] for k, v in answer["multiValueHeaders"].items()}
    assert 300 <= answer["statusCode"] < 400
    assert headers["Location"].startswith("https://")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("base64_body", [True, False])
@pytest.mark.parametrize("shape", ["rest_v1", "function_url", "alb_single_value"])
def test_a_signed_body_with_characters_beyond_ascii_verifies_as_text_and_as_base64(
    lambda_app, subscribe, shape, base64_body
):
    """GIVEN a webhook body Stripe signed as UTF-8 holding characters beyond ASCII (a name, an
    astral-plane symbol, U+2028) WHEN an event carries it as text or as base64 THEN the
    signature is verified over exactly those bytes and the payment is granted."""
    register_with_link(lambda_app)
    link_id = (
        lambda_app.extensions["arcade"].store.get_link("cab001|price_default_credit|0").link_id
    )
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")
    paid = event(
        "checkout.session.completed",
        checkout_session(id=f"cs_utf8_{shape}", payment_link=link_id, amount_subtotal=150),
    )
    paid["data"]["object"]["customer_details"] = {"name": "Zoë Ærøskøbing ☕ 𝄞 \u2028"}
    payload = json.dumps(paid, ensure_ascii=False).encode()
    headers = [
        ("content-type", "application/json; charset=utf-8"),
        ("stripe-signature", sign_payload(payload, WEBHOOK_SECRET)),
    ]
    sent = MAKERS[shape](
        method="POST", path="/webhook", headers=headers, body=payload, base64=base64_body
    )

    answer = handle(lambda_app, json.loads(json.dumps(sent)), None)

    assert answer["statusCode"] == 200, body_of(answer)
    assert subscriber.wait_for(1)[0].payload["paymentId"] == f"cs_utf8_{shape}"


def test_a_form_on_an_admin_page_behind_a_base_path_comes_back_to_that_page(lambda_app):
    """GIVEN /admin on pay.example.com behind the base path /pay, an operator logged in WHEN
    the manual-credit form of a machine's page is sent THEN the answer goes back to that page
    under /pay (its next address left the base path out, so it was refused and the operator
    landed on the payments page instead)."""
    import re
    from urllib.parse import urlencode

    lambda_app.extensions["arcade"].registry.register("cab001")
    cookie = ""

    def send(method: str, path: str, form: dict[str, str] | None = None) -> dict:
        nonlocal cookie
        headers = [("Cookie", cookie)] if cookie else []
        body = b""
        if form is not None:
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
            body = urlencode(form).encode()
        answer = handle(
            lambda_app,
            make_v1_event(
                method=method,
                path=path,
                headers=headers,
                body=body,
                custom_domain="pay.example.com",
                base_path="/pay",
            ),
            None,
        )
        for value in (answer.get("multiValueHeaders") or {}).get("Set-Cookie", []):
            cookie = value.split(";")[0]
        return answer

    def csrf(answer: dict) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', answer["body"]).group(1)

    login = send("GET", "/admin/login")
    assert (
        send("POST", "/admin/login", {"key": ADMIN_KEY, "csrf_token": csrf(login)})["statusCode"]
        == 302
    )
    page = send("GET", "/admin/machines/cab001")
    nexts = re.findall(r'name="next" value="([^"]*)"', page["body"])
    assert nexts and set(nexts) == {"/pay/admin/machines/cab001"}, nexts
    form = {"csrf_token": csrf(page), "machine_id": "cab001", "credits": "1", "reason": "test"}
    granted = send("POST", "/admin/credits", {**form, "next": nexts[0]})
    assert granted["statusCode"] == 302
    assert granted["multiValueHeaders"]["Location"] == ["/pay/admin/machines/cab001"]
