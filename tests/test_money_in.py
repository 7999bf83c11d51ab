"""Money in: only what was paid, at this machine's price, in any order of Stripe's events.

Each test plays a sequence a player, an operator, Stripe or an attacker can produce, through
the real webhook (signed bodies, the real ``stripe`` library against the stand-in, a real TLS
broker), on SQLite and on DynamoDB alike, and checks what users see: the answer, the messages
on the broker and the machine's books.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.support.app import DEFAULT_PRICE, TOPIC_PREFIX, signed_post
from tests.support.stripe_standin import charge, checkout_session, dispute, event

# paho leaves the socket of a connection to a stopped or refusing broker to the collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")

COINPULSE = f"{TOPIC_PREFIX}/cab001/coinpulse"


@pytest.fixture
def app(build):
    """Build the app on a fresh store of each kind."""
    return build()


@pytest.fixture
def link_id(client, cabinet) -> str:
    """Make cab001's own Payment Link (50 cents a unit, the player chooses how many)."""
    answer = client.post(
        "/create-payment-link", json={"machine_id": cabinet.machine_id}, headers=cabinet.auth
    )
    return answer.json["payment_link_id"]


def state_of(client, cabinet) -> dict[str, Any]:
    return client.get(f"/machines/{cabinet.machine_id}", headers=cabinet.auth).json


def payment_in(state: dict[str, Any], payment_id: str) -> dict[str, Any]:
    (found,) = [p for p in state["payments"] if p["id"] == payment_id]
    return found


def paid(session_id: str, link: str, *, units: int = 2, **fields: Any) -> dict[str, Any]:
    """Return the paid Checkout Session of ``units`` at 50 cents on one of our links."""
    return checkout_session(
        id=session_id,
        payment_link=link,
        amount_subtotal=50 * units,
        payment_intent=f"pi_{session_id}",
        **fields,
    )


# --- which sessions buy credits ---------------------------------------------------------------
def test_another_link_at_one_cent_naming_the_machine_buys_nothing(
    client, cabinet, deliver, subscribe, stripe_standin
):
    """GIVEN a 1-cent donation link of the same account WHEN opened with the machine's
    client_reference_id and 20 units paid THEN unattributed with a reason, nothing published."""
    stripe_standin.add_price("price_donation", 1)
    session = stripe_standin.add_checkout_session(
        "cs_cent",
        [("price_donation", 20)],
        payment_link="plink_donation",
        client_reference_id="cab001",
    )
    subscriber = subscribe(COINPULSE)

    answer = deliver("checkout.session.completed", session)

    assert answer.status_code == 200
    assert answer.json["result"] == "unattributed"
    assert subscriber.settle() == []
    state = state_of(client, cabinet)
    assert state["credits"] == {"granted": 0, "used": 0, "left": 0}
    assert state["revenue"] == {}
    shown = payment_in(state, "cs_cent")
    assert shown["status"] == "unattributed"
    assert shown["reason"] == "no line item is at this machine's price"


def test_a_session_buying_more_than_one_coinpulse_carries_waits_for_a_refund(
    client, cabinet, deliver, subscribe, stripe_standin
):
    """GIVEN a link made in Stripe's dashboard selling 1001 units at the machine's price WHEN
    it is paid THEN no coinpulse is sent (the cabinet refuses one over 1000 credits): the
    payment is unattributed, saying why, for an operator to refund."""
    session = stripe_standin.add_checkout_session(
        "cs_crate", [(DEFAULT_PRICE, 1001)], payment_link="plink_dash", client_reference_id="cab001"
    )
    subscriber = subscribe(COINPULSE)

    answer = deliver("checkout.session.completed", session)

    assert answer.json["result"] == "unattributed"
    assert subscriber.settle() == []
    state = state_of(client, cabinet)
    assert state["credits"]["granted"] == 0
    assert payment_in(state, "cs_crate")["reason"] == (
        "it buys 1001 credits, more than one coinpulse carries (1000)"
    )


def test_a_free_trial_subscription_naming_the_machine_buys_nothing(
    client, cabinet, deliver, subscribe, stripe_standin
):
    """GIVEN a subscription link with a free trial WHEN it completes with no payment required
    THEN unattributed (only mode payment buys credits), nothing published, no Stripe call."""
    session = checkout_session(
        id="cs_trial",
        client_reference_id="cab001",
        amount_subtotal=0,
        payment_status="no_payment_required",
        mode="subscription",
    )
    subscriber = subscribe(COINPULSE)
    stripe_standin.reset_requests()

    answer = deliver("checkout.session.completed", session)

    assert answer.json["result"] == "unattributed"
    assert subscriber.settle() == []
    assert payment_in(state_of(client, cabinet), "cs_trial")["reason"] == (
        "a subscription session buys no credits"
    )
    assert stripe_standin.requests == []


def test_a_session_mixing_the_machines_price_and_a_foreign_one_counts_only_the_machines_units(
    client, cabinet, deliver, subscribe, stripe_standin
):
    """GIVEN 3 units at the default price and 5 at a 1-cent price WHEN paid THEN 3 credits."""
    stripe_standin.add_price("price_cheap", 1)
    session = stripe_standin.add_checkout_session(
        "cs_mixed",
        [(DEFAULT_PRICE, 3), ("price_cheap", 5)],
        payment_link="plink_dashboard",
        metadata={"machine_id": "cab001"},
    )
    subscriber = subscribe(COINPULSE)

    deliver("checkout.session.completed", session)

    assert subscriber.wait_for(1)[0].payload["credits"] == 3
    assert state_of(client, cabinet)["credits"]["granted"] == 3


def test_a_price_stored_with_one_of_the_machines_links_buys_credits(
    client, register, deliver, subscribe, stripe_standin
):
    """GIVEN cab002 sells price_vip through its own link WHEN a dashboard link at price_vip names
    cab002 THEN its units count."""
    stripe_standin.add_price("price_vip", 200)
    vip = register("cab002", price_id="price_vip")
    client.post("/create-payment-link", json={"machine_id": "cab002"}, headers=vip.auth)
    session = stripe_standin.add_checkout_session(
        "cs_vip", [("price_vip", 2)], payment_link="plink_elsewhere", client_reference_id="cab002"
    )
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab002/coinpulse")

    deliver("checkout.session.completed", session)

    assert subscriber.wait_for(1)[0].payload["credits"] == 2


def test_another_deployments_link_at_its_own_price_buys_nothing_here(
    client, cabinet, deliver, subscribe, stripe_standin
):
    """GIVEN a second deployment on the same account with its own price WHEN its link's session
    names cab001 in metadata THEN this deployment records it unattributed."""
    stripe_standin.add_price("price_other_deployment", 75)
    session = stripe_standin.add_checkout_session(
        "cs_neighbour",
        [("price_other_deployment", 1)],
        payment_link="plink_neighbour",
        metadata={"machine_id": "cab001"},
    )
    subscriber = subscribe(COINPULSE)

    answer = deliver("checkout.session.completed", session)

    assert answer.json["result"] == "unattributed"
    assert subscriber.settle() == []


def test_a_full_promotion_code_on_our_link_still_grants_free_play(
    client, cabinet, link_id, deliver, subscribe, stripe_standin
):
    """GIVEN our link and a 100 % promotion code WHEN the session needs no payment THEN the
    units bought are granted, for 0 revenue."""
    session = stripe_standin.add_checkout_session(
        "cs_free",
        [(DEFAULT_PRICE, 2)],
        payment_link=link_id,
        discount=100,
        payment_status="no_payment_required",
    )
    subscriber = subscribe(COINPULSE)

    answer = deliver("checkout.session.completed", session)

    assert answer.json["result"] == "delivered"
    assert subscriber.wait_for(1)[0].payload["credits"] == 2
    state = state_of(client, cabinet)
    assert state["credits"]["granted"] == 2
    assert state["revenue"] == {"usd": 0}


def test_our_own_link_still_needs_no_stripe_call(
    client, cabinet, link_id, deliver, subscribe, stripe_standin
):
    """GIVEN our link WHEN 3 units are paid THEN 3 credits without asking Stripe anything."""
    subscriber = subscribe(COINPULSE)
    stripe_standin.reset_requests()

    deliver("checkout.session.completed", paid("cs_own", link_id, units=3))

    assert subscriber.wait_for(1)[0].payload["credits"] == 3
    assert stripe_standin.requests == []


# --- events for another mode or account -------------------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [{"livemode": True}, {"account": "acct_connected"}],
    ids=["live_event_on_a_test_key", "connected_account"],
)
def test_an_event_for_another_mode_or_account_is_ignored(
    client, cabinet, link_id, subscribe, extra, caplog
):
    """GIVEN a test-mode deployment WHEN a live event, or a connected account's, arrives THEN
    200 ignored with a warning, and nothing changes."""
    subscriber = subscribe(COINPULSE)
    body = event("checkout.session.completed", paid("cs_foreign", link_id), **extra)

    answer = signed_post(client, body)

    assert answer.status_code == 200
    assert answer.json["result"] == "ignored"
    assert subscriber.settle() == []
    assert state_of(client, cabinet)["payments"] == []
    assert any(
        r.levelname == "WARNING" and r.getMessage() == "webhook_ignored" for r in caplog.records
    )


def test_a_test_event_on_a_live_key_is_ignored(make_app, broker, subscribe):
    """GIVEN a deployment with a live key WHEN a test-mode event arrives THEN ignored."""
    live = make_app(STRIPE_API_KEY="sk_live_not_a_real_key")
    client = live.test_client()

    answer = signed_post(
        client,
        event(
            "checkout.session.completed",
            checkout_session(
                id="cs_test_on_live", client_reference_id="cab001", amount_subtotal=50
            ),
        ),
    )

    assert answer.json["result"] == "ignored"
    assert live.extensions["arcade"].store.get_payment("cs_test_on_live") is None


# --- states move forward only -----------------------------------------------------------------
def test_a_failed_bank_debit_never_goes_back_to_pending(client, cabinet, link_id, deliver):
    """GIVEN completed (unpaid) then async_payment_failed WHEN the same completed comes again
    THEN the payment stays payment_failed."""
    session = paid("cs_debit", link_id, payment_status="unpaid")
    deliver("checkout.session.completed", session)
    deliver("checkout.session.async_payment_failed", session)

    answer = deliver("checkout.session.completed", session)

    assert answer.status_code == 200
    assert payment_in(state_of(client, cabinet), "cs_debit")["status"] == "payment_failed"


def test_async_success_before_completed_grants_once(client, cabinet, link_id, deliver, subscribe):
    """GIVEN async_payment_succeeded first WHEN completed (unpaid) arrives late THEN one grant,
    still delivered."""
    subscriber = subscribe(COINPULSE)
    deliver("checkout.session.async_payment_succeeded", paid("cs_async", link_id))

    late = deliver("checkout.session.completed", paid("cs_async", link_id, payment_status="unpaid"))

    assert late.status_code == 200
    assert len(subscriber.settle(0.5)) == 1
    state = state_of(client, cabinet)
    assert payment_in(state, "cs_async")["status"] == "delivered"
    assert state["credits"]["granted"] == 2


# --- refunds and disputes ---------------------------------------------------------------------
def test_a_refund_before_the_grant_is_kept_and_honoured(
    client, cabinet, link_id, deliver, subscribe, stripe_standin, fast_stripe_retries
):
    """GIVEN completed fails while units are counted (Stripe 5xx) WHEN the operator refunds and
    Stripe then retries completed THEN nothing is granted or published, and it shows refunded."""
    session = stripe_standin.add_checkout_session(
        "cs_early_refund",
        [(DEFAULT_PRICE, 2)],
        payment_link=link_id,
        discount=10,
        payment_intent="pi_early_refund",
    )
    subscriber = subscribe(COINPULSE)
    stripe_standin.fail_next(500, count=3)
    assert deliver("checkout.session.completed", session).status_code == 502

    refund = deliver(
        "charge.refunded", charge(payment_intent="pi_early_refund", amount=90, amount_refunded=90)
    )
    retry = deliver("checkout.session.completed", session)

    assert refund.status_code == 200
    assert retry.status_code == 200
    assert retry.json["result"] == "grant_cancelled"
    assert subscriber.settle(0.5) == []
    state = state_of(client, cabinet)
    assert state["credits"] == {"granted": 0, "used": 0, "left": 0}
    assert payment_in(state, "cs_early_refund")["status"] == "refunded"
    assert state["revenue"] in ({}, {"usd": 0})


def test_a_partial_refund_before_the_grant_is_kept_and_the_credits_still_go_out(
    client, cabinet, link_id, deliver, subscribe
):
    """GIVEN a 30-cent refund of a 100-cent payment not yet recorded WHEN its session arrives
    THEN the player still gets what was bought, partially_refunded, revenue 70 (only a full
    refund or a dispute cancels a grant)."""
    subscriber = subscribe(COINPULSE)
    kept = deliver(
        "charge.refunded", charge(payment_intent="pi_cs_part", amount=100, amount_refunded=30)
    )

    deliver("checkout.session.completed", paid("cs_part", link_id))

    assert kept.json["result"] == "refund_kept_for_payment"
    assert subscriber.wait_for(1)[0].payload["credits"] == 2
    state = state_of(client, cabinet)
    assert payment_in(state, "cs_part")["status"] == "partially_refunded"
    assert payment_in(state, "cs_part")["amount_refunded"] == 30
    assert state["credits"]["granted"] == 2
    assert state["revenue"] == {"usd": 70}


def test_a_refund_larger_than_the_payment_counts_only_what_was_paid(
    client, cabinet, link_id, deliver, subscribe
):
    """GIVEN a delivered 100-cent payment WHEN a refund of 99 999 arrives THEN revenue is 0,
    never negative."""
    subscriber = subscribe(COINPULSE)
    deliver("checkout.session.completed", paid("cs_small", link_id))
    subscriber.wait_for(1)

    deliver(
        "charge.refunded", charge(payment_intent="pi_cs_small", amount=100, amount_refunded=99_999)
    )

    state = state_of(client, cabinet)
    assert state["revenue"] == {"usd": 0}
    assert payment_in(state, "cs_small")["amount_refunded"] == 100


def test_a_refund_while_the_coinpulse_is_undelivered_cancels_the_grant(
    make_app, fresh_broker, subscribe, open_shop
):
    """GIVEN a grant stored while the broker is down (503) WHEN it is refunded and Stripe
    retries completed after the broker is back THEN nothing is published and the books drop."""
    shop = open_shop(make_app(on=fresh_broker))
    fresh_broker.stop()
    assert shop.pay("cs_down", amount_subtotal=100).status_code == 503
    refund = signed_post(
        shop.client,
        event(
            "charge.refunded", charge(payment_intent="pi_cs_down", amount=100, amount_refunded=100)
        ),
    )
    fresh_broker.start()
    subscriber = subscribe(COINPULSE, on=fresh_broker)

    retry = shop.pay("cs_down", amount_subtotal=100)

    assert refund.json["result"] == "refund_recorded"
    assert retry.status_code == 200
    assert subscriber.settle(0.5) == []
    state = shop.state()
    assert state["credits"] == {"granted": 0, "used": 0, "left": 0}
    assert payment_in(state, "cs_down")["status"] == "refunded"
    assert state["revenue"] == {"usd": 0}


def test_a_refund_after_delivery_keeps_the_credits_and_lowers_revenue(
    client, cabinet, link_id, deliver, subscribe
):
    """GIVEN a delivered grant of 2 credits WHEN 50 of 100 cents come back THEN 2 credits stay
    and revenue is 50; the same refund delivered twice counts once."""
    subscriber = subscribe(COINPULSE)
    deliver("checkout.session.completed", paid("cs_later", link_id))
    subscriber.wait_for(1)
    half = charge(payment_intent="pi_cs_later", amount=100, amount_refunded=50)

    first = deliver("charge.refunded", half)
    again = deliver("charge.refunded", half)

    assert (first.json["result"], again.json["result"]) == (
        "refund_recorded",
        "refund_already_recorded",
    )
    state = state_of(client, cabinet)
    assert state["credits"]["granted"] == 2
    assert state["revenue"] == {"usd": 50}
    assert payment_in(state, "cs_later")["status"] == "partially_refunded"


def test_a_dispute_then_a_refund_stays_disputed_and_lowers_revenue(
    client, cabinet, link_id, deliver, subscribe
):
    """GIVEN a delivered grant WHEN the charge is disputed, then refunded THEN disputed stays
    shown, nothing more is published and revenue drops by the refund."""
    subscriber = subscribe(COINPULSE)
    deliver("checkout.session.completed", paid("cs_disputed", link_id))
    subscriber.wait_for(1)

    disputed = deliver(
        "charge.dispute.created",
        dispute(charge="ch_1", payment_intent="pi_cs_disputed", amount=100),
    )
    refunded = deliver(
        "charge.refunded", charge(payment_intent="pi_cs_disputed", amount=100, amount_refunded=100)
    )

    assert disputed.json["result"] == "dispute_recorded"
    assert refunded.json["result"] == "refund_recorded"
    assert len(subscriber.settle(0.3)) == 1
    state = state_of(client, cabinet)
    assert payment_in(state, "cs_disputed")["status"] == "disputed"
    assert state["revenue"] == {"usd": 0}
    assert state["credits"]["granted"] == 2


def test_a_dispute_before_delivery_cancels_the_grant(make_app, fresh_broker, subscribe, open_shop):
    """GIVEN a grant waiting for the broker WHEN the charge is disputed THEN it is never
    published and shows disputed."""
    shop = open_shop(make_app(on=fresh_broker))
    fresh_broker.stop()
    shop.pay("cs_chargeback")
    signed_post(
        shop.client,
        event(
            "charge.dispute.created",
            dispute(charge="ch_2", payment_intent=_intent_of(shop, "cs_chargeback"), amount=50),
        ),
    )
    fresh_broker.start()
    subscriber = subscribe(COINPULSE, on=fresh_broker)

    shop.pay("cs_chargeback")

    assert subscriber.settle(0.5) == []
    state = shop.state()
    assert payment_in(state, "cs_chargeback")["status"] == "disputed"
    assert state["credits"]["granted"] == 0


def test_a_refund_for_another_machines_payment_changes_only_that_machine(
    client, register, deliver, subscribe
):
    """GIVEN payments on cab001 and cab002 WHEN cab002's is refunded THEN cab001's books stay."""
    one, two = register("cab001"), register("cab002")
    links = {
        c.machine_id: client.post(
            "/create-payment-link", json={"machine_id": c.machine_id}, headers=c.auth
        ).json["payment_link_id"]
        for c in (one, two)
    }
    subscriber = subscribe()
    deliver("checkout.session.completed", paid("cs_one", links["cab001"]))
    deliver("checkout.session.completed", paid("cs_two", links["cab002"]))
    subscriber.wait_for(2)

    deliver("charge.refunded", charge(payment_intent="pi_cs_two", amount=100, amount_refunded=100))

    assert state_of(client, one)["revenue"] == {"usd": 100}
    assert payment_in(state_of(client, one), "cs_one")["status"] == "delivered"
    assert state_of(client, two)["revenue"] == {"usd": 0}
    assert payment_in(state_of(client, two), "cs_two")["status"] == "refunded"


def _intent_of(shop, session_id: str) -> str:
    return shop.app.extensions["arcade"].store.get_payment(session_id).payment_intent


# --- what a signed event cannot make us do ----------------------------------------------------
MALFORMED_SESSIONS = {
    "huge_amount_total": {"amount_total": 2**70},
    "huge_subtotal": {"amount_subtotal": 50 * 10**20},
    "negative_amount_total": {"amount_total": -5000},
    "string_amount_total": {"amount_total": "100"},
    "float_created": {"created": 1e15},
    "negative_created": {"created": -(10**12)},
    "metadata_string": {"metadata": "cab001"},
    "total_details_string": {"total_details": "none"},
    "currency_number": {"currency": 840},
    "payment_intent_number": {"payment_intent": 7},
}


@pytest.mark.parametrize("change", MALFORMED_SESSIONS.values(), ids=MALFORMED_SESSIONS)
def test_a_signed_session_with_a_value_stripe_never_sends_is_a_400(
    client, cabinet, link_id, subscribe, change, caplog
):
    """GIVEN a correctly signed session with one malformed field WHEN delivered THEN 400
    invalid_event naming the field, nothing stored or published, no ERROR line."""
    subscriber = subscribe(COINPULSE)
    session = paid("cs_odd", link_id) | change

    answer = signed_post(client, event("checkout.session.completed", session))

    assert answer.status_code == 400
    assert answer.json["code"] == "invalid_event"
    assert subscriber.settle() == []
    assert state_of(client, cabinet)["payments"] == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize(
    "data",
    [[], "text", {"object": "text"}, {"object": []}],
    ids=["data_list", "data_string", "object_string", "object_list"],
)
@pytest.mark.parametrize("event_type", ["checkout.session.completed", "charge.refunded"])
def test_a_signed_event_whose_object_is_not_an_object_is_a_400(client, event_type, data):
    body = event(event_type, {}) | {"data": data}

    answer = signed_post(client, body)

    assert (answer.status_code, answer.json["code"]) == (400, "invalid_event")


def test_a_refund_with_a_huge_amount_is_a_400(client, cabinet, link_id, deliver):
    deliver("checkout.session.completed", paid("cs_big_refund", link_id))

    answer = deliver(
        "charge.refunded",
        charge(payment_intent="pi_cs_big_refund", amount=100, amount_refunded=2**70),
    )

    assert (answer.status_code, answer.json["code"]) == (400, "invalid_event")
    assert state_of(client, cabinet)["revenue"] == {"usd": 100}


@pytest.mark.parametrize(
    "extra",
    [{"livemode": None}, {"livemode": "false"}, {"account": ""}],
    ids=["livemode_missing", "livemode_string", "account_empty"],
)
def test_an_event_that_does_not_say_its_mode_and_account_plainly_is_ignored(
    client, cabinet, link_id, subscribe, extra
):
    """GIVEN a test-mode key WHEN an event's livemode is not the boolean false, or it carries an
    account field at all THEN it is ignored."""
    subscriber = subscribe(COINPULSE)
    body = event("checkout.session.completed", paid("cs_unclear", link_id)) | extra

    answer = signed_post(client, body)

    assert answer.json["result"] == "ignored"
    assert subscriber.settle() == []


def test_an_item_added_to_our_link_is_counted_from_the_line_items(
    client, cabinet, link_id, deliver, subscribe, stripe_standin
):
    """GIVEN our link with a 20-dollar item added in the dashboard WHEN one credit and that item
    are bought THEN 1 credit (2050 / 50 would say 41)."""
    stripe_standin.add_price("price_tshirt", 2000)
    session = stripe_standin.add_checkout_session(
        "cs_cross_sell", [(DEFAULT_PRICE, 1), ("price_tshirt", 1)], payment_link=link_id
    )
    subscriber = subscribe(COINPULSE)

    deliver("checkout.session.completed", session)

    assert subscriber.wait_for(1)[0].payload["credits"] == 1


def test_a_game_over_that_used_a_credit_later_cancelled_counts_as_a_game_without_credit(
    make_app, fresh_broker, open_shop, subscribe
):
    """GIVEN a delivered credit and a second grant stuck while the broker is down WHEN two
    game overs are played and the stuck grant is refunded THEN used never exceeds granted."""
    shop = open_shop(make_app(on=fresh_broker))
    shop.pay("cs_first")
    fresh_broker.stop()
    shop.pay("cs_stuck")
    fresh_broker.start()
    for _ in range(2):
        assert (
            shop.client.post(
                "/gameover", json={"machine_id": "cab001"}, headers=shop.auth
            ).status_code
            == 200
        )

    signed_post(
        shop.client,
        event(
            "charge.refunded", charge(payment_intent="pi_cs_stuck", amount=50, amount_refunded=50)
        ),
    )

    state = shop.state()
    assert state["credits"] == {"granted": 1, "used": 1, "left": 0}
    assert state["games_without_credit"] == 1


@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")
def test_a_refund_while_the_broker_is_being_reached_stops_the_coinpulse(
    make_app, fresh_broker, open_shop, subscribe
):
    """GIVEN a grant waiting for the broker WHEN Stripe's retry is still connecting to a slow
    broker and the refund lands meanwhile THEN the coinpulse is never sent."""
    shop = open_shop(make_app(on=fresh_broker))
    fresh_broker.stop()
    assert shop.pay("cs_slow", amount_subtotal=100).status_code == 503
    fresh_broker.start()
    fresh_broker.freeze()
    answers: list = []
    retry = threading.Thread(
        target=lambda: answers.append(shop.pay("cs_slow", amount_subtotal=100))
    )
    retry.start()
    time.sleep(0.3)
    refund = signed_post(
        shop.app.test_client(),
        event(
            "charge.refunded", charge(payment_intent="pi_cs_slow", amount=100, amount_refunded=100)
        ),
    )
    fresh_broker.thaw()
    retry.join(10)
    subscriber = subscribe(COINPULSE, on=fresh_broker)

    assert refund.json["result"] == "refund_recorded"
    assert answers and answers[0].status_code == 200
    assert answers[0].json["result"] == "grant_cancelled"
    assert subscriber.settle(0.5) == []
    assert shop.state()["credits"]["granted"] == 0
