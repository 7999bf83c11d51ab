"""A game over counts once per Idempotency-Key for 24 hours, and a 503 counts nothing; it
counts with the credits per game the cabinet says it cost, else the machine's.

On SQLite and DynamoDB alike, through the real endpoint and a real TLS broker.
"""

from __future__ import annotations

import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.app import ADMIN_KEY, TOPIC_PREFIX

GAMEOVER = f"{TOPIC_PREFIX}/cab001/gameover"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def app(build):
    """Build the app on a fresh store of each kind."""
    return build()


@pytest.fixture
def credited(app, open_shop):
    """Give cab001 twenty credits (ten payments of two units)."""
    shop = open_shop(app)
    for number in range(10):
        assert shop.pay(f"cs_credit_{number}", amount_subtotal=100).status_code == 200
    return shop


def game_over(shop, key: str | None = None, client=None, **fields):
    headers = dict(shop.auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    return (client or shop.client).post(
        "/gameover", json={"machine_id": shop.machine_id, **fields}, headers=headers
    )


def set_credits_per_game(shop, credits: int) -> None:
    path = f"/machines/{shop.machine_id}"
    answer = shop.client.patch(path, json={"credits_per_game": credits}, headers=ADMIN)
    assert answer.status_code == 200


def test_a_key_is_remembered_whatever_came_between(credited, subscribe):
    """GIVEN keys K1 then K2 WHEN K1 comes again THEN 2 credits used, two gameover messages."""
    subscriber = subscribe(GAMEOVER)

    answers = [game_over(credited, key) for key in ("K1", "K2", "K1")]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert credited.state()["credits"]["used"] == 2
    assert len(subscriber.settle(0.5)) == 2


def test_ten_keys_sent_six_times_at_once_use_ten_credits(credited):
    """GIVEN 10 keys WHEN each is posted by 6 concurrent requests THEN 10 credits are used;
    a copy that overlaps the one still sending is told 409 (retry), and its retry is a 200."""
    keys = [f"game-{n}" for n in range(10)] * 6

    def post(key: str) -> tuple[str, int]:
        return key, game_over(credited, key, client=credited.app.test_client()).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(post, keys))

    assert {code for _, code in answers} <= {200, 409}
    assert {key for key, code in answers if code == 200} == set(keys)
    assert all(game_over(credited, key).status_code == 200 for key in set(keys))
    state = credited.state()
    assert state["credits"]["used"] == 10
    assert state["credits"]["left"] == 10


def test_game_overs_without_keys_each_count(credited):
    """GIVEN no Idempotency-Key WHEN three game overs arrive THEN three credits are used."""
    for _ in range(3):
        assert game_over(credited).status_code == 200

    assert credited.state()["credits"]["used"] == 3


def test_a_game_over_the_broker_did_not_acknowledge_counts_nothing_and_its_retry_counts_once(
    make_app, fresh_broker, open_shop, subscribe
):
    """GIVEN credits and a stopped broker WHEN a keyed game over answers 503 THEN nothing is used;
    the retry with the same key after the broker is back counts once."""
    shop = open_shop(make_app(on=fresh_broker))
    shop.pay("cs_two", amount_subtotal=100)
    fresh_broker.stop()

    failed = game_over(shop, "K-retry")
    unkeyed = game_over(shop)

    assert (failed.status_code, unkeyed.status_code) == (503, 503)
    assert shop.state()["credits"] == {"granted": 2, "used": 0, "left": 2}
    assert shop.state()["state"] == "playing"
    fresh_broker.start()
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/gameover", on=fresh_broker)
    assert game_over(shop, "K-retry").status_code == 200
    assert game_over(shop, "K-retry").status_code == 200
    assert shop.state()["credits"] == {"granted": 2, "used": 1, "left": 1}
    assert len(subscriber.settle(0.5)) == 1


def test_a_store_that_fails_publishes_no_gameover(
    make_app, moto_endpoint, dynamodb_table, dynamodb_client, open_shop, subscribe, monkeypatch
):
    """GIVEN a DynamoDB store that disappears WHEN a game over arrives THEN 503 and no gameover
    message reaches the broker (the state is written before anything is published)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    app = make_app(DATABASE_URL=f"dynamodb://{dynamodb_table}")
    store = app.extensions["arcade"].store
    store.create_table()
    shop = open_shop(app)
    shop.pay("cs_one")
    subscriber = subscribe(GAMEOVER)
    dynamodb_client.delete_table(TableName=dynamodb_table)

    answer = game_over(shop, "K-store")

    assert answer.status_code == 503
    assert subscriber.settle(0.5) == []
    store.create_table()  # for the fixture's clean-up


# paho leaves the socket of a connection to a frozen broker to the garbage collector.
@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")
def test_a_key_retried_on_another_instance_while_the_first_still_sends_counts_once(
    make_app, broker, fresh_broker, open_shop, subscribe
):
    """GIVEN two instances on one store, the first with a frozen broker WHEN a keyed game over
    hangs there and the cabinet retries it on the second THEN the retry is told 409 while the
    first still sends; after the first answers 503 and takes it back, the retry counts once."""
    healthy = make_app()
    frozen = make_app(on=fresh_broker)
    shop = open_shop(healthy)
    shop.pay("cs_two", amount_subtotal=100)
    frozen.test_client().post("/gameover", json={"machine_id": "cab001"}, headers=shop.auth)
    fresh_broker.freeze()
    subscriber = subscribe(GAMEOVER)
    answers: dict[str, int] = {}

    def first_attempt() -> None:
        client = frozen.test_client()
        answers["first"] = game_over(shop, "K-race", client=client).status_code

    thread = threading.Thread(target=first_attempt)
    thread.start()
    time.sleep(0.5)
    answers["during"] = game_over(shop, "K-race").status_code
    thread.join()
    fresh_broker.thaw()
    answers["after"] = game_over(shop, "K-race").status_code
    answers["again"] = game_over(shop, "K-race").status_code

    assert answers == {"first": 503, "during": 409, "after": 200, "again": 200}
    assert shop.state()["credits"]["used"] == 2
    assert len(subscriber.settle(0.5)) == 1
    gc.collect()


# --- what a game cost -------------------------------------------------------------------------
def test_the_reference_cabinets_body_uses_the_machines_credits_per_game(credited):
    """GIVEN a machine of 2 credits a game WHEN a game over says only its machine_id THEN it
    uses 2 credits, and the answer says what a game costs."""
    set_credits_per_game(credited, 2)

    answer = game_over(credited)

    assert answer.status_code == 200
    assert answer.json == {"message": "Game over signal sent", "credits_per_game": 2}
    assert credited.state()["credits"] == {"granted": 20, "used": 2, "left": 18}


def test_a_game_over_counts_with_what_the_game_cost_on_the_cabinet(credited):
    """GIVEN a machine now of 1 credit a game WHEN a game over says it cost 3 THEN it uses 3,
    and the answer says the machine's 1."""
    answer = game_over(credited, credits_per_game=3)

    assert answer.json == {"message": "Game over signal sent", "credits_per_game": 1}
    assert credited.state()["credits"] == {"granted": 20, "used": 3, "left": 17}


def test_a_replayed_game_over_counts_once_with_what_its_first_sending_said(credited):
    """GIVEN a game over with a key that said 2 credits a game WHEN it comes again saying 5, or
    nothing THEN it still counts once, with 2."""
    set_credits_per_game(credited, 4)

    answers = [
        game_over(credited, "K-cost", credits_per_game=2),
        game_over(credited, "K-cost", credits_per_game=5),
        game_over(credited, "K-cost"),
    ]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.json["credits_per_game"] for a in answers} == {4}
    assert credited.state()["credits"] == {"granted": 20, "used": 2, "left": 18}


@pytest.mark.parametrize("credits_per_game", [0, -1, 101, "2", True, 1.5, [2]])
def test_a_game_over_with_a_bad_credits_per_game_is_a_400_and_counts_nothing(
    credited, credits_per_game
):
    answer = game_over(credited, "K-bad", credits_per_game=credits_per_game)

    assert (answer.status_code, answer.json["code"]) == (400, "invalid_credits_per_game")
    assert answer.json["error"] == "credits_per_game must be a whole number from 1 to 100"
    assert credited.state()["credits"]["used"] == 0
