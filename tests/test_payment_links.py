"""Payment links: one per machine, price and quantity, made once at Stripe and reused."""

from __future__ import annotations

import threading

import pytest

from tests.support.app import ADMIN_KEY, DEFAULT_PRICE

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def ask_link(client, cabinet, **fields):
    return client.post(
        "/create-payment-link",
        json={"machine_id": cabinet.machine_id, **fields},
        headers=cabinet.auth,
    )


def link_creations(stripe_standin):
    """Return the recorded POST /v1/payment_links requests."""
    return stripe_standin.requests_to("POST", "/v1/payment_links")


def test_the_answer_has_exactly_the_contracts_fields(client, cabinet, stripe_standin):
    """GIVEN a machine WHEN its link is asked THEN url, ids and QR paths, nothing else."""
    answer = ask_link(client, cabinet)

    assert answer.status_code == 200
    assert answer.mimetype == "application/json"
    body = answer.json
    assert set(body) == {"url", "machine_id", "payment_link_id", "qr_png", "qr_svg"}
    [made] = stripe_standin.payment_links
    assert body["machine_id"] == "cab001"
    assert body["payment_link_id"] == made["id"]
    assert body["payment_link_id"].startswith("plink_")
    assert body["url"] == f"{made['url']}?client_reference_id=cab001"
    assert body["url"].startswith("https://buy.stripe.com/")
    assert body["qr_png"] == "/machines/cab001/qr.png"
    assert body["qr_svg"] == "/machines/cab001/qr.svg"


def test_asking_again_gives_the_same_link_and_makes_no_new_stripe_object(
    client, cabinet, stripe_standin
):
    """GIVEN a link made WHEN asked three more times THEN the same answer, one Stripe create."""
    answers = [ask_link(client, cabinet).json for _ in range(4)]

    assert all(answer == answers[0] for answer in answers)
    assert len(stripe_standin.payment_links) == 1
    assert len(link_creations(stripe_standin)) == 1


def test_the_link_is_remembered_by_a_new_process(make_app, cabinet, stripe_standin):
    """GIVEN a link made by one app WHEN another app on the same store is asked THEN no new link."""
    first = ask_link(make_app().test_client(), cabinet).json
    stripe_standin.reset_requests()

    second = ask_link(make_app().test_client(), cabinet).json

    assert second == first
    assert stripe_standin.requests == []


def test_a_different_quantity_is_a_different_link(client, cabinet, stripe_standin):
    """GIVEN the open-quantity link WHEN quantity 2 and then 3 are asked THEN three links."""
    open_quantity = ask_link(client, cabinet).json
    two = ask_link(client, cabinet, quantity=2).json
    three = ask_link(client, cabinet, quantity=3).json
    two_again = ask_link(client, cabinet, quantity=2).json

    ids = {open_quantity["payment_link_id"], two["payment_link_id"], three["payment_link_id"]}
    assert len(ids) == 3
    assert len({open_quantity["url"], two["url"], three["url"]}) == 3
    assert two_again == two
    assert len(stripe_standin.payment_links) == 3


def test_the_create_call_carries_an_idempotency_key_and_the_machine_id(
    client, cabinet, stripe_standin
):
    """GIVEN a new link WHEN Stripe is asked THEN with an Idempotency-Key and the machine id."""
    ask_link(client, cabinet)

    [create] = link_creations(stripe_standin)
    assert create.idempotency_key
    assert create.params["metadata"] == {"machine_id": "cab001"}
    assert create.params["payment_intent_data"]["metadata"] == {"machine_id": "cab001"}
    [made] = stripe_standin.payment_links
    assert made["metadata"] == {"machine_id": "cab001"}
    assert made["payment_intent_data"]["metadata"] == {"machine_id": "cab001"}


def test_different_links_use_different_idempotency_keys(client, register, stripe_standin):
    """GIVEN two machines and two quantities WHEN links are made THEN no key is reused."""
    first, second = register("cab001"), register("cab002")
    ask_link(client, first)
    ask_link(client, first, quantity=2)
    ask_link(client, second)

    keys = [request.idempotency_key for request in link_creations(stripe_standin)]
    assert len(keys) == 3 and len(set(keys)) == 3
    assert len(stripe_standin.payment_links) == 3


def test_without_quantity_the_player_chooses_1_to_max_quantity(client, cabinet, stripe_standin):
    """GIVEN no quantity WHEN the link is made THEN its quantity is adjustable 1..MAX_QUANTITY."""
    ask_link(client, cabinet)

    [create] = link_creations(stripe_standin)
    [item] = create.params["line_items"]
    assert item["price"] == DEFAULT_PRICE
    assert item["quantity"] == "1"
    assert item["adjustable_quantity"] == {"enabled": "true", "minimum": "1", "maximum": "10"}


def test_the_adjustable_maximum_follows_max_quantity(make_app, cabinet, stripe_standin):
    """GIVEN MAX_QUANTITY=4 WHEN the open-quantity link is made THEN the player may pick 1..4."""
    ask_link(make_app(MAX_QUANTITY="4").test_client(), cabinet)

    [create] = link_creations(stripe_standin)
    assert create.params["line_items"][0]["adjustable_quantity"]["maximum"] == "4"


def test_with_quantity_the_line_item_has_that_quantity(client, cabinet, stripe_standin):
    """GIVEN quantity 3 WHEN the link is made THEN its one line item sells exactly 3 units."""
    ask_link(client, cabinet, quantity=3)

    [create] = link_creations(stripe_standin)
    [item] = create.params["line_items"]
    assert item["price"] == DEFAULT_PRICE
    assert item["quantity"] == "3"
    assert "adjustable_quantity" not in item


def test_another_price_is_refused(client, cabinet, stripe_standin):
    """GIVEN a price that is neither the machine's nor the default WHEN asked THEN 400."""
    stripe_standin.add_price("price_other", 500)

    answer = ask_link(client, cabinet, price_id="price_other")

    assert answer.status_code == 400
    assert answer.json["code"] == "price_not_allowed"
    assert set(answer.json) == {"error", "code"}
    assert stripe_standin.requests == []


def test_a_machine_with_its_own_price_sells_it_by_default(client, register, stripe_standin):
    """GIVEN cab002 registered with its own price WHEN its link is asked THEN that price sells."""
    stripe_standin.add_price("price_cab002", 200)
    cabinet = register("cab002", price_id="price_cab002")

    own = ask_link(client, cabinet)
    default = ask_link(client, cabinet, price_id=DEFAULT_PRICE)
    own_again = ask_link(client, cabinet, price_id="price_cab002")

    assert own.status_code == 200 and default.status_code == 200
    first, second = link_creations(stripe_standin)
    assert first.params["line_items"][0]["price"] == "price_cab002"
    assert second.params["line_items"][0]["price"] == DEFAULT_PRICE
    assert own.json["payment_link_id"] != default.json["payment_link_id"]
    assert own_again.json == own.json


def test_a_machine_with_its_own_price_may_not_sell_another_machines(
    client, register, stripe_standin
):
    """GIVEN two machines with their own prices WHEN one asks the other's THEN 400."""
    stripe_standin.add_price("price_a", 100)
    stripe_standin.add_price("price_b", 200)
    cabinet = register("cab001", price_id="price_a")
    register("cab002", price_id="price_b")

    answer = ask_link(client, cabinet, price_id="price_b")

    assert answer.status_code == 400
    assert answer.json["code"] == "price_not_allowed"


def test_without_any_price_the_link_answers_503_naming_the_setting(make_app, register):
    """GIVEN no STRIPE_PRICE_ID and a machine without price WHEN asked THEN 503 naming it."""
    cabinet = register("cab001")
    client = make_app(STRIPE_PRICE_ID="").test_client()

    answer = ask_link(client, cabinet)

    assert answer.status_code == 503
    assert "STRIPE_PRICE_ID" in answer.json["error"]


def test_with_neither_key_nor_price_the_503_names_both_at_once(make_app, register, stripe_standin):
    """GIVEN no STRIPE_API_KEY and no STRIPE_PRICE_ID WHEN a link is asked THEN one 503 names
    both settings, so they are fixed in one go, and Stripe is not called."""
    cabinet = register("cab001")
    client = make_app(STRIPE_PRICE_ID="", STRIPE_API_KEY="").test_client()

    answer = ask_link(client, cabinet)

    assert answer.status_code == 503
    assert answer.json["code"] == "not_configured"
    assert "STRIPE_PRICE_ID" in answer.json["error"]
    assert "STRIPE_API_KEY" in answer.json["error"]
    assert stripe_standin.requests == []


def test_with_no_price_and_a_refused_key_the_503_says_what_is_wrong_with_the_key(
    make_app, register, stripe_standin
):
    """GIVEN no STRIPE_PRICE_ID and a publishable STRIPE_API_KEY (given, but refused) WHEN a
    link is asked THEN the 503 names the key by what is wrong with it, not as "not set"."""
    cabinet = register("cab001")
    client = make_app(STRIPE_PRICE_ID="", STRIPE_API_KEY="pk_test_publishable").test_client()

    answer = ask_link(client, cabinet)

    assert answer.status_code == 503
    assert "STRIPE_API_KEY must be a secret or restricted key" in answer.json["error"]
    assert "STRIPE_PRICE_ID not set" in answer.json["error"]
    assert stripe_standin.requests == []


@pytest.mark.parametrize(
    ("fields", "query"),
    [
        ({"quantity": 3}, "?quantity=3"),
        ({"quantity": 3, "price_id": DEFAULT_PRICE}, "?quantity=3&price_id=price_default_credit"),
        ({"price_id": DEFAULT_PRICE}, "?price_id=price_default_credit"),
    ],
    ids=["quantity", "quantity_and_price", "price"],
)
def test_the_qr_paths_name_the_link_answered(client, register, stripe_standin, fields, query):
    """GIVEN a machine with its own price WHEN a link for another allowed price or a quantity
    is asked THEN its QR paths carry that choice."""
    cabinet = register("cab002", price_id="price_cab002")
    stripe_standin.add_price("price_cab002", 75)

    body = ask_link(client, cabinet, **fields).json

    assert body["qr_png"] == f"/machines/cab002/qr.png{query}"
    assert body["qr_svg"] == f"/machines/cab002/qr.svg{query}"


def test_naming_the_machines_own_price_keeps_the_plain_qr_paths(client, register, stripe_standin):
    """GIVEN a machine with its own price WHEN its link is asked naming that price THEN the same
    link and QR paths as without naming it: one link, one QR path."""
    cabinet = register("cab002", price_id="price_cab002")
    stripe_standin.add_price("price_cab002", 75)

    plain = ask_link(client, cabinet).json
    named = ask_link(client, cabinet, price_id="price_cab002").json

    assert named == plain
    assert plain["qr_png"] == "/machines/cab002/qr.png"


def test_a_stripe_500_is_retried_and_one_link_is_made(
    client, cabinet, stripe_standin, fast_stripe_retries
):
    """GIVEN Stripe failing once WHEN a link is asked THEN the library retries and it succeeds."""
    stripe_standin.fail_next(500, count=1)

    answer = ask_link(client, cabinet)

    assert answer.status_code == 200
    assert len(stripe_standin.payment_links) == 1
    assert answer.json["payment_link_id"] == stripe_standin.payment_links[0]["id"]
    attempts = [(request.method, request.path) for request in stripe_standin.requests]
    # One call makes the link (its Price comes back expanded); the library retried it once.
    assert attempts == [("POST", "/v1/payment_links")] * 2


def test_after_a_failed_attempt_the_next_ask_makes_the_link(client, cabinet, stripe_standin):
    """GIVEN Stripe failing and saying not to retry WHEN asked, then again THEN 502, one link."""
    stripe_standin.fail_next(503, should_retry=False)

    failed = ask_link(client, cabinet)
    succeeded = ask_link(client, cabinet)

    assert failed.status_code == 502
    assert succeeded.status_code == 200
    assert len(stripe_standin.payment_links) == 1


def test_two_concurrent_first_requests_share_one_link(app, cabinet, stripe_standin):
    """GIVEN no link yet WHEN two cabinets' screens ask at once THEN both get the one link."""
    stripe_standin.latency = 0.2  # both requests are inside Stripe at the same time
    barrier = threading.Barrier(2)
    answers: list = [None, None]

    def ask(index: int) -> None:
        client = app.test_client()
        barrier.wait(timeout=5)
        answers[index] = ask_link(client, cabinet)

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[0].json == answers[1].json
    assert len(stripe_standin.payment_links) == 1
    creates = link_creations(stripe_standin)
    assert len({request.idempotency_key for request in creates}) == 1
    later = ask_link(app.test_client(), cabinet)
    assert later.json == answers[0].json
