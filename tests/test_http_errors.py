"""Every failure answers {"error", "code"} in plain words: no trace, no library text, no secret."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest

from arcade.logs import JsonLineFormatter, configure_logging
from tests.support.app import ADMIN_KEY, WEBHOOK_SECRET, signed_post
from tests.support.stripe_standin import checkout_session, event

MAX_BODY = 256 * 1024
BAD_MACHINE_IDS = ["a/b", "+", "#", "a b", "x" * 65, ""]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def assert_error(answer, status: int, code: str | None = None) -> dict:
    """Check an answer is the project's error shape with this status (and code)."""
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.mimetype == "application/json"
    body = answer.get_json()
    assert set(body) == {"error", "code"}
    assert isinstance(body["error"], str) and body["error"].strip()
    assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", body["code"])
    if code is not None:
        assert body["code"] == code
    return body


@pytest.fixture
def log_lines(caplog):
    """Return the log lines written so far, formatted exactly as the app writes them."""
    configure_logging()
    formatter = JsonLineFormatter()
    return lambda: [formatter.format(record) for record in caplog.records]


def assert_no_leak(texts: list[str], secrets: list[str], library_text: tuple[str, ...] = ()):
    """Check no text holds a traceback, a secret or a library's own message."""
    for text in texts:
        assert "Traceback" not in text
        assert 'File "' not in text
        for secret in secrets:
            assert secret not in text
        for words in library_text:
            assert words not in text


def paid_session_for(client, cabinet, session_id: str) -> dict:
    """Return a paid Checkout Session on the cabinet's own link (one 50-cent unit)."""
    link = client.post(
        "/create-payment-link", json={"machine_id": cabinet.machine_id}, headers=cabinet.auth
    ).json
    return checkout_session(id=session_id, payment_link=link["payment_link_id"], amount_subtotal=50)


# --- 400: bodies that cannot be read -------------------------------------------------------


@pytest.mark.parametrize("path", ["/create-payment-link", "/gameover"])
@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"null", b"[1, 2]", b'"cab001"', b"42", b"\xff\xfe"],
    ids=["broken", "empty", "null", "array", "string", "number", "not-utf8"],
)
def test_a_body_that_is_not_a_json_object_is_a_400(client, cabinet, stripe_standin, path, body):
    """GIVEN a body that is not a JSON object WHEN posted THEN 400 invalid_json, no Stripe call."""
    answer = client.post(
        path, data=body, headers={**cabinet.auth, "Content-Type": "application/json"}
    )

    assert_error(answer, 400, "invalid_json")
    assert stripe_standin.requests == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"machine_id": 5}, "invalid_machine_id"),
        ({"machine_id": None}, "invalid_machine_id"),
        ({"machine_id": ["cab001"]}, "invalid_machine_id"),
        ({"machine_id": "cab001", "quantity": "2"}, "invalid_quantity"),
        ({"machine_id": "cab001", "quantity": True}, "invalid_quantity"),
        ({"machine_id": "cab001", "quantity": 0}, "invalid_quantity"),
        ({"machine_id": "cab001", "quantity": -1}, "invalid_quantity"),
        ({"machine_id": "cab001", "quantity": 2.5}, "invalid_quantity"),
        ({"machine_id": "cab001", "quantity": 11}, "invalid_quantity"),
        ({"machine_id": "cab001", "price_id": 5}, "invalid_price_id"),
        ({"machine_id": "cab001", "price_id": ""}, "invalid_price_id"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else value,
)
def test_wrong_types_in_a_payment_link_request_are_400s(
    client, cabinet, stripe_standin, body, code
):
    """GIVEN a field of the wrong type or range WHEN a link is asked for THEN 400 naming it."""
    answer = client.post("/create-payment-link", json=body, headers=cabinet.auth)

    assert_error(answer, 400, code)
    assert stripe_standin.requests == []


def test_quantity_is_bounded_by_max_quantity(make_app, register, stripe_standin):
    """GIVEN MAX_QUANTITY=3 WHEN quantity 4 then 3 is asked THEN 4 is a 400 and 3 makes a link."""
    cabinet = register("cab001")
    client = make_app(MAX_QUANTITY="3").test_client()

    too_many = client.post(
        "/create-payment-link", json={"machine_id": "cab001", "quantity": 4}, headers=cabinet.auth
    )
    most = client.post(
        "/create-payment-link", json={"machine_id": "cab001", "quantity": 3}, headers=cabinet.auth
    )

    body = assert_error(too_many, 400, "invalid_quantity")
    assert "3" in body["error"]
    assert most.status_code == 200
    assert len(stripe_standin.payment_links) == 1


# --- 400: machine ids, before anything else ------------------------------------------------


@pytest.mark.parametrize("path", ["/create-payment-link", "/gameover"])
@pytest.mark.parametrize("machine_id", BAD_MACHINE_IDS, ids=repr)
def test_a_bad_machine_id_is_a_400_before_auth_and_before_stripe(
    client, stripe_standin, subscribe, path, machine_id
):
    """GIVEN an unsafe machine id and no credentials WHEN posted THEN 400, nothing else happens."""
    subscriber = subscribe()

    answer = client.post(path, json={"machine_id": machine_id})

    body = assert_error(answer, 400, "invalid_machine_id")
    assert "machine_id" in body["error"]
    assert stripe_standin.requests == []
    assert subscriber.settle(0.05) == []


@pytest.mark.parametrize("quoted", ["+", "%23", "a%20b", "x" * 65, "%2B%2B", "caf%C3%A9"])
@pytest.mark.parametrize("suffix", ["", "/qr.png", "/qr.svg"])
def test_a_bad_machine_id_in_the_path_is_a_400(client, stripe_standin, quoted, suffix):
    """GIVEN an unsafe machine id in a URL WHEN read without credentials THEN 400."""
    answer = client.get(f"/machines/{quoted}{suffix}")

    assert_error(answer, 400, "invalid_machine_id")
    assert stripe_standin.requests == []


def test_a_64_character_id_is_valid_and_a_65_character_id_is_not(client):
    """GIVEN ids of 64 and 65 safe characters WHEN read without credentials THEN 401 and 400."""
    assert_error(client.get("/machines/" + "a" * 64), 401)
    assert_error(client.get("/machines/" + "a" * 65), 400, "invalid_machine_id")


# --- 404 and 405 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("POST", "/nope"), ("GET", "/index.html"), ("GET", "/machines/cab001/qr")],
)
def test_an_unknown_route_is_a_404(client, method, path):
    """GIVEN a path the API does not serve WHEN called THEN 404 not_found as JSON."""
    assert_error(client.open(path, method=method), 404, "not_found")


def test_an_unknown_machine_is_a_404(client, stripe_standin):
    """GIVEN no machine ghost01 WHEN the operator reads it or asks its link or QR THEN 404."""
    state = client.get("/machines/ghost01", headers=ADMIN)
    link = client.post("/create-payment-link", json={"machine_id": "ghost01"}, headers=ADMIN)
    image = client.get("/machines/ghost01/qr.png")

    for answer in (state, link, image):
        body = assert_error(answer, 404, "unknown_machine")
        assert "ghost01" in body["error"]
    assert stripe_standin.requests == []


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/webhook", "POST"),
        ("GET", "/addCredit", "POST"),
        ("GET", "/gameover", "POST"),
        ("GET", "/create-payment-link", "POST"),
        ("DELETE", "/machines/cab001", "GET"),
        ("POST", "/status", "GET"),
    ],
)
def test_a_wrong_method_is_a_405(client, method, path, allowed):
    """GIVEN a route called with a method it does not take THEN 405 method_not_allowed as JSON."""
    assert_error(client.open(path, method=method), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("GET", "/webhook", "POST"), ("GET", "/gameover", "POST"), ("POST", "/status", "GET")],
)
def test_a_405_names_the_allowed_methods(client, method, path, allowed):
    """GIVEN a route called with a method it does not take THEN the 405 carries Allow (RFC 9110)."""
    answer = client.open(path, method=method)

    assert answer.status_code == 405
    assert allowed in answer.headers.get("Allow", "")


# --- 413 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/webhook", "/create-payment-link"])
def test_a_body_over_256_kib_is_a_413(client, cabinet, stripe_standin, subscribe, path):
    """GIVEN a body one byte over 256 KiB WHEN posted THEN 413 body_too_large, nothing done."""
    subscriber = subscribe()
    body = b'{"machine_id": "cab001", "pad": "' + b"x" * MAX_BODY + b'"}'
    headers = {**cabinet.auth, "Content-Type": "application/json", "Stripe-Signature": "t=1,v1=0"}

    answer = client.post(path, data=body, headers=headers)

    assert_error(answer, 413, "body_too_large")
    assert stripe_standin.requests == []
    assert subscriber.settle(0.05) == []


def test_a_signed_event_of_exactly_256_kib_is_accepted(client):
    """GIVEN a signed event padded to exactly 256 KiB WHEN delivered THEN it is read (200)."""
    payload = event("customer.created", {"id": "cus_1", "object": "customer", "pad": ""})
    size = len(json.dumps(payload).encode())
    payload["data"]["object"]["pad"] = "x" * (MAX_BODY - size)
    body = json.dumps(payload).encode()
    assert len(body) == MAX_BODY

    answer = signed_post(client, body)

    assert answer.status_code == 200
    assert answer.json["result"] == "ignored"


# --- 502: Stripe failed ----------------------------------------------------------------------


def test_stripe_failing_every_retry_is_a_502_without_stripes_words(
    client, cabinet, stripe_standin, broker, log_lines, fast_stripe_retries
):
    """GIVEN Stripe answering 500 to each try WHEN a link is asked THEN 502 in our own words."""
    stripe_standin.fail_next(500, count=3, message="standin internal detail zq7")

    answer = client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth
    )

    body = assert_error(answer, 502, "stripe_error")
    assert len(stripe_standin.requests) == 3  # the first try and max_network_retries=2
    assert stripe_standin.payment_links == []
    lines = log_lines()
    assert any('"stripe_call_failed"' in line for line in lines)
    secrets = [stripe_standin.api_key, WEBHOOK_SECRET, broker.password, cabinet.token, ADMIN_KEY]
    assert_no_leak([json.dumps(body), *lines], secrets, ("standin internal detail", "stripe.com"))


def test_stripe_refusing_an_unknown_price_is_a_502(
    client, register, stripe_standin, broker, log_lines
):
    """GIVEN a machine whose price Stripe does not know WHEN its link is asked THEN 502."""
    cabinet = register("cab002", price_id="price_gone")

    answer = client.post(
        "/create-payment-link", json={"machine_id": "cab002"}, headers=cabinet.auth
    )

    body = assert_error(answer, 502, "stripe_error")
    assert stripe_standin.payment_links == []
    secrets = [stripe_standin.api_key, WEBHOOK_SECRET, broker.password, cabinet.token, ADMIN_KEY]
    assert_no_leak([json.dumps(body), *log_lines()], secrets, ("No such price", "resource_missing"))


def test_stripe_refusing_the_api_key_is_a_502_that_never_shows_the_key(
    make_app, register, stripe_standin, log_lines
):
    """GIVEN a wrong STRIPE_API_KEY WHEN a link is asked THEN 502 naming it, never the key."""
    wrong_key = "sk_test_wrong_key_0123456789abcdef"
    cabinet = register("cab001")
    client = make_app(STRIPE_API_KEY=wrong_key).test_client()

    answer = client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth
    )

    body = assert_error(answer, 502, "stripe_error")
    assert "STRIPE_API_KEY" in body["error"]
    assert_no_leak(
        [json.dumps(body), *log_lines()],
        [wrong_key, wrong_key[-12:], cabinet.token, ADMIN_KEY],
        ("Invalid API Key",),
    )


# --- 503: a setting is missing ---------------------------------------------------------------


def test_without_a_stripe_api_key_payment_links_answer_503_naming_it(
    make_app, register, stripe_standin
):
    """GIVEN STRIPE_API_KEY unset WHEN a link is asked THEN 503 naming STRIPE_API_KEY."""
    cabinet = register("cab001")
    client = make_app(STRIPE_API_KEY="").test_client()

    answer = client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth
    )

    body = assert_error(answer, 503)
    assert "STRIPE_API_KEY" in body["error"]
    assert stripe_standin.requests == []


def test_without_a_webhook_secret_the_webhook_answers_503_naming_it(make_app):
    """GIVEN STRIPE_WEBHOOK_SECRET unset WHEN an event arrives THEN 503 naming the setting."""
    client = make_app(STRIPE_WEBHOOK_SECRET="").test_client()

    answer = signed_post(client, event("customer.created", {"id": "cus_1"}))

    body = assert_error(answer, 503)
    assert "STRIPE_WEBHOOK_SECRET" in body["error"]


def test_without_broker_settings_a_paid_webhook_answers_503_and_keeps_the_grant(
    make_app, client, cabinet, stripe_standin, log_lines, broker
):
    """GIVEN EMQX_BROKER_URL unset WHEN a paid session arrives THEN 503 naming it, grant kept."""
    session = paid_session_for(client, cabinet, "cs_test_no_broker")
    no_broker = make_app(EMQX_BROKER_URL="").test_client()

    answer = signed_post(no_broker, event("checkout.session.completed", session))

    body = assert_error(answer, 503)
    assert "EMQX_BROKER_URL" in body["error"]
    [payment] = client.get("/machines/cab001", headers=cabinet.auth).json["payments"]
    assert payment["id"] == "cs_test_no_broker"
    assert payment["status"] == "pending_delivery"
    secrets = [stripe_standin.api_key, WEBHOOK_SECRET, broker.password, cabinet.token, ADMIN_KEY]
    assert_no_leak([json.dumps(body), *log_lines()], secrets)


def test_a_wrong_broker_password_is_a_503_that_never_shows_the_password(
    make_app, client, cabinet, stripe_standin, broker, log_lines
):
    """GIVEN a wrong MQTT_PASSWORD WHEN a paid session arrives THEN 503, the password unseen."""
    session = paid_session_for(client, cabinet, "cs_test_bad_password")
    wrong_password = "wrong-mqtt-password-5u9k"
    refused = make_app(MQTT_PASSWORD=wrong_password).test_client()

    answer = signed_post(refused, event("checkout.session.completed", session))

    body = assert_error(answer, 503)
    assert "MQTT_PASSWORD" in body["error"] or "broker" in body["error"]
    secrets = [wrong_password, broker.password, stripe_standin.api_key, WEBHOOK_SECRET, ADMIN_KEY]
    assert_no_leak([json.dumps(body), *log_lines()], secrets)


# --- nothing leaks -----------------------------------------------------------------------------


def test_no_error_body_or_log_line_holds_a_trace_or_a_secret(
    client, cabinet, stripe_standin, broker, log_lines
):
    """GIVEN a tour of failures WHEN each is answered THEN no body or log line leaks anything."""
    stripe_standin.fail_next(500, message="standin internal detail zq7", should_retry=False)
    answers = [
        client.post("/create-payment-link", data=b"{", headers=cabinet.auth),
        client.post("/create-payment-link", json={"machine_id": "a/b"}, headers=cabinet.auth),
        client.post("/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth),
        client.post("/create-payment-link", json={"machine_id": "cab001"}),
        client.get("/machines/cab001", headers={"Authorization": "Bearer mt_wrong"}),
        client.get("/machines/cab001", headers={"Authorization": f"Basic {cabinet.token}"}),
        client.get("/machines/ghost01", headers=cabinet.auth),
        client.get("/webhook"),
        client.post("/webhook", data=b'{"type": "x"}', headers={"Stripe-Signature": "t=1,v1=ab"}),
        client.post("/webhook", data=b'{"type": "x"}'),
        signed_post(client, b"not json at all"),
        signed_post(client, event("customer.created", {"id": "cus_1"}), secret="whsec_other"),
        client.post("/webhook", data=b"x" * (MAX_BODY + 1)),
        client.get("/machines/cab001/qr.gif"),
    ]

    bodies = [answer.get_data(as_text=True) for answer in answers]
    for answer in answers:
        assert answer.status_code >= 400
        assert_error(answer, answer.status_code)
    secrets = [stripe_standin.api_key, WEBHOOK_SECRET, broker.password, cabinet.token, ADMIN_KEY]
    assert_no_leak(
        [*bodies, *log_lines()],
        secrets,
        ("standin internal detail", "No signatures found", "Unable to extract", "Expecting value"),
    )


# --- anonymous input that must never be a 500 ----------------------------------------------------
JSON_ROUTES = [
    "/create-payment-link",
    "/gameover",
    "/machines/cab001/credits/ack",
    "/machines/cab001/heartbeat",
]


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_json_nested_deeper_than_32_levels_is_a_400_before_anything_else(client, path):
    body = "[" * 5000 + "]" * 5000

    answer = client.post(path, data=body, headers={"Content-Type": "application/json"})

    assert (answer.status_code, answer.json["code"]) == (400, "invalid_json")


def test_json_nested_32_levels_deep_is_read(client, cabinet):
    body = {"machine_id": "cab001", "extra": json.loads("[" * 30 + "]" * 30)}

    answer = client.post("/gameover", json=body, headers=cabinet.auth)

    assert answer.status_code in (200, 503)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/machines/cab001"),
        ("POST", "/gameover"),
        ("POST", "/machines/cab001/heartbeat"),
        ("GET", "/machines"),
    ],
)
def test_a_non_ascii_bearer_token_is_a_401(client, cabinet, method, path):
    headers = {"Authorization": "Bearer t\u00e9st-\u00ff", "Content-Type": "application/json"}
    body = json.dumps({"machine_id": "cab001", "mqtt_connected": True})

    answer = client.open(path, method=method, data=body, headers=headers)

    assert answer.status_code == 401


def test_refused_tokens_and_signatures_are_logged_without_the_secret_and_a_flood_is_capped(
    client, cabinet, caplog
):
    """GIVEN 450 refused tokens and signatures WHEN logged THEN each kind gets warning lines
    without the credential, at most 20 a minute, not 450."""
    from arcade.logs import REFUSALS

    REFUSALS._window.clear()
    caplog.set_level(logging.INFO)
    for n in range(300):
        client.get("/machines/cab001", headers={"Authorization": f"Bearer guess-{n}"})
    for _ in range(150):
        client.post("/webhook", data=b"{}", headers={"Stripe-Signature": "t=1,v1=00"})

    refusals = [r for r in caplog.records if r.getMessage() == "credentials_refused"]
    signatures = [r for r in caplog.records if r.getMessage() == "signature_refused"]
    assert len(refusals) == 20 and len(signatures) == 20
    assert all(r.levelname == "WARNING" for r in refusals + signatures)
    assert not any("guess-" in json.dumps(r.fields) for r in refusals)
    assert refusals[0].fields["code"] == "invalid_credentials"


@pytest.mark.parametrize("header", ["t=1,v1=\u00e9", "t=NOW,v1=\u00e9\u00e9", "v1=\u00ff"])
def test_a_non_ascii_stripe_signature_is_a_400(client, header, caplog):
    header = header.replace("NOW", str(int(time.time())))
    answer = client.post("/webhook", data=b'{"type": "x"}', headers={"Stripe-Signature": header})

    assert (answer.status_code, answer.json["code"]) == (400, "invalid_signature")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
