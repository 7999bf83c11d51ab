"""Each webhook event does what the README's "Webhook events" table says, for the machine the
session names."""

from __future__ import annotations

import json

from arcade.store.base import PaymentQuery
from tests.support.app import DEFAULT_PRICE, TOPIC_PREFIX, WEBHOOK_SECRET, signed_post
from tests.support.stripe_standin import charge, checkout_session, event, sign_payload


def our_link(client, cabinet) -> str:
    answer = client.post(
        "/create-payment-link", json={"machine_id": cabinet.machine_id}, headers=cabinet.auth
    )
    assert answer.status_code == 200
    return answer.json["payment_link_id"]


def payments_of(app, machine_id: str):
    query = PaymentQuery(machine_id=machine_id, limit=20)
    return app.extensions["arcade"].store.query_payments(query)[0]


def test_dashboard_link_counts_units_from_line_items(
    client, cabinet, subscribe, deliver, stripe_standin
):
    """GIVEN a link made in Stripe's dashboard WHEN 4 units are bought THEN 4 credits."""
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")
    session = stripe_standin.add_checkout_session(
        "cs_dashboard",
        [(DEFAULT_PRICE, 4)],
        payment_link="plink_from_dashboard",
        client_reference_id="cab001",
    )

    answer = deliver("checkout.session.completed", session)

    assert answer.status_code == 200
    assert subscriber.wait_for(1)[0].payload["credits"] == 4
    assert (
        len(stripe_standin.requests_to("GET", "/v1/checkout/sessions/cs_dashboard/line_items")) == 1
    )


def test_credits_per_unit_multiplies_units(client, register, subscribe, deliver):
    """GIVEN a machine giving 3 credits a unit WHEN 2 units are bought THEN 6 credits."""
    cabinet = register("cab003", credits_per_unit=3)
    link_id = our_link(client, cabinet)
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab003/coinpulse")

    deliver(
        "checkout.session.completed",
        checkout_session(id="cs_six", payment_link=link_id, amount_subtotal=100),
    )

    assert subscriber.wait_for(1)[0].payload["credits"] == 6


def test_discounted_session_fetches_line_items(client, cabinet, subscribe, deliver, stripe_standin):
    """GIVEN our link and a coupon WHEN paid THEN units come from line items, not the amount."""
    link_id = our_link(client, cabinet)
    session = stripe_standin.add_checkout_session(
        "cs_coupon",
        [(DEFAULT_PRICE, 3)],
        payment_link=link_id,
        discount=25,
    )
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")

    deliver("checkout.session.completed", session)

    pulse = subscriber.wait_for(1)[0].payload
    assert pulse["credits"] == 3
    assert pulse["amount"] == 125


def test_machine_found_from_metadata_then_client_reference(
    client, register, subscribe, deliver, stripe_standin
):
    """GIVEN no stored link WHEN metadata names a machine THEN that machine gets the credits."""
    register("cab001")
    register("cab002")
    subscriber = subscribe()
    stripe_standin.add_checkout_session(
        "cs_meta",
        [(DEFAULT_PRICE, 1)],
        metadata={"machine_id": "cab002"},
        client_reference_id="cab001",
    )
    deliver(
        "checkout.session.completed",
        checkout_session(
            id="cs_meta",
            metadata={"machine_id": "cab002"},
            client_reference_id="cab001",
            amount_subtotal=50,
        ),
    )

    [pulse] = subscriber.wait_for(1)
    assert pulse.topic == f"{TOPIC_PREFIX}/cab002/coinpulse"


def test_stored_link_wins_over_what_the_session_claims(client, register, subscribe, deliver):
    """GIVEN cab001's link WHEN the session's metadata says cab002 THEN cab001 is credited."""
    cab1 = register("cab001")
    register("cab002")
    link_id = our_link(client, cab1)
    subscriber = subscribe()

    deliver(
        "checkout.session.completed",
        checkout_session(
            id="cs_link",
            payment_link=link_id,
            amount_subtotal=50,
            metadata={"machine_id": "cab002"},
        ),
    )

    assert subscriber.wait_for(1)[0].topic == f"{TOPIC_PREFIX}/cab001/coinpulse"


def test_unregistered_or_unsafe_machine_publishes_nothing(
    app, client, subscribe, deliver, stripe_standin
):
    """GIVEN sessions naming no valid registered machine WHEN paid THEN 200, recorded, silent."""
    subscriber = subscribe("#")
    for session_id, claimed in [
        ("cs_ghost", "ghost"),
        ("cs_slash", "a/b"),
        ("cs_plus", "+"),
        ("cs_hash", "#"),
        ("cs_long", "x" * 65),
    ]:
        stripe_standin.add_checkout_session(session_id, [(DEFAULT_PRICE, 1)])
        answer = deliver(
            "checkout.session.completed",
            checkout_session(
                id=session_id,
                client_reference_id=claimed,
                metadata={"machine_id": claimed},
                amount_subtotal=50,
            ),
        )
        assert answer.status_code == 200
        assert answer.json["result"] == "unattributed"
        stored = app.extensions["arcade"].store.get_payment(session_id)
        assert stored.status == "unattributed" and stored.machine_id is None

    assert subscriber.settle() == []


def test_unpaid_then_async_success_grants_once(client, cabinet, subscribe, deliver, app):
    """GIVEN a bank debit still pending WHEN it succeeds later THEN credits arrive only then."""
    link_id = our_link(client, cabinet)
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")
    pending = checkout_session(
        id="cs_async", payment_link=link_id, amount_subtotal=100, payment_status="unpaid"
    )

    assert deliver("checkout.session.completed", pending).status_code == 200
    assert subscriber.settle() == []
    assert payments_of(app, "cab001")[0].status == "pending_payment"

    paid = {**pending, "payment_status": "paid"}
    assert deliver("checkout.session.async_payment_succeeded", paid).status_code == 200
    assert subscriber.wait_for(1)[0].payload["credits"] == 2
    assert deliver("checkout.session.async_payment_succeeded", paid).status_code == 200
    assert len(subscriber.settle()) == 1


def test_async_failure_is_recorded_and_grants_nothing(client, cabinet, subscribe, deliver, app):
    """GIVEN a pending payment WHEN it fails THEN it is recorded as failed, no credits."""
    link_id = our_link(client, cabinet)
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")
    session = checkout_session(
        id="cs_fail", payment_link=link_id, amount_subtotal=100, payment_status="unpaid"
    )
    deliver("checkout.session.completed", session)

    assert deliver("checkout.session.async_payment_failed", session).status_code == 200

    state = client.get("/machines/cab001", headers=cabinet.auth).json
    assert state["payments"][0]["status"] == "payment_failed"
    assert state["credits"]["granted"] == 0 and state["revenue"] == {}
    assert subscriber.settle() == []


def test_refund_is_recorded_once_and_publishes_nothing(client, cabinet, subscribe, deliver):
    """GIVEN a delivered payment WHEN Stripe reports a refund twice THEN revenue drops once."""
    link_id = our_link(client, cabinet)
    deliver(
        "checkout.session.completed",
        checkout_session(
            id="cs_refund", payment_link=link_id, amount_subtotal=200, payment_intent="pi_refund"
        ),
    )
    subscriber = subscribe()

    refund = charge(payment_intent="pi_refund", amount=200, amount_refunded=200)
    assert deliver("charge.refunded", refund).status_code == 200
    assert deliver("charge.refunded", refund).status_code == 200

    state = client.get("/machines/cab001", headers=cabinet.auth).json
    assert state["payments"][0]["status"] == "refunded"
    assert state["revenue"] == {"usd": 0}
    assert state["credits"]["granted"] == 4  # the credits were already played
    assert subscriber.settle() == []


def test_partial_refund_then_full(client, cabinet, deliver):
    """GIVEN 200 paid WHEN 50 then 200 in all are refunded THEN revenue is 150 then 0."""
    link_id = our_link(client, cabinet)
    deliver(
        "checkout.session.completed",
        checkout_session(
            id="cs_part", payment_link=link_id, amount_subtotal=200, payment_intent="pi_part"
        ),
    )

    deliver("charge.refunded", charge(payment_intent="pi_part", amount=200, amount_refunded=50))
    partly = client.get("/machines/cab001", headers=cabinet.auth).json
    deliver("charge.refunded", charge(payment_intent="pi_part", amount=200, amount_refunded=200))
    fully = client.get("/machines/cab001", headers=cabinet.auth).json

    assert partly["revenue"] == {"usd": 150}
    assert partly["payments"][0]["status"] == "partially_refunded"
    assert fully["revenue"] == {"usd": 0}
    assert fully["payments"][0]["status"] == "refunded"


def test_unknown_event_types_are_ignored(client, deliver, subscribe):
    """GIVEN an event we do not handle WHEN delivered THEN 200 and nothing happens."""
    subscriber = subscribe("#")

    answer = deliver("customer.created", {"id": "cus_1", "object": "customer"})

    assert answer.status_code == 200 and answer.json["result"] == "ignored"
    assert subscriber.settle() == []


def test_legacy_addcredit_path_is_the_webhook(client, cabinet, subscribe):
    """GIVEN the reference's /addCredit path WHEN a paid event arrives THEN credits arrive."""
    link_id = our_link(client, cabinet)
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")
    body = event(
        "checkout.session.completed",
        checkout_session(id="cs_legacy", payment_link=link_id, amount_subtotal=50),
    )

    assert signed_post(client, body, path="/addCredit").status_code == 200
    assert subscriber.wait_for(1)[0].payload["paymentId"] == "cs_legacy"


def test_bad_signatures_change_nothing(app, client, cabinet, subscribe):
    """GIVEN a paid event WHEN its signature is missing, wrong or stale THEN 400, no change."""
    link_id = our_link(client, cabinet)
    subscriber = subscribe("#")
    payload = json.dumps(
        event(
            "checkout.session.completed",
            checkout_session(id="cs_forged", payment_link=link_id, amount_subtotal=500),
        )
    ).encode()

    unsigned = client.post("/webhook", data=payload)
    wrong = signed_post(client, payload, secret="whsec_not_ours")
    stale = signed_post(client, payload, timestamp=1_000_000_000)
    altered = client.post(
        "/webhook",
        data=payload.replace(b"500", b"900"),
        headers={"Stripe-Signature": sign_payload(payload, WEBHOOK_SECRET)},
    )

    for answer in (unsigned, wrong, stale, altered):
        assert answer.status_code == 400
        assert answer.json["code"] == "invalid_signature"
    assert app.extensions["arcade"].store.get_payment("cs_forged") is None
    assert subscriber.settle() == []


def test_a_signed_session_event_without_an_id_is_a_400(client, subscribe):
    """GIVEN a signed event whose session has no id WHEN delivered THEN 400, nothing published."""
    subscriber = subscribe("#")
    session = {"object": "checkout.session", "payment_status": "paid", "amount_subtotal": 50}

    answer = signed_post(client, event("checkout.session.completed", session))

    assert answer.status_code == 400
    assert answer.json == {
        "error": "the event's Checkout Session has no id",
        "code": "invalid_event",
    }
    assert subscriber.settle() == []


def test_a_refund_of_an_unattributed_payment_is_answered_and_named(
    app, client, deliver, stripe_standin
):
    """GIVEN an unattributed payment WHEN it is refunded THEN 200, named, no revenue moves."""
    stripe_standin.add_checkout_session("cs_lost", [(DEFAULT_PRICE, 1)])
    deliver(
        "checkout.session.completed",
        checkout_session(
            id="cs_lost", client_reference_id="ghost", amount_subtotal=50, payment_intent="pi_lost"
        ),
    )

    answer = deliver(
        "charge.refunded", charge(payment_intent="pi_lost", amount=50, amount_refunded=50)
    )

    assert answer.status_code == 200
    assert answer.json["result"] == "refund_of_ungranted_payment"
    assert app.extensions["arcade"].store.get_payment("cs_lost").status == "unattributed"
