"""The whole loop a player sees: QR link → paid webhook → one coinpulse → game over."""

from __future__ import annotations

from tests.support.app import DEFAULT_PRICE, TOPIC_PREFIX
from tests.support.stripe_standin import checkout_session


def test_paid_checkout_on_our_link_publishes_one_coinpulse_with_the_credits(
    client, cabinet, subscribe, deliver, stripe_standin
):
    """GIVEN a machine's payment link WHEN a player pays for 4 units THEN 4 credits arrive."""
    link = client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth
    ).json
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")
    stripe_standin.reset_requests()

    session = checkout_session(
        id="cs_test_four",
        payment_link=link["payment_link_id"],
        client_reference_id="cab001",
        amount_subtotal=200,
    )
    answer = deliver("checkout.session.completed", session)

    assert answer.status_code == 200
    [pulse] = subscriber.wait_for(1)
    assert pulse.qos == 1 and not pulse.retain
    assert pulse.payload["machineId"] == "cab001"
    assert pulse.payload["credits"] == 4
    assert pulse.payload["paymentId"] == "cs_test_four"
    assert pulse.payload["amount"] == 200 and pulse.payload["currency"] == "usd"
    assert pulse.payload["timestamp"].endswith("Z")
    assert stripe_standin.requests == []  # units came from the amount: no Stripe call
    assert subscriber.settle() == [pulse]


def test_game_over_publishes_gameover_and_the_state_follows(client, cabinet, subscribe, deliver):
    """GIVEN 2 credits delivered WHEN one game ends THEN one is used and a new game starts."""
    link = client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth
    ).json
    deliver(
        "checkout.session.completed",
        checkout_session(id="cs_two", payment_link=link["payment_link_id"], amount_subtotal=100),
    )
    playing = client.get("/machines/cab001", headers=cabinet.auth).json
    assert playing["state"] == "playing"
    assert playing["credits"] == {"granted": 2, "used": 0, "left": 2}
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/gameover")

    answer = client.post("/gameover", json={"machine_id": "cab001"}, headers=cabinet.auth)

    assert answer.status_code == 200
    assert answer.json == {"message": "Game over signal sent", "credits_per_game": 1}
    [message] = subscriber.wait_for(1)
    assert message.payload["machineId"] == "cab001"
    assert message.payload["status"] == "game_over"
    after = client.get("/machines/cab001", headers=cabinet.auth).json
    assert after["credits"] == {"granted": 2, "used": 1, "left": 1}
    assert after["state"] == "playing"
    assert after["session"]["id"] != playing["session"]["id"]
    assert after["payments"][0]["id"] == "cs_two"
    assert after["payments"][0]["status"] == "delivered"
    assert after["revenue"] == {"usd": 100}
    client.post("/gameover", json={"machine_id": "cab001"}, headers=cabinet.auth)
    idle = client.get("/machines/cab001", headers=cabinet.auth).json
    assert idle["state"] == "idle" and idle["session"] is None
    assert idle["credits"]["left"] == 0


def test_default_price_link_is_made_once(client, cabinet, stripe_standin):
    """GIVEN a link already made WHEN asked again THEN the same URL, no new Stripe object."""
    first = client.post("/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth)
    second = client.post(
        "/create-payment-link",
        json={"machine_id": "cab001", "price_id": DEFAULT_PRICE},
        headers=cabinet.auth,
    )

    assert first.status_code == 200 and second.status_code == 200
    assert first.json == second.json
    assert first.json["url"].endswith("?client_reference_id=cab001")
    assert len(stripe_standin.payment_links) == 1
