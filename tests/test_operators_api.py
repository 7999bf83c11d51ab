"""The operator's JSON API, through `python app.py` over real HTTP, on SQLite and DynamoDB.

Payments arrive as Stripe would send them (signed webhooks); what the operator reads is what the
API answers, and what a resend or a manual grant does is what a real subscriber receives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from arcade import wire
from tests.support.api_process import ApiProcess, flask_command
from tests.support.app import (
    ADMIN_KEY,
    AWS_TEST_ENV,
    DEFAULT_PRICE,
    TOPIC_PREFIX,
    WEBHOOK_SECRET,
    app_environment,
)
from tests.support.stripe_standin import charge, checkout_session

# paho leaves the socket of a connection to a stopped or refusing broker to the collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
FAST = {"MQTT_PUBACK_TIMEOUT": "0.5", "DELIVERY_RETRY_SECONDS": "1"}


@pytest.fixture(params=["sqlite", "dynamodb"])
def env(request, fresh_broker, stripe_standin, tmp_path) -> dict[str, str]:
    """Settings of an API on a fresh store of each back end (DynamoDB: moto over HTTP)."""
    settings = app_environment(fresh_broker, stripe_standin, tmp_path / "arcade.db", **FAST)
    if request.param == "dynamodb":
        table = request.getfixturevalue("dynamodb_table")
        settings |= {
            **AWS_TEST_ENV,
            "DATABASE_URL": f"dynamodb://{table}",
            "AWS_ENDPOINT_URL": request.getfixturevalue("moto_endpoint"),
        }
        made = flask_command(settings, "store", "init")
        assert made.returncode == 0, made.stderr
    return settings


@pytest.fixture
def api(env, tmp_path) -> Iterator[ApiProcess]:
    process = ApiProcess(env, tmp_path / "api.log").start()
    yield process
    process.close()


@pytest.fixture
def add_machine(env) -> Callable[[str], str]:
    """Register a machine with the real CLI (`--token-only`) and return its token."""

    def add(machine_id: str) -> str:
        added = flask_command(env, "machines", "add", machine_id, "--token-only")
        assert added.returncode == 0, added.stderr
        return added.stdout.strip()

    return add


def call(api: ApiProcess, method: str, path: str, body: Any = None, **headers: str):
    data = None if body is None else json.dumps(body).encode()
    return api.request(method, path, data, {**ADMIN, **headers})


def link_of(api: ApiProcess, machine_id: str, token: str) -> str:
    return api.payment_link(machine_id, token)["payment_link_id"]


def pay(
    api: ApiProcess, session_id: str, link_id: str | None, *, standin: Any = None, **session: Any
):
    """Deliver a paid checkout.session.completed for one of our links (50 cents a credit);
    with ``standin``, Stripe's stand-in knows the session too (so it can be refunded)."""
    session.setdefault("amount_subtotal", 50)
    made = checkout_session(
        id=session_id, payment_link=link_id, payment_intent=f"pi_{session_id}", **session
    )
    if standin is not None:
        standin.add_session(made, [(DEFAULT_PRICE, session["amount_subtotal"] // 50)])
    return api.webhook("checkout.session.completed", made, WEBHOOK_SECRET)


def refund_event(api: ApiProcess, session_id: str, amount: int, refunded: int):
    return api.webhook(
        "charge.refunded",
        charge(payment_intent=f"pi_{session_id}", amount=amount, amount_refunded=refunded),
        WEBHOOK_SECRET,
    )


def ids(answer: dict[str, Any]) -> list[str]:
    return [p["id"] for p in answer["payments"]]


def unix(days_ago: float) -> int:
    return int((datetime.now(UTC) - timedelta(days=days_ago)).timestamp())


def test_payments_lists_every_payment_across_machines_with_filters_and_pages(api, add_machine):
    """GIVEN payments on two machines, one for no machine, one from a removed machine WHEN the
    operator lists them THEN every one is there newest first, with its machine and reason, and
    the filters and cursor pages agree."""
    one, two = add_machine("cab001"), add_machine("cab002")
    link1, link2 = link_of(api, "cab001", one), link_of(api, "cab002", two)
    assert pay(api, "cs_old", link1, amount_subtotal=100, created=unix(3))[0] == 200
    assert pay(api, "cs_two", link2, created=unix(2))[0] == 200
    assert pay(api, "cs_nobody", None, client_reference_id="ghost", created=unix(1))[0] == 200
    assert pay(api, "cs_new", link1, created=unix(0))[0] == 200
    assert flask_command(api.env, "machines", "remove", "cab002").returncode == 0

    status, listed = call(api, "GET", "/payments")

    assert status == 200, listed
    assert ids(listed) == ["cs_new", "cs_nobody", "cs_two", "cs_old"]
    assert listed["next_cursor"] is None
    by_id = {p["id"]: p for p in listed["payments"]}
    assert (
        by_id["cs_old"] | {"machine_id": "cab001", "credits": 2, "amount": 100} == by_id["cs_old"]
    )
    assert by_id["cs_old"]["status"] == "delivered" and by_id["cs_old"]["reason"] is None
    assert by_id["cs_nobody"]["machine_id"] is None
    assert by_id["cs_nobody"]["status"] == "unattributed"
    assert "ghost" in by_id["cs_nobody"]["reason"]
    # The removed machine's money can still be read.
    assert ids(call(api, "GET", "/payments?machine_id=cab002")[1]) == ["cs_two"]
    assert ids(call(api, "GET", "/payments?status=unattributed")[1]) == ["cs_nobody"]
    assert ids(call(api, "GET", "/payments?machine_id=cab001&status=delivered")[1]) == [
        "cs_new",
        "cs_old",
    ]
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    window = urlencode({"since": two_days_ago, "until": yesterday})
    assert ids(call(api, "GET", f"/payments?{window}")[1]) == ["cs_nobody", "cs_two"]

    pages: list[str] = []
    cursor = ""
    for _ in range(5):
        page = call(api, "GET", f"/payments?limit=1&cursor={cursor}")[1]
        pages += ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == ["cs_new", "cs_nobody", "cs_two", "cs_old"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("status=lost", "invalid_status"),
        ("machine_id=a/b", "invalid_machine_id"),
        ("since=yesterday", "invalid_since"),
        ("until=2026-13-45", "invalid_until"),
        ("limit=0", "invalid_limit"),
        ("limit=ten", "invalid_limit"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("cursor=" + "W" * 40, "invalid_cursor"),
        ("limit=%C2%B2", "invalid_limit"),  # "²": a digit to str.isdigit, not to int()
        ("since=0001-01-01T00:00:00%2B14:00", "invalid_since"),
    ],
)
def test_payments_refuses_bad_filters_in_plain_words(client, query, code):
    """GIVEN a malformed filter WHEN the payments are listed THEN 400 names the parameter."""
    answer = client.get(f"/payments?{query}", headers=ADMIN)

    assert answer.status_code == 400
    assert answer.json["code"] == code and answer.json["error"]


def test_admin_routes_need_the_admin_key_and_say_when_admin_is_off(make_app, cabinet):
    """GIVEN no key, a machine's token, or admin off WHEN an operator route is called THEN
    401, 401 and 503 admin_off naming ADMIN_API_KEY."""
    routes = [
        ("GET", "/payments"),
        ("GET", "/payments/cs_1"),
        ("GET", "/reports/revenue"),
        ("GET", "/status/ready"),
        ("POST", "/payments/cs_1/resend"),
        ("POST", "/payments/cs_1/refund"),
        ("POST", "/machines/cab001/credits"),
    ]
    on = make_app().test_client()
    off = make_app(ADMIN_API_KEY="").test_client()
    for method, path in routes:
        assert on.open(path, method=method).status_code == 401, path
        wrong = on.open(path, method=method, headers=cabinet.auth, json={})
        assert wrong.status_code == 401, path
        refused = off.open(path, method=method, headers=ADMIN, json={})
        assert refused.status_code == 503, path
        assert refused.json["code"] == "admin_off" and "ADMIN_API_KEY" in refused.json["error"]


def test_unconfirmed_lists_delivered_payments_the_cabinet_never_confirmed(app, client, open_shop):
    """GIVEN two delivered grants, one confirmed, and the other delivered longer ago than
    CONFIRM_WITHIN_SECONDS WHEN status=unconfirmed is listed THEN only the other is there."""
    from dataclasses import replace

    from arcade.clock import utc_now

    shop = open_shop(app)
    assert shop.pay("cs_fired").status_code == 200
    assert shop.pay("cs_silent").status_code == 200
    acked = client.post(
        "/machines/cab001/credits/ack", json={"payment_id": "cs_fired"}, headers=shop.auth
    )
    assert acked.status_code == 200
    store = app.extensions["arcade"].store
    for payment_id in ("cs_fired", "cs_silent"):
        payment = store.get_payment(payment_id)
        long_ago = utc_now() - timedelta(seconds=301)
        assert store.commit_payment(replace(payment, delivered_at=long_ago))

    listed = client.get("/payments?status=unconfirmed", headers=ADMIN).json

    assert ids(listed) == ["cs_silent"]
    assert listed["payments"][0]["unconfirmed"] is True


def test_every_instant_leaves_as_the_text_iso_writes_on_either_store(build, open_shop):
    """GIVEN a payment, its delivery and confirmation, a heartbeat, a play session, a refund
    kept for an unknown PaymentIntent, a plan version and a recorded change, each at a known
    instant (microseconds and midnight included) WHEN the operator's answers, the machine's
    state and `flask machines list` show them THEN each instant is the text `arcade.clock.iso`
    writes, as before records held datetimes, and a page's cursor holds that text too."""
    import base64
    from dataclasses import replace

    from arcade.pricing import Bundle, Plan
    from arcade.store.base import ChangeRecord, IntentRecord, Machine, PlanVersion
    from tests.support.app import signed_post
    from tests.support.stripe_standin import event

    app = build()
    shop = open_shop(app)
    store = app.extensions["arcade"].store
    created = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    for session_id, at in (("cs_text", created), ("cs_later", created + timedelta(minutes=1))):
        session = checkout_session(
            id=session_id,
            payment_link=shop.link_id,
            amount_subtotal=50,
            payment_intent=f"pi_{session_id}",
            created=int(at.timestamp()),
        )
        sent = event("checkout.session.completed", session)
        assert signed_post(shop.client, sent).status_code == 200
    delivered = datetime(2026, 11, 22, 10, 0, 1, 123456, tzinfo=UTC)
    payment = store.get_payment("cs_text")
    assert store.commit_payment(
        replace(
            payment,
            status="credited",
            delivered_at=delivered,
            credited_at=delivered + timedelta(microseconds=1),
        )
    )
    midnight = datetime(2026, 11, 23, tzinfo=UTC)
    store.update_machine(
        "cab001",
        last_seen=midnight - timedelta(microseconds=1),
        mqtt_connected=1,
        credits_reported=0,
    )
    state = store.get_machine_state("cab001")
    assert store.update_machine_state(state.with_changes(session_started_at=midnight))
    kept = IntentRecord("pi_ghost", amount_refunded=50, updated_at=midnight)
    assert store.commit_payment(None, intent=kept)
    store.add_machine(Machine("cab009", "hash", created_at=midnight))
    plan = Plan((Bundle("1 game", DEFAULT_PRICE, 1, 50, "usd"),)).to_json()
    assert store.put_plan_version(PlanVersion("*", 1, delivered, "cli", plan))
    store.record_change(ChangeRecord("c1", "*", delivered, "cli", "{}"))
    client = shop.client

    shown = client.get("/payments/cs_text", headers=ADMIN).json
    listed = client.get("/payments?limit=1", headers=ADMIN).json
    machine = client.get("/machines/cab001", headers=shop.auth).json
    refunds = client.get("/refunds/unmatched", headers=ADMIN).json["refunds"]
    report = client.get("/reports/revenue?since=2026-11-22&tz=Europe/Paris", headers=ADMIN).json
    default_plan = client.get("/plans/default", headers=ADMIN).json
    changes = client.get("/plans/default/changes", headers=ADMIN).json["changes"]
    machines = app.test_cli_runner().invoke(args=["machines", "list"])

    assert (shown["created_at"], shown["delivered_at"], shown["credited_at"]) == (
        "2026-11-22T10:00:00.000000Z",
        "2026-11-22T10:00:01.123456Z",
        "2026-11-22T10:00:01.123457Z",
    )
    cursor = listed["next_cursor"]
    assert base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)) == (
        b'["2026-11-22T10:01:00.000000Z","cs_later"]'
    )
    assert client.get(f"/payments?cursor={cursor}", headers=ADMIN).json["payments"][0] == shown
    assert machine["last_seen"] == "2026-11-22T23:59:59.999999Z"
    assert machine["session"]["started_at"] == "2026-11-23T00:00:00.000000Z"
    assert [p["created_at"] for p in machine["payments"]] == [
        "2026-11-22T10:01:00.000000Z",
        "2026-11-22T10:00:00.000000Z",
    ]
    assert [r["recorded_at"] for r in refunds] == ["2026-11-23T00:00:00.000000Z"]
    assert (report["since"], report["tz"]) == ("2026-11-21T23:00:00.000000Z", "Europe/Paris")
    assert default_plan["current"]["created_at"] == "2026-11-22T10:00:01.123456Z"
    assert [v["created_at"] for v in default_plan["versions"]] == ["2026-11-22T10:00:01.123456Z"]
    assert [c["at"] for c in changes] == ["2026-11-22T10:00:01.123456Z"]
    assert machines.exit_code == 0, machines.output
    listed_machines = [json.loads(line) for line in machines.output.splitlines()]
    assert [m["created_at"] for m in listed_machines if m["machine_id"] == "cab009"] == [
        "2026-11-23T00:00:00.000000Z"
    ]


def test_revenue_by_day_counts_sales_on_their_day_and_refunds_on_theirs(api, add_machine):
    """GIVEN a sale three days ago refunded in part today, and sales on two machines today,
    one in euros WHEN revenue is reported by day and by machine THEN gross, refunded and net
    are per day (refund on today) and currency."""
    one, two = add_machine("cab001"), add_machine("cab002")
    link1, link2 = link_of(api, "cab001", one), link_of(api, "cab002", two)
    assert pay(api, "cs_early", link1, amount_subtotal=150, created=unix(3))[0] == 200
    assert pay(api, "cs_today", link1)[0] == 200
    assert pay(api, "cs_other", link2, amount_subtotal=100)[0] == 200
    assert pay(api, "cs_unpaid", link2, payment_status="unpaid")[0] == 200
    assert refund_event(api, "cs_early", 150, 50)[0] == 200
    today = datetime.now(UTC).date()
    early = (today - timedelta(days=3)).isoformat()

    status, by_day = call(api, "GET", "/reports/revenue?group=day")

    assert status == 200, by_day
    assert by_day["rows"] == [
        {"day": early, "currency": "usd", "gross": 150, "refunded": 0, "net": 150, "payments": 1},
        {
            "day": today.isoformat(),
            "currency": "usd",
            "gross": 150,
            "refunded": 50,
            "net": 100,
            "payments": 2,
        },
    ]
    by_machine = call(api, "GET", "/reports/revenue?group=machine")[1]
    assert by_machine["rows"] == [
        {
            "machine_id": "cab001",
            "currency": "usd",
            "gross": 200,
            "refunded": 50,
            "net": 150,
            "payments": 2,
        },
        {
            "machine_id": "cab002",
            "currency": "usd",
            "gross": 100,
            "refunded": 0,
            "net": 100,
            "payments": 1,
        },
    ]
    only_today = call(api, "GET", f"/reports/revenue?since={today.isoformat()}")[1]
    assert [(r["day"], r["net"]) for r in only_today["rows"]] == [(today.isoformat(), 100)]
    # The sum of the report is what the machines' own counters say.
    machine = api.get_json("/machines/cab001", one)
    assert machine["revenue"] == {"usd": 150}


def test_revenue_days_follow_the_time_zone_asked(client, app, open_shop):
    """GIVEN a sale at 23:30 UTC WHEN reported in Asia/Tokyo THEN it is on the next day."""
    shop = open_shop(app)
    late = datetime.now(UTC).replace(hour=23, minute=30, second=0, microsecond=0) - timedelta(
        days=2
    )
    event = shop.paid_event("cs_late")
    event["data"]["object"]["created"] = int(late.timestamp())
    from tests.support.app import signed_post

    assert signed_post(client, event).status_code == 200

    utc = client.get("/reports/revenue", headers=ADMIN).json["rows"]
    tokyo = client.get("/reports/revenue?tz=Asia/Tokyo", headers=ADMIN).json["rows"]

    assert [r["day"] for r in utc] == [late.date().isoformat()]
    assert [r["day"] for r in tokyo] == [(late.date() + timedelta(days=1)).isoformat()]
    bad = client.get("/reports/revenue?tz=Mars/Olympus", headers=ADMIN)
    assert bad.status_code == 400 and bad.json["code"] == "invalid_tz"
    bad = client.get("/reports/revenue?group=week", headers=ADMIN)
    assert bad.status_code == 400 and bad.json["code"] == "invalid_group"
    bad = client.get("/reports/revenue?since=2026-11-20&until=2026-11-01", headers=ADMIN)
    assert bad.status_code == 400
    edge = client.get("/reports/revenue?since=0001-01-01&tz=Pacific/Kiritimati", headers=ADMIN)
    assert edge.status_code == 400 and edge.json["code"] == "invalid_since"
    old = client.get("/reports/revenue?since=1900-01-01", headers=ADMIN)
    assert old.status_code == 400 and old.json["error"] == "since must be between 1970 and 9998"
    far = client.get("/reports/revenue?since=2020-01-01&until=2026-01-01", headers=ADMIN)
    assert far.status_code == 400 and "400 days" in far.json["error"]


def test_resend_delivers_a_stuck_grant_and_repeats_a_delivered_one(
    api, add_machine, fresh_broker, subscribe
):
    """GIVEN a grant left pending while the broker was down WHEN the operator resends it
    (before the relay's pause ends) THEN the cabinet gets it, same paymentId, delivered; a
    resend of a delivered grant publishes the same signed pulse again."""
    token = add_machine("cab001")
    link = link_of(api, "cab001", token)
    fresh_broker.stop()
    assert pay(api, "cs_stuck", link)[0] == 503
    fresh_broker.start()
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse", on=fresh_broker)
    stuck = call(api, "GET", "/payments/cs_stuck")[1]
    assert stuck["status"] == "pending_delivery"

    status, resent = call(api, "POST", "/payments/cs_stuck/resend")

    assert status == 200, resent
    assert resent["status"] == "delivered"
    [first] = subscriber.wait_for(1)
    assert first.payload["paymentId"] == "cs_stuck" and first.payload["credits"] == 1
    again = call(api, "POST", "/payments/cs_stuck/resend")
    assert again[0] == 200 and again[1]["result"] == "resent"
    messages = subscriber.wait_for(2)
    assert messages[1].payload == first.payload
    public_key = api.request("GET", "/pulse-key")[1]["public_key"]
    wire.verify(messages[1].payload, wire.load_public_key(public_key))


def test_resend_refuses_what_is_not_owed(api, add_machine):
    """GIVEN an unattributed payment, a refunded one and an unknown id WHEN resent THEN 409,
    409 and 404, in plain words."""
    token = add_machine("cab001")
    link = link_of(api, "cab001", token)
    assert pay(api, "cs_nobody", None, client_reference_id="ghost")[0] == 200
    assert pay(api, "cs_back", link)[0] == 200
    assert refund_event(api, "cs_back", 50, 50)[0] == 200

    unattributed = call(api, "POST", "/payments/cs_nobody/resend")
    refunded = call(api, "POST", "/payments/cs_back/resend")
    unknown = call(api, "POST", "/payments/cs_never/resend")

    assert unattributed[0] == 409 and unattributed[1]["code"] == "not_resendable"
    assert refunded[0] == 409 and "refunded" in refunded[1]["error"]
    assert unknown[0] == 404 and unknown[1]["code"] == "unknown_payment"


def test_refund_asks_stripe_once_and_the_status_follows_stripes_event(
    api, add_machine, stripe_standin
):
    """GIVEN a delivered payment WHEN the operator refunds 30 of 100, twice (a retried
    request) THEN Stripe refunds once, with the documented idempotency key; the status moves
    when charge.refunded arrives."""
    token = add_machine("cab001")
    link = link_of(api, "cab001", token)
    assert pay(api, "cs_ref", link, amount_subtotal=100, standin=stripe_standin)[0] == 200

    first = call(api, "POST", "/payments/cs_ref/refund", {"amount": 30})
    second = call(api, "POST", "/payments/cs_ref/refund", {"amount": 30})

    assert first[0] == 200, first
    assert first[1]["refund_id"] == second[1]["refund_id"]
    assert first[1]["status"] == "delivered"
    [made] = stripe_standin.refunds
    assert made["amount"] == 30 and made["payment_intent"] == "pi_cs_ref"
    keys = {r.idempotency_key for r in stripe_standin.requests_to("POST", "/v1/refunds")}
    assert keys == {"refund-cs_ref-0-30"}
    assert refund_event(api, "cs_ref", 100, 30)[0] == 200
    assert call(api, "GET", "/payments/cs_ref")[1]["status"] == "partially_refunded"
    # The rest, with the caller's own key.
    rest = call(api, "POST", "/payments/cs_ref/refund", None, **{"Idempotency-Key": "op-7"})
    assert rest[0] == 200 and rest[1]["amount"] == 70
    assert stripe_standin.requests_to("POST", "/v1/refunds")[-1].idempotency_key == "op-7"


def test_refund_refuses_in_plain_words(api, add_machine, stripe_standin):
    """GIVEN amounts over what is left, a manual grant and an unknown payment WHEN refunded
    THEN 400, 409 and 404 and Stripe is not called; a Stripe failure is a 502."""
    token = add_machine("cab001")
    link = link_of(api, "cab001", token)
    assert pay(api, "cs_small", link, standin=stripe_standin)[0] == 200
    manual = call(api, "POST", "/machines/cab001/credits", {"credits": 1, "reason": "jam"})[1]

    too_much = call(api, "POST", "/payments/cs_small/refund", {"amount": 51})
    not_a_number = call(api, "POST", "/payments/cs_small/refund", {"amount": "all"})
    no_money = call(api, "POST", f"/payments/{manual['id']}/refund")
    unknown = call(api, "POST", "/payments/cs_never/refund")

    assert too_much[0] == 400 and too_much[1]["code"] == "invalid_amount"
    assert "50" in too_much[1]["error"]
    assert not_a_number[0] == 400
    assert no_money[0] == 409 and no_money[1]["code"] == "nothing_to_refund"
    assert unknown[0] == 404
    assert stripe_standin.requests_to("POST", "/v1/refunds") == []
    stripe_standin.fail_next(500, count=5, path="/v1/refunds")
    failed = call(api, "POST", "/payments/cs_small/refund")
    assert failed[0] == 502 and failed[1]["code"] == "stripe_error"


def test_manual_credits_are_signed_delivered_counted_and_granted_once_per_key(
    api, add_machine, fresh_broker, subscribe
):
    """GIVEN a jammed coin mechanism WHEN the operator grants 3 credits with a reason, twice
    with one Idempotency-Key THEN one signed coinpulse of 3 arrives, the machine counts 3 more
    credits and no revenue, and the payment shows the reason."""
    token = add_machine("cab001")
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse", on=fresh_broker)
    body = {"credits": 3, "reason": "coin mech jammed, player lost 2 coins"}

    first = call(api, "POST", "/machines/cab001/credits", body, **{"Idempotency-Key": "jam-1"})
    second = call(api, "POST", "/machines/cab001/credits", body, **{"Idempotency-Key": "jam-1"})

    assert first[0] == 201, first
    granted = first[1]
    assert granted["id"].startswith("manual_") and second[1]["id"] == granted["id"]
    assert granted["status"] == "delivered" and granted["reason"] == body["reason"]
    assert granted["amount"] == 0 and granted["machine_id"] == "cab001"
    [pulse] = subscriber.wait_for(1)
    assert subscriber.settle() == [pulse]
    assert pulse.payload["paymentId"] == granted["id"] and pulse.payload["credits"] == 3
    public_key = api.request("GET", "/pulse-key")[1]["public_key"]
    wire.verify(pulse.payload, wire.load_public_key(public_key))
    machine = api.get_json("/machines/cab001", token)
    assert machine["credits"]["granted"] == 3 and not any(machine["revenue"].values())
    assert ids(call(api, "GET", "/payments?machine_id=cab001")[1]) == [granted["id"]]
    other = call(
        api,
        "POST",
        "/machines/cab001/credits",
        {**body, "credits": 4},
        **{"Idempotency-Key": "jam-1"},
    )
    assert other[0] == 409 and other[1]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"credits": 0, "reason": "x"}, "invalid_credits"),
        ({"credits": 1001, "reason": "x"}, "invalid_credits"),
        ({"credits": True, "reason": "x"}, "invalid_credits"),
        ({"credits": "2", "reason": "x"}, "invalid_credits"),
        ({"credits": 2}, "invalid_reason"),
        ({"credits": 2, "reason": "   "}, "invalid_reason"),
        ({"credits": 2, "reason": "x" * 201}, "invalid_reason"),
    ],
)
def test_manual_credits_refuse_bad_requests(client, cabinet, body, code):
    """GIVEN a bad grant WHEN posted THEN 400 names what is wrong and nothing is granted."""
    answer = client.post("/machines/cab001/credits", json=body, headers=ADMIN)

    assert answer.status_code == 400 and answer.json["code"] == code
    assert client.get("/machines/cab001", headers=ADMIN).json["credits"]["granted"] == 0


def test_manual_credits_for_an_unknown_machine_are_a_404(client):
    answer = client.post(
        "/machines/ghost/credits", json={"credits": 1, "reason": "x"}, headers=ADMIN
    )

    assert answer.status_code == 404 and answer.json["code"] == "unknown_machine"


def test_manual_credits_while_the_broker_is_down_are_kept_and_the_relay_delivers(
    api, add_machine, fresh_broker, subscribe
):
    """GIVEN the broker down WHEN the operator grants credits THEN 201 pending_delivery (a
    retry would grant twice, so it is not an error), and the relay delivers once it is up."""
    add_machine("cab001")
    fresh_broker.stop()

    status, granted = call(api, "POST", "/machines/cab001/credits", {"credits": 2, "reason": "x"})

    assert status == 201, granted
    assert granted["status"] == "pending_delivery" and granted["result"] == "undelivered"
    fresh_broker.start()
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse", on=fresh_broker)
    [pulse] = subscriber.wait_for(1, timeout=30)
    assert pulse.payload["paymentId"] == granted["id"]


def test_ready_checks_broker_store_and_stripe_for_real(api, fresh_broker, subscribe):
    """GIVEN everything up WHEN /status/ready is asked THEN 200 and the probe reached the
    broker; with the broker down THEN 503 naming the broker."""
    probes = subscribe(f"{TOPIC_PREFIX}/_probe", on=fresh_broker)

    status, ready = call(api, "GET", "/status/ready")

    assert status == 200, ready
    assert ready == {
        "ready": True,
        "checks": {"broker": "ok", "store": "ok", "stripe": "ok"},
        "problems": [],
    }
    assert probes.wait_for(1)
    fresh_broker.stop()
    status, down = call(api, "GET", "/status/ready")
    assert status == 503 and down["code"] == "not_ready"
    assert down["checks"]["store"] == "ok" and down["checks"]["broker"] != "ok"
    assert [p.split(":")[0] for p in down["problems"]] == ["broker"]


def test_ready_names_every_missing_or_wrong_setting(make_app, stripe_standin, broker):
    """GIVEN no default price, or a price Stripe does not know, or a wrong broker port WHEN
    /status/ready is asked THEN 503 names each."""
    no_price = make_app(STRIPE_PRICE_ID="").test_client().get("/status/ready", headers=ADMIN)
    wrong_price = (
        make_app(STRIPE_PRICE_ID="price_nope").test_client().get("/status/ready", headers=ADMIN)
    )
    wrong_port = (
        make_app(EMQX_BROKER_URL="mqtts://localhost:1")
        .test_client()
        .get("/status/ready", headers=ADMIN)
    )

    assert no_price.status_code == 503
    assert "STRIPE_PRICE_ID not set" in no_price.json["checks"]["stripe"]
    assert wrong_price.status_code == 503 and "price_nope" in wrong_price.json["checks"]["stripe"]
    assert wrong_port.status_code == 503 and wrong_port.json["checks"]["broker"] != "ok"
    assert wrong_port.json["checks"]["stripe"] == "ok"


def test_ready_asks_stripe_at_most_once_a_minute(client, stripe_standin):
    """GIVEN readiness asked five times WHEN Stripe's calls are counted THEN one."""
    stripe_standin.reset_requests()
    for _ in range(5):
        assert client.get("/status/ready", headers=ADMIN).status_code == 200
    assert len(stripe_standin.requests_to("GET", "/v1/prices/price_default_credit")) == 1


def test_payment_detail_of_an_unknown_or_malformed_id(client):
    assert client.get("/payments/cs_never", headers=ADMIN).status_code == 404
    bad = client.get("/payments/%20x", headers=ADMIN)
    assert bad.status_code == 400 and bad.json["code"] == "invalid_payment_id"


def test_ready_refusal_by_broker_acl_is_named(tmp_path, stripe_standin, make_app):
    """GIVEN a broker whose ACL does not let the API publish the probe WHEN /status/ready is
    asked THEN 503 says the broker refused it (an MQTT 5 PUBACK error code)."""
    from tests.support.broker import TlsBroker

    broker = TlsBroker(
        tmp_path / "acl-broker", acl="user arcade\ntopic write arcade/machine/+/coinpulse\n"
    )
    try:
        answer = make_app(on=broker).test_client().get("/status/ready", headers=ADMIN)
    finally:
        broker.stop()

    assert answer.status_code == 503
    assert "refused" in answer.json["checks"]["broker"].lower()


# --- the same through the command line ------------------------------------------------------
def test_cli_lists_payments_as_a_table_and_as_json(api, add_machine):
    """GIVEN payments WHEN `flask payments list` runs THEN a table for people, and with
    --json the answer of GET /payments; filters and pages as over HTTP."""
    token = add_machine("cab001")
    link = link_of(api, "cab001", token)
    assert pay(api, "cs_one", link, amount_subtotal=150, created=unix(1))[0] == 200
    assert pay(api, "cs_nobody", None, client_reference_id="ghost")[0] == 200

    table = flask_command(api.env, "payments", "list")
    as_json = flask_command(api.env, "payments", "list", "--json", "--limit", "1")
    filtered = flask_command(api.env, "payments", "list", "--status", "unattributed", "--json")

    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split()[:3] == ["created", "(UTC)", "payment"]
    assert "cs_nobody" in lines[0] and "unattributed" in lines[0] and "ghost" in lines[0]
    assert "cs_one" in lines[1] and "cab001" in lines[1] and "1.50 USD" in lines[1]
    page = json.loads(as_json.stdout)
    assert ids(page) == ["cs_nobody"] and page["next_cursor"]
    rest = flask_command(api.env, "payments", "list", "--json", "--cursor", page["next_cursor"])
    assert ids(json.loads(rest.stdout)) == ["cs_one"]
    assert ids(json.loads(filtered.stdout)) == ["cs_nobody"]
    wrong = flask_command(api.env, "payments", "list", "--status", "lost")
    assert wrong.returncode == 1 and "status must be one of" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_cli_resends_refunds_and_grants(api, add_machine, fresh_broker, subscribe, stripe_standin):
    """GIVEN a paid grant WHEN the operator resends, refunds and grants from the shell THEN the
    cabinet hears the pulses, Stripe refunds, and failures exit 1 with a sentence."""
    token = add_machine("cab001")
    link = link_of(api, "cab001", token)
    assert pay(api, "cs_cli", link, standin=stripe_standin)[0] == 200
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse", on=fresh_broker)

    resent = flask_command(api.env, "payments", "resend", "cs_cli", "--json")
    told = flask_command(api.env, "payments", "resend", "cs_cli")
    refunded = flask_command(api.env, "payments", "refund", "cs_cli", "--amount", "20", "--json")
    granted = flask_command(
        api.env,
        "credits",
        "grant",
        "cab001",
        "2",
        "--reason",
        "jammed",
        "--idempotency-key",
        "k1",
        "--json",
    )
    again = flask_command(
        api.env, "credits", "grant", "cab001", "2", "--reason", "jammed", "--idempotency-key", "k1"
    )

    assert resent.returncode == 0, resent.stderr
    assert json.loads(resent.stdout)["result"] == "resent"
    assert told.stdout.startswith("cs_cli: coinpulse sent again and acknowledged by the broker")
    assert refunded.returncode == 0, refunded.stderr
    assert json.loads(refunded.stdout)["amount"] == 20
    assert [r["amount"] for r in stripe_standin.refunds] == [20]
    assert granted.returncode == 0, granted.stderr
    manual = json.loads(granted.stdout)
    assert again.stdout.strip() == f"2 credits for cab001 as {manual['id']}"
    pulses = subscriber.wait_for(3)
    assert [m.payload["paymentId"] for m in subscriber.settle()] == [
        "cs_cli",
        "cs_cli",
        manual["id"],
    ]
    assert pulses[2].payload["credits"] == 2
    assert refund_event(api, "cs_cli", 50, 20)[0] == 200
    listed = flask_command(api.env, "payments", "list", "--machine", "cab001")
    [row] = [line for line in listed.stdout.splitlines() if "cs_cli" in line]
    assert row.split()[-4:] == ["0.50", "USD", "0.20", "USD"]
    unknown = flask_command(api.env, "payments", "resend", "cs_never")
    assert unknown.returncode == 1 and "there is no payment cs_never" in unknown.stderr
    bad = flask_command(api.env, "credits", "grant", "cab001", "0", "--reason", "x")
    assert bad.returncode == 1 and "credits must be" in bad.stderr


def test_cli_reports_revenue(api, add_machine):
    """GIVEN sales on two machines WHEN `flask revenue --group machine` runs THEN one line a
    machine with gross, refunded and net in money."""
    one, two = add_machine("cab001"), add_machine("cab002")
    assert pay(api, "cs_a", link_of(api, "cab001", one), amount_subtotal=100)[0] == 200
    assert pay(api, "cs_b", link_of(api, "cab002", two))[0] == 200

    table = flask_command(api.env, "revenue", "--group", "machine")
    as_json = flask_command(api.env, "revenue", "--json")

    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["machine", "gross", "refunded", "net", "payments"]
    assert lines[1].split() == ["cab001", "1.00", "USD", "0.00", "USD", "1.00", "USD", "1"]
    assert lines[2].split()[0] == "cab002"
    assert [r["net"] for r in json.loads(as_json.stdout)["rows"]] == [150]


def test_a_removed_machines_books_stay_readable_by_the_operator(api, add_machine):
    """GIVEN a machine paid and then removed WHEN the operator reads it THEN its payments and
    counters are there, marked not registered; its old token and unknown machines get 401 and
    404."""
    token = add_machine("cab002")
    assert pay(api, "cs_gone", link_of(api, "cab002", token))[0] == 200
    assert flask_command(api.env, "machines", "remove", "cab002").returncode == 0

    status, gone = call(api, "GET", "/machines/cab002")

    assert status == 200, gone
    assert gone["registered"] is False
    assert [p["id"] for p in gone["payments"]] == ["cs_gone"]
    assert gone["credits"]["granted"] == 1 and gone["revenue"] == {"usd": 50}
    old_token = api.request("GET", "/machines/cab002", headers={"Authorization": f"Bearer {token}"})
    assert old_token[0] == 404
    assert call(api, "GET", "/machines/never")[0] == 404


def test_a_refund_kept_before_its_session_counts_on_the_day_it_was_made(client, app, open_shop):
    """GIVEN a refund that arrived three days before its Checkout Session did WHEN revenue is
    reported by day THEN the sale counts on the session's day and the refund on its own."""
    from dataclasses import replace

    from arcade.clock import utc_now
    from tests.support.app import signed_post
    from tests.support.stripe_standin import event

    shop = open_shop(app)
    refund = event(
        "charge.refunded", charge(payment_intent="pi_cs_late", amount=50, amount_refunded=50)
    )
    assert signed_post(client, refund).status_code == 200
    store = app.extensions["arcade"].store
    kept = store.get_intent("pi_cs_late")
    three_days_ago = utc_now() - timedelta(days=3)
    assert store.commit_payment(None, intent=replace(kept, updated_at=three_days_ago))
    assert shop.pay("cs_late").status_code == 200

    rows = client.get("/reports/revenue", headers=ADMIN).json["rows"]

    assert [(r["day"], r["gross"], r["refunded"]) for r in rows] == [
        (three_days_ago.date().isoformat(), 0, 50),
        (utc_now().date().isoformat(), 50, 0),
    ]


def test_a_refund_for_a_payment_not_on_record_is_listed_until_its_session_comes(api, add_machine):
    """GIVEN a refund Stripe reported for a payment we never saw WHEN the operator looks THEN
    `GET /refunds/unmatched` and `flask payments unmatched` list it; once its session arrives it
    leaves the list and the payment shows refunded."""
    token = add_machine("cab001")
    link = link_of(api, "cab001", token)
    assert refund_event(api, "cs_later", 50, 50)[0] == 200

    status, listed = call(api, "GET", "/refunds/unmatched")
    table = flask_command(api.env, "payments", "unmatched")

    assert status == 200, listed
    [refund] = listed["refunds"]
    assert refund["payment_intent"] == "pi_cs_later" and refund["amount_refunded"] == 50
    assert refund["disputed"] is False and refund["recorded_at"]
    assert "pi_cs_later" in table.stdout and "50" in table.stdout
    assert pay(api, "cs_later", link)[0] == 200
    assert call(api, "GET", "/refunds/unmatched")[1] == {"refunds": []}
    assert call(api, "GET", "/payments/cs_later")[1]["status"] == "refunded"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STRIPE_WEBHOOK_SECRET": ""}, "STRIPE_WEBHOOK_SECRET not set"),
        ({"STRIPE_WEBHOOK_SECRET": "whsec_"}, "STRIPE_WEBHOOK_SECRET must start with whsec_"),
        ({"CREDITS_PER_UNIT": "lots"}, "CREDITS_PER_UNIT must be a whole number"),
        ({"MQTT_PUBACK_TIMEOUT": "never"}, "MQTT_PUBACK_TIMEOUT must be a number"),
    ],
)
def test_ready_names_a_setting_that_stops_another_part(make_app, env, named):
    """GIVEN everything reachable but a webhook secret missing (every webhook would answer 503)
    or a malformed setting WHEN /status/ready is asked THEN 503 names it, not "ready"."""
    answer = make_app(**env).test_client().get("/status/ready", headers=ADMIN)

    assert answer.status_code == 503, answer.json
    assert named in answer.json["checks"]["settings"]
    assert [p for p in answer.json["problems"] if p.startswith("settings: ")]


def test_ready_names_a_refused_stripe_api_base_and_calls_no_stripe_instead(make_app):
    """GIVEN STRIPE_API_BASE refused (plain http:// to another machine) WHEN /status/ready asks
    Stripe THEN it names STRIPE_API_BASE instead of sending the key to Stripe itself."""
    answer = (
        make_app(STRIPE_API_BASE="http://stripe-mock.example.com:12111")
        .test_client()
        .get("/status/ready", headers=ADMIN)
    )

    assert answer.status_code == 503
    assert answer.json["checks"]["stripe"].startswith("STRIPE_API_BASE is http://")
    assert "settings" not in answer.json["checks"]


@pytest.mark.parametrize(
    ("env", "check", "named"),
    [
        ({"STRIPE_API_KEY": "pk_test_publishable"}, "stripe", "STRIPE_API_KEY must be a secret"),
        ({"EMQX_BROKER_URL": "mqtts://bro ker"}, "broker", "EMQX_BROKER_URL must be a host name"),
        (
            {"EMQX_BROKER_URL": "mqtts://arcade:pw@broker.example:8883"},
            "broker",
            "EMQX_BROKER_URL must not hold a login",
        ),
    ],
)
def test_ready_names_a_refused_setting_once_by_what_is_wrong(make_app, env, check, named):
    """GIVEN a setting given but refused WHEN /status/ready is asked THEN the check that needs
    it names what is wrong with it (a malformed broker was "EMQX_BROKER_URL not set"), and
    the settings check does not say it a second time."""
    answer = make_app(**env).test_client().get("/status/ready", headers=ADMIN)

    assert answer.status_code == 503
    assert answer.json["checks"][check].startswith(named), answer.json
    assert "settings" not in answer.json["checks"], answer.json
    assert sum(named in problem for problem in answer.json["problems"]) == 1


def test_a_game_over_names_a_malformed_broker_by_what_is_wrong_not_as_not_set(make_app):
    """GIVEN EMQX_BROKER_URL given but malformed WHEN a game over is to be published THEN its 503
    and /status name what is wrong with the broker setting, once, not as "not set"."""
    app = make_app(EMQX_BROKER_URL="mqtts://bro ker")
    app.extensions["arcade"].registry.register("cab001")
    client = app.test_client()

    answer = client.post("/gameover", json={"machine_id": "cab001"}, headers=ADMIN)
    status = client.get("/status").json

    assert answer.status_code == 503, answer.json
    assert answer.json["error"].startswith("EMQX_BROKER_URL must be a host name"), answer.json
    assert [p for p in status["problems"] if p.startswith("EMQX_BROKER_URL")] == [
        "EMQX_BROKER_URL must be a host name, mqtts://host:port or mqtt://host:port"
    ], status["problems"]
