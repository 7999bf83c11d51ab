"""One grant per Checkout Session, one coinpulse per grant, whatever Stripe and the broker do."""

from __future__ import annotations

import threading

import pytest

from tests.support.app import DEFAULT_PRICE, TOPIC_PREFIX, signed_post
from tests.support.stripe_standin import charge, checkout_session, event

# paho leaves the socket of a connection to a stopped or refusing broker to the collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")


def our_link(client, cabinet) -> str:
    return client.post(
        "/create-payment-link", json={"machine_id": cabinet.machine_id}, headers=cabinet.auth
    ).json["payment_link_id"]


def state_of(client, cabinet) -> dict:
    return client.get(f"/machines/{cabinet.machine_id}", headers=cabinet.auth).json


def test_same_event_twice_gives_one_coinpulse(client, cabinet, subscribe, deliver):
    """GIVEN a delivered payment WHEN Stripe delivers the event again THEN nothing new."""
    session = checkout_session(
        id="cs_twice", payment_link=our_link(client, cabinet), amount_subtotal=100
    )
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")

    first = deliver("checkout.session.completed", session, event_id="evt_same")
    second = deliver("checkout.session.completed", session, event_id="evt_same")

    assert first.status_code == second.status_code == 200
    assert second.json["result"] == "already_delivered"
    assert len(subscriber.settle()) == 1
    assert state_of(client, cabinet)["credits"]["granted"] == 2


def test_six_concurrent_deliveries_give_one_coinpulse(app, client, cabinet, subscribe, deliver):
    """GIVEN one paid event WHEN six deliveries race THEN one grant and one coinpulse."""
    session = checkout_session(
        id="cs_race", payment_link=our_link(client, cabinet), amount_subtotal=150
    )
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")
    start = threading.Barrier(6)
    answers = []

    def race() -> None:
        own_client = app.test_client()
        start.wait()
        answers.append(
            deliver("checkout.session.completed", session, event_id="evt_race", via=own_client)
        )

    threads = [threading.Thread(target=race) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [a.status_code for a in answers] == [200] * 6
    assert [m.payload["credits"] for m in subscriber.settle(0.5)] == [3]
    assert state_of(client, cabinet)["credits"] == {"granted": 3, "used": 0, "left": 3}


def test_completed_then_async_succeeded_grant_once(client, cabinet, subscribe, deliver):
    """GIVEN a paid session WHEN both 'completed' and 'async_payment_succeeded' arrive THEN one."""
    session = checkout_session(
        id="cs_mixed", payment_link=our_link(client, cabinet), amount_subtotal=100
    )
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")

    deliver("checkout.session.completed", session)
    deliver("checkout.session.async_payment_succeeded", session)

    assert len(subscriber.settle()) == 1
    assert state_of(client, cabinet)["credits"]["granted"] == 2


def test_broker_down_answers_503_and_the_retry_publishes_the_same_grant(
    make_app, fresh_broker, subscribe, open_shop
):
    """GIVEN the broker stopped WHEN paid THEN 503 and stored; restarted, the retry delivers."""
    shop = open_shop(make_app(on=fresh_broker))
    fresh_broker.stop()

    during = shop.pay("cs_outage", amount_subtotal=100)

    assert during.status_code == 503
    assert during.json["code"] == "broker_unavailable"
    stored = shop.app.extensions["arcade"].store.get_payment("cs_outage")
    assert stored.status == "pending_delivery" and stored.credits == 2
    assert shop.state()["payments"][0]["status"] == "pending_delivery"

    fresh_broker.start()
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse", on=fresh_broker)
    retry = shop.pay("cs_outage", amount_subtotal=100)
    again = shop.pay("cs_outage", amount_subtotal=100)

    assert retry.status_code == 200 and again.status_code == 200
    [pulse] = subscriber.settle(0.5)
    assert pulse.payload["paymentId"] == "cs_outage" and pulse.payload["credits"] == 2
    assert shop.state()["credits"]["granted"] == 2


def test_stripe_failure_while_counting_units_answers_5xx_and_grants_later(
    client, cabinet, subscribe, deliver, stripe_standin, fast_stripe_retries
):
    """GIVEN line items needed WHEN Stripe fails THEN 502, nothing granted; the retry grants."""
    session = stripe_standin.add_checkout_session(
        "cs_flaky", [(DEFAULT_PRICE, 2)], client_reference_id="cab001"
    )
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")
    stripe_standin.fail_next(500, count=3)

    failed = deliver("checkout.session.completed", session)

    assert failed.status_code == 502
    assert failed.json["code"] == "stripe_error"
    assert state_of(client, cabinet)["credits"]["granted"] == 0
    assert deliver("checkout.session.completed", session).status_code == 200
    assert deliver("checkout.session.completed", session).status_code == 200
    assert [m.payload["credits"] for m in subscriber.settle()] == [2]


def test_restart_between_payment_and_game_over_loses_nothing(make_app, stripe_standin, subscribe):
    """GIVEN credits granted by one process WHEN another serves the game over THEN it counts."""
    first = make_app()
    _, token = first.extensions["arcade"].registry.register("cab001")
    auth = {"Authorization": f"Bearer {token}"}
    client = first.test_client()
    link_id = client.post("/create-payment-link", json={"machine_id": "cab001"}, headers=auth).json[
        "payment_link_id"
    ]

    signed_post(
        client,
        event(
            "checkout.session.completed",
            checkout_session(id="cs_restart", payment_link=link_id, amount_subtotal=100),
        ),
    )
    first.extensions["arcade"].publisher.close()
    first.extensions["arcade"].store.close()

    second = make_app().test_client()
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/gameover")
    assert second.post("/gameover", json={"machine_id": "cab001"}, headers=auth).status_code == 200

    assert len(subscriber.wait_for(1)) == 1
    state = second.get("/machines/cab001", headers=auth).json
    assert state["credits"] == {"granted": 2, "used": 1, "left": 1}
    assert state["state"] == "playing"
    assert len(stripe_standin.payment_links) == 1


@pytest.mark.parametrize("path", ["/gameover"])
def test_game_over_with_the_broker_down_answers_503_and_uses_nothing(make_app, fresh_broker, path):
    """GIVEN the broker stopped WHEN a game ends THEN 503 and no credit is used."""
    app = make_app(on=fresh_broker)
    _, token = app.extensions["arcade"].registry.register("cab001")
    auth = {"Authorization": f"Bearer {token}"}
    fresh_broker.stop()

    answer = app.test_client().post(path, json={"machine_id": "cab001"}, headers=auth)

    assert answer.status_code == 503
    assert app.extensions["arcade"].store.get_machine_state("cab001").credits_used == 0


def test_game_over_with_no_credit_left_is_recorded_and_uses_nothing(client, cabinet):
    """GIVEN no credits WHEN a game over arrives THEN it is counted apart, credits stay 0."""
    answer = client.post("/gameover", json={"machine_id": "cab001"}, headers=cabinet.auth)

    assert answer.status_code == 200
    state = state_of(client, cabinet)
    assert state["credits"] == {"granted": 0, "used": 0, "left": 0}
    assert state["games_without_credit"] == 1
    assert state["state"] == "idle"


def test_a_game_over_retried_with_its_idempotency_key_counts_once(
    client, cabinet, subscribe, deliver
):
    """GIVEN 2 credits WHEN a cabinet retries one game over with its key THEN one credit used."""
    deliver(
        "checkout.session.completed",
        checkout_session(
            id="cs_keyed", payment_link=our_link(client, cabinet), amount_subtotal=100
        ),
    )
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/gameover")
    keyed = {**cabinet.auth, "Idempotency-Key": "cab001-2026-11-29T10:00:00.000000Z-1"}

    first = client.post("/gameover", json={"machine_id": "cab001"}, headers=keyed)
    retry = client.post("/gameover", json={"machine_id": "cab001"}, headers=keyed)

    assert first.status_code == retry.status_code == 200
    assert retry.json == {"message": "Game over signal sent", "credits_per_game": 1}
    assert len(subscriber.settle()) == 1
    assert state_of(client, cabinet)["credits"] == {"granted": 2, "used": 1, "left": 1}
    other = {**cabinet.auth, "Idempotency-Key": "cab001-2026-11-29T10:05:00.000000Z-2"}
    assert client.post("/gameover", json={"machine_id": "cab001"}, headers=other).status_code == 200
    assert state_of(client, cabinet)["credits"] == {"granted": 2, "used": 2, "left": 0}


def test_a_malformed_idempotency_key_is_refused(client, cabinet):
    """GIVEN a key with spaces WHEN a game over is posted THEN 400 and nothing used."""
    answer = client.post(
        "/gameover",
        json={"machine_id": "cab001"},
        headers={**cabinet.auth, "Idempotency-Key": "two words"},
    )

    assert answer.status_code == 400
    assert answer.json["code"] == "invalid_idempotency_key"


def reads_after_a_rival_commits_first(app, monkeypatch, rival) -> list[str]:
    """Arm the store so that the next payment commit is preceded by ``rival()`` (another
    request doing the same, all the way, between this one's read and its write); return the
    payment and PaymentIntent reads made after the rival finished (filled in as they come)."""
    store = app.extensions["arcade"].store
    real_commit = store.commit_payment
    reads: list[str] = []
    raced = threading.Event()

    def commit_after_a_rival(*args, **kwargs):
        if not raced.is_set():
            raced.set()
            rival()
            reads.clear()
        return real_commit(*args, **kwargs)

    def counted(read):
        def counted_read(key):
            reads.append(key)
            return read(key)

        return counted_read

    monkeypatch.setattr(store, "commit_payment", commit_after_a_rival)
    monkeypatch.setattr(store, "get_payment", counted(store.get_payment))
    monkeypatch.setattr(store, "get_intent", counted(store.get_intent))
    return reads


def test_a_delivery_that_loses_the_race_decides_from_the_winner_without_reading_again(
    app, client, cabinet, subscribe, deliver, monkeypatch
):
    """GIVEN a delivery of an event WHEN another delivery of it is stored first, between this
    one's read and its write THEN this one is answered from the payment that won, as the
    refused write returned it: no second read, one grant, one coinpulse."""
    session = checkout_session(
        id="cs_lost", payment_link=our_link(client, cabinet), amount_subtotal=100
    )
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")

    def rival() -> None:
        answer = deliver("checkout.session.completed", session, event_id="evt_rival")
        assert answer.json["result"] == "delivered"

    reads_after_the_race = reads_after_a_rival_commits_first(app, monkeypatch, rival)

    answer = deliver("checkout.session.completed", session, event_id="evt_loser")

    assert answer.status_code == 200
    assert answer.json["result"] == "already_delivered"
    assert reads_after_the_race == []
    assert len(subscriber.settle()) == 1
    assert state_of(client, cabinet)["credits"]["granted"] == 2


def test_an_acknowledgement_that_loses_the_race_is_answered_from_the_winner(
    app, client, cabinet, deliver, monkeypatch
):
    """GIVEN a delivered grant WHEN the cabinet's acknowledgement is sent twice and the other
    copy is stored first THEN this one answers the credited payment that won, with no second
    read of it."""
    session = checkout_session(
        id="cs_ack_race", payment_link=our_link(client, cabinet), amount_subtotal=100
    )
    assert deliver("checkout.session.completed", session).json["result"] == "delivered"

    def acknowledge():
        body = {"payment_id": "cs_ack_race"}
        return client.post("/machines/cab001/credits/ack", json=body, headers=cabinet.auth)

    def rival() -> None:
        assert acknowledge().status_code == 200

    reads_after_the_race = reads_after_a_rival_commits_first(app, monkeypatch, rival)

    answer = acknowledge()

    assert answer.status_code == 200
    assert reads_after_the_race == []
    assert (
        client.get("/machines/cab001", headers=cabinet.auth).json["payments"][0]["status"]
        == "credited"
    )


def test_a_refund_that_loses_the_race_is_answered_from_the_winner(
    app, client, cabinet, deliver, monkeypatch
):
    """GIVEN a delivered grant WHEN Stripe's charge.refunded comes twice and the other copy is
    stored first THEN this one is answered from the refunded payment that won: recorded once,
    no second read of the payment or its PaymentIntent."""
    session = checkout_session(
        id="cs_refund_race",
        payment_link=our_link(client, cabinet),
        amount_subtotal=100,
        payment_intent="pi_refund_race",
    )
    assert deliver("checkout.session.completed", session).json["result"] == "delivered"
    refunded = charge(payment_intent="pi_refund_race", amount=100, amount_refunded=100)

    def rival() -> None:
        answer = deliver("charge.refunded", refunded, event_id="evt_refund_rival")
        assert answer.json["result"] == "refund_recorded"

    reads_after_the_race = reads_after_a_rival_commits_first(app, monkeypatch, rival)

    answer = deliver("charge.refunded", refunded, event_id="evt_refund_loser")

    assert answer.status_code == 200
    assert answer.json["result"] == "refund_already_recorded"
    assert reads_after_the_race == []
    assert (
        client.get("/machines/cab001", headers=cabinet.auth).json["payments"][0]["status"]
        == "refunded"
    )
