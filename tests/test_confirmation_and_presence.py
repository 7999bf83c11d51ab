""" "Delivered" is not "the cabinet has it": confirmation, unconfirmed payments, presence, and
no payment into a cabinet that is not there. On SQLite and DynamoDB, with a real broker and
the Stripe stand-in."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from arcade.clock import utc_now
from tests.support.app import TOPIC_PREFIX, signed_post
from tests.support.stripe_standin import charge, event

# paho leaves the socket of a connection to a stopped or refusing broker to the collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")

COINPULSE = f"{TOPIC_PREFIX}/cab001/coinpulse"
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)  # every due grant is due by then


def ack(shop, payment_id, *, machine_id: str = "cab001", headers=None):
    return shop.client.post(
        f"/machines/{machine_id}/credits/ack",
        json={"payment_id": payment_id},
        headers=shop.auth if headers is None else headers,
    )


def heartbeat(shop, *, connected: bool = True, credits_left: int | None = 0):
    body = {"mqtt_connected": connected}
    if credits_left is not None:
        body["credits_left"] = credits_left
    return shop.client.post("/machines/cab001/heartbeat", json=body, headers=shop.auth)


def age_delivery(app, payment_id: str, delivered_at: datetime = LONG_AGO) -> None:
    store = app.extensions["arcade"].store
    payment = store.get_payment(payment_id)
    assert store.commit_payment(replace(payment, delivered_at=delivered_at))


def go_silent(app, *, connected: bool = True, at: datetime = LONG_AGO) -> None:
    """Make cab001's last heartbeat an old one."""
    app.extensions["arcade"].store.update_machine(
        "cab001", last_seen=at, mqtt_connected=int(connected), credits_reported=0
    )


# --- confirmation -----------------------------------------------------------------------------
def test_an_ack_of_a_grant_refunded_before_its_session_brings_no_credits_back(build, open_shop):
    """GIVEN a refund that arrived before its Checkout Session (the grant is cancelled, never
    published) WHEN the cabinet acknowledges it anyway THEN 409 grant_cancelled, and the
    machine's credits and revenue stay as they were."""
    shop = open_shop(build())
    refund = event(
        "charge.refunded", charge(payment_intent="pi_cs_early", amount=50, amount_refunded=50)
    )
    assert signed_post(shop.client, refund).status_code == 200
    assert shop.pay("cs_early").status_code == 200
    before = shop.state()

    answer = ack(shop, "cs_early")

    assert answer.status_code == 409 and answer.json["code"] == "grant_cancelled"
    after = shop.state()
    assert after["credits"] == before["credits"] == {"granted": 0, "used": 0, "left": 0}
    assert after["payments"][0]["status"] == "refunded"


def test_a_confirmed_payment_is_credited_and_a_repeat_changes_nothing(build, open_shop, subscribe):
    shop = open_shop(build())
    subscriber = subscribe(COINPULSE)
    shop.pay("cs_fired")
    subscriber.wait_for(1)

    first, again = ack(shop, "cs_fired"), ack(shop, "cs_fired")

    assert (first.status_code, first.json) == (
        200,
        {"payment_id": "cs_fired", "status": "credited"},
    )
    assert again.json["status"] == "credited"
    state = shop.state()
    assert state["payments"][0]["status"] == "credited"
    assert state["credits"]["granted"] == 1
    assert state["unconfirmed"] == []


def test_a_payment_no_cabinet_confirmed_is_listed_as_unconfirmed(build, open_shop):
    """GIVEN a coinpulse the broker acknowledged but no cabinet ever confirmed WHEN
    CONFIRM_WITHIN_SECONDS has passed THEN the operator sees it as unconfirmed."""
    app = build(CONFIRM_WITHIN_SECONDS="60")
    shop = open_shop(app)
    shop.pay("cs_recent")
    shop.pay("cs_old")
    age_delivery(app, "cs_old")

    state = shop.state()

    assert state["unconfirmed"] == ["cs_old"]
    assert {p["id"]: p["status"] for p in state["payments"]} == {
        "cs_recent": "delivered",
        "cs_old": "delivered",
    }


def test_a_confirmation_of_a_grant_not_yet_marked_delivered_delivers_it(
    build, fresh_broker, open_shop
):
    shop = open_shop(build(on=fresh_broker))
    fresh_broker.stop()
    shop.pay("cs_unmarked")

    answer = ack(shop, "cs_unmarked")

    assert answer.json["status"] == "credited"
    assert shop.app.extensions["arcade"].store.list_due(FAR_FUTURE) == []


@pytest.mark.parametrize(
    ("payment_id", "machine"),
    [("cs_nobody", "cab001"), ("cs_theirs", "cab001")],
    ids=["unknown_payment", "another_machines_payment"],
)
def test_a_confirmation_of_a_payment_not_this_machines_is_a_404(
    build, open_shop, payment_id, machine
):
    app = build()
    shop = open_shop(app)
    other = open_shop(app, "cab002")
    other.pay("cs_theirs")

    answer = ack(shop, payment_id, machine_id=machine)

    assert (answer.status_code, answer.json["code"]) == (404, "unknown_payment")
    assert other.state()["payments"][0]["status"] == "delivered"


@pytest.mark.parametrize("body", [{}, {"payment_id": 7}, {"payment_id": "has space"}])
def test_a_malformed_confirmation_is_a_400(build, open_shop, body):
    shop = open_shop(build())

    answer = shop.client.post("/machines/cab001/credits/ack", json=body, headers=shop.auth)

    assert (answer.status_code, answer.json["code"]) == (400, "invalid_payment_id")


def test_a_confirmation_needs_the_machines_token(build, open_shop):
    shop = open_shop(build())
    shop.pay("cs_auth")

    answer = ack(shop, "cs_auth", headers={"Authorization": "Bearer mt_wrong"})

    assert answer.status_code == 401


def test_an_unconfirmed_payment_is_refunded_once_when_auto_refund_is_on(
    build, open_shop, stripe_standin, subscribe
):
    """GIVEN AUTO_REFUND_UNCONFIRMED_SECONDS WHEN a delivered payment is still unconfirmed past
    it THEN the relay refunds it at Stripe with the key refund-<payment_id>, once."""
    app = build(AUTO_REFUND_UNCONFIRMED_SECONDS="600")
    shop = open_shop(app)
    stripe_standin.add_session(shop.paid_event("cs_ghost")["data"]["object"])
    shop.pay("cs_ghost")
    store = app.extensions["arcade"].store
    payment = store.get_payment("cs_ghost")
    assert payment.due_at is not None
    assert store.commit_payment(replace(payment, due_at=utc_now()))
    svc = app.extensions["arcade"]

    first, second = svc.relay(), svc.relay()

    assert (first["refunded"], second["due"]) == (1, 0)
    [refund] = stripe_standin.refunds
    assert refund["payment_intent"] == "pi_cs_ghost"
    [request] = stripe_standin.requests_to("POST", "/v1/refunds")
    assert request.idempotency_key == "refund-cs_ghost"
    signed_post(
        shop.client,
        event(
            "charge.refunded", charge(payment_intent="pi_cs_ghost", amount=50, amount_refunded=50)
        ),
    )
    assert shop.state()["payments"][0]["status"] == "refunded"


def test_a_confirmed_payment_is_never_auto_refunded(build, open_shop, stripe_standin):
    app = build(AUTO_REFUND_UNCONFIRMED_SECONDS="600")
    shop = open_shop(app)
    shop.pay("cs_played")

    ack(shop, "cs_played")

    assert app.extensions["arcade"].store.list_due(FAR_FUTURE) == []
    assert app.extensions["arcade"].relay()["refunded"] == 0
    assert stripe_standin.refunds == []


# --- presence ---------------------------------------------------------------------------------
def test_a_machine_that_never_sent_a_heartbeat_is_unknown_and_takes_payments(build, open_shop):
    shop = open_shop(build())

    state = shop.state()
    link = shop.client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=shop.auth
    )

    assert (state["presence"], state["last_seen"]) == ("unknown", None)
    assert link.status_code == 200


def test_a_heartbeat_makes_a_machine_online(build, open_shop):
    shop = open_shop(build())

    answer = heartbeat(shop, credits_left=3)

    assert answer.json == {"machine_id": "cab001", "presence": "online", "credits_per_game": 1}
    state = shop.state()
    assert state["presence"] == "online" and state["last_seen"] is not None


@pytest.mark.parametrize(
    "silence",
    [{"connected": True, "at": LONG_AGO}, {"connected": False, "at": None}],
    ids=["heartbeats_stopped", "mqtt_down"],
)
def test_an_offline_machine_takes_no_payment_and_its_links_switch_off_then_on(
    build, open_shop, stripe_standin, silence
):
    """GIVEN a heartbeating machine WHEN its heartbeats stop, or it says MQTT is down THEN new
    links and QR codes answer 409 and the relay switches its Stripe links off; its next good
    heartbeat switches them on again."""
    app = build()
    shop = open_shop(app)
    heartbeat(shop)
    go_silent(app, connected=silence["connected"], at=silence["at"] or utc_now())

    link = shop.client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=shop.auth
    )
    png = shop.client.get("/machines/cab001/qr.png")
    switched = app.extensions["arcade"].relay()["links_switched"]

    assert (link.status_code, link.json["code"]) == (409, "machine_offline")
    assert (png.status_code, png.json["code"]) == (409, "machine_offline")
    assert shop.state()["presence"] == "offline"
    assert switched == 1
    assert [link["active"] for link in stripe_standin.payment_links] == [False]
    updates = stripe_standin.requests_to("POST", f"/v1/payment_links/{shop.link_id}")
    assert [u.params for u in updates] == [{"active": "false"}]

    assert heartbeat(shop).json["presence"] == "online"
    assert [link["active"] for link in stripe_standin.payment_links] == [True]
    assert shop.client.get("/machines/cab001/qr.png").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"mqtt_connected": "yes"},
        {"mqtt_connected": True, "credits_left": -1},
        {"mqtt_connected": True, "credits_left": 2**64},
    ],
)
def test_a_malformed_heartbeat_is_a_400(build, open_shop, body):
    shop = open_shop(build())

    answer = shop.client.post("/machines/cab001/heartbeat", json=body, headers=shop.auth)

    assert (answer.status_code, answer.json["code"]) == (400, "invalid_heartbeat")
