"""Whatever a caller sends, every route answers a 4xx or the right answer: never a 500, never an
ERROR line (SPEC "HTTP"). Hypothesis throws random methods, headers, bodies and bytes at every
route of the real app (a real broker and the Stripe stand-in behind it)."""

from __future__ import annotations

import json
import logging
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

PATHS = [
    "/status",
    "/pulse-key",
    "/create-payment-link",
    "/webhook",
    "/addCredit",
    "/gameover",
    "/machines",
    "/machines/cab001",
    "/machines/cab001/qr.png",
    "/machines/cab001/qr.svg",
    "/machines/cab001/credits/ack",
    "/machines/cab001/heartbeat",
    "/machines/%ff%fe",
    "/machines/a%2Fb/heartbeat",
    "/",
    "/payments",
    "/payments/cs_1",
    "/payments/cs_1/resend",
    "/payments/cs_1/refund",
    "/payments/%ff/refund",
    "/machines/cab001/credits",
    "/reports/revenue",
    "/status/ready",
    "/play/cab001",
    "/play/cab001/qr.png",
    "/play/%ff",
    "/plans/default",
    "/plans/default/changes",
    "/machines/cab001/plan",
    "/machines/cab001/changes",
    "/admin/",
    "/admin/login",
    "/admin/logout",
    "/admin/payments",
    "/admin/revenue",
    "/admin/credits",
    "/admin/machines/cab001",
    "/admin/payments/cs_1/refund",
]
QUERY_KEYS = st.sampled_from(
    ["status", "machine_id", "since", "until", "limit", "cursor", "group", "tz", "days", "next"]
)
HEADER_NAMES = st.sampled_from(
    [
        "Authorization",
        "Content-Type",
        "Stripe-Signature",
        "Idempotency-Key",
        "If-None-Match",
        "Content-Encoding",
        "X-Forwarded-For",
        "Origin",
    ]
)
TEXT = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0xFF), max_size=80)
# What HTTP can carry in a header value: no line breaks.
HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=1, max_codepoint=0xFF, exclude_characters="\r\n"),
    max_size=80,
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
KNOWN_KEYS = st.fixed_dictionaries(
    {},
    optional={
        "machine_id": st.one_of(st.just("cab001"), TEXT, JSONISH),
        "quantity": JSONISH,
        "price_id": JSONISH,
        "payment_id": JSONISH,
        "mqtt_connected": JSONISH,
        "credits_left": JSONISH,
        "name": JSONISH,
        "credits_per_unit": JSONISH,
        "credits": JSONISH,
        "reason": JSONISH,
        "amount": JSONISH,
        "bundles": JSONISH,
        "bonuses": JSONISH,
        "happy_hours": JSONISH,
        "credits_per_game": JSONISH,
        "timezone": JSONISH,
    },
)
BODIES = st.one_of(
    st.binary(max_size=300),
    KNOWN_KEYS.map(lambda d: json.dumps(d, allow_nan=True).encode()),
    st.integers(1, 2000).map(lambda n: b"[" * n + b"]" * n),
)


FORM_FIELDS = st.dictionaries(
    st.sampled_from(
        ["key", "amount", "credits", "reason", "machine_id", "next", "idempotency_key"]
        + ["plan", "credits_per_game", "timezone"]
    ),
    TEXT,
    max_size=5,
)


@pytest.fixture(scope="module")
def fuzz_app(broker, tmp_path_factory):
    from arcade import create_app
    from arcade.config import Settings
    from tests.support.app import DEFAULT_PRICE, app_environment
    from tests.support.stripe_standin import StripeStandIn

    with StripeStandIn() as standin:
        standin.add_price(DEFAULT_PRICE, 50)
        env = app_environment(broker, standin, tmp_path_factory.mktemp("fuzz") / "arcade.db")
        app = create_app(Settings.from_env(env))
        app.config["TESTING"] = True
        _, token = app.extensions["arcade"].registry.register("cab001")
        yield app, token
        app.extensions["arcade"].publisher.close()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    path=st.sampled_from(PATHS),
    headers=st.lists(st.tuples(HEADER_NAMES, HEADER_TEXT), max_size=4),
    body=BODIES,
    query=st.lists(st.tuples(QUERY_KEYS, TEXT), max_size=3),
    credentials=st.sampled_from(["none", "machine", "admin"]),
)
# The player's page of a machine id that cannot be one: its HTML 400 page, every run.
@example(method="GET", path="/play/%ff", headers=[], body=b"", query=[], credentials="none")
def test_no_input_makes_a_500_or_an_error_line(
    fuzz_app, caplog, method, path, headers, body, query, credentials
):
    from tests.support.app import ADMIN_KEY

    app, token = fuzz_app
    sent = dict(headers)
    if credentials != "none":
        sent["Authorization"] = f"Bearer {token if credentials == 'machine' else ADMIN_KEY}"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        answer = app.test_client().open(
            path, method=method, headers=sent, data=body, query_string=query
        )

    assert answer.status_code < 500 or answer.status_code in (502, 503), (
        answer.status_code,
        answer.get_data()[:200],
    )
    # The /admin pages and the player's page answer people, in HTML; the API answers JSON.
    player_page = method == "GET" and re.fullmatch(r"/play/[^/]+", path) is not None
    if answer.status_code != 204 and method != "HEAD" and answer.status_code >= 400:
        if player_page:
            assert answer.mimetype == "text/html", answer.get_data()[:200]
        elif not path.startswith("/admin"):
            assert answer.is_json, answer.get_data()[:200]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


SESSION_FIELDS = st.fixed_dictionaries(
    {"id": st.one_of(st.just("cs_fuzz"), JSONISH)},
    optional={
        "object": st.just("checkout.session"),
        "payment_status": st.one_of(
            st.sampled_from(["paid", "unpaid", "no_payment_required"]), JSONISH
        ),
        "mode": st.one_of(st.sampled_from(["payment", "subscription", "setup"]), JSONISH),
        "amount_total": JSONISH,
        "amount_subtotal": JSONISH,
        "currency": JSONISH,
        "created": JSONISH,
        "payment_intent": JSONISH,
        "payment_link": JSONISH,
        "client_reference_id": JSONISH,
        "metadata": JSONISH,
        "total_details": JSONISH,
        "amount_refunded": JSONISH,
        "refunded": JSONISH,
    },
)
EVENT_TYPES = st.sampled_from(
    [
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "charge.refunded",
        "charge.dispute.created",
        "customer.created",
    ]
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    event_type=EVENT_TYPES,
    data_object=SESSION_FIELDS,
    extra=st.dictionaries(st.sampled_from(["livemode", "account", "data"]), JSONISH, max_size=2),
)
def test_no_signed_event_makes_a_500_or_an_error_line(
    fuzz_app, caplog, event_type, data_object, extra
):
    """Even with a valid signature, an event Stripe would never send is a 4xx or an answer."""
    from tests.support.app import WEBHOOK_SECRET
    from tests.support.stripe_standin import event, sign_payload

    app, _ = fuzz_app
    body = json.dumps(event(event_type, data_object) | extra, allow_nan=True).encode()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        answer = app.test_client().post(
            "/webhook",
            data=body,
            headers={"Stripe-Signature": sign_payload(body, WEBHOOK_SECRET)},
        )

    assert answer.status_code < 500 or answer.status_code in (502, 503), answer.get_data()[:300]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(
        [
            "/admin/login",
            "/admin/credits",
            "/admin/payments/cs_1/refund",
            "/admin/payments/cs_1/resend",
            "/admin/payments/%ff/resend",
            "/admin/machines/cab001/rotate-token",
            "/admin/machines/%ff/rotate-token",
            "/admin/plans",
            "/admin/machines/cab001/plan",
            "/admin/machines/cab001/settings",
            "/admin/machines/cab999/settings",
        ]
    ),
    form=FORM_FIELDS,
    query=st.lists(st.tuples(QUERY_KEYS, TEXT), max_size=2),
)
def test_no_form_a_logged_in_operator_sends_makes_a_500(fuzz_app, caplog, path, form, query):
    """Forms with a valid CSRF token and anything in their fields: a page with a sentence or a
    redirect, never a 500, never a redirect off these pages."""
    from tests.support.admin import csrf_of, login

    app, _ = fuzz_app
    client = app.test_client()
    login(client)
    csrf = csrf_of(client.get("/admin/payments").data)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        answer = client.post(path, data={**form, "csrf_token": csrf}, query_string=query)

    assert answer.status_code < 500 or answer.status_code == 503, answer.get_data()[:300]
    if answer.status_code in (301, 302, 303):
        assert answer.headers["Location"].startswith("/admin"), answer.headers["Location"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
