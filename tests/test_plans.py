"""Pricing plans: bundles, bonus credits, happy hours and credits per game.

Each test goes through the real doors (the admin JSON API, signed webhooks, the CLI) with the
real ``stripe`` library against the Stripe stand-in and a real TLS broker, and checks what
operators, players and cabinets see.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from arcade.store.base import link_key
from tests.support.app import ADMIN_KEY, DEFAULT_PRICE, signed_post
from tests.support.plans import TWO_BUNDLES
from tests.support.stripe_standin import charge, checkout_session, event

# paho leaves the socket of a connection to a stopped or refusing broker to the collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
PLAN = TWO_BUNDLES


@pytest.fixture
def app(build):
    """Build the app on a fresh store of each kind."""
    return build()


def save_plan(client, plan: dict[str, Any], machine_id: str | None = "cab001") -> dict[str, Any]:
    path = "/plans/default" if machine_id is None else f"/machines/{machine_id}/plan"
    answer = client.put(path, json=plan, headers=ADMIN)
    assert answer.status_code == 201, answer.json
    # Stripe's ``created`` is whole seconds, and a version made within the second a checkout
    # began counts as made after it: players pay in the seconds that follow.
    next_second()
    return answer.json


def next_second() -> None:
    time.sleep(1.01 - time.time() % 1)


def bundle_link(app, saved: dict[str, Any], index: int, machine_id: str = "cab001"):
    price_id = saved["plan"]["bundles"][index]["price_id"]
    link = app.extensions["arcade"].store.get_link(link_key(machine_id, price_id, 0))
    assert link is not None, "saving the plan made the bundle's Payment Link"
    return link


def pay_link(client, link, session_id: str, units: int, **fields: Any):
    session = checkout_session(
        id=session_id,
        payment_link=link.link_id,
        amount_subtotal=link.unit_amount * units,
        payment_intent=f"pi_{session_id}",
        **fields,
    )
    return signed_post(client, event("checkout.session.completed", session))


def payment(client, payment_id: str) -> dict[str, Any]:
    return client.get(f"/payments/{payment_id}", headers=ADMIN).json


def at(year: int, month: int, day: int, hour: int, minute: int) -> int:
    """Return the Unix seconds of a UTC wall-clock time."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp())


# --- plans and bundles -------------------------------------------------------------------------
def test_a_saved_plan_makes_its_prices_and_links_and_each_bundle_buys_its_credits(
    app, client, cabinet, stripe_standin, subscribe
):
    """GIVEN a plan of two bundles made from amounts and a bonus WHEN it is saved and each
    bundle's link is paid THEN Stripe got the Prices and links that say what the player gets,
    and each payment buys units x the bundle's credits (+ the bonus from 3 units), counted
    without asking Stripe for line items while the player waits."""
    pulses = subscribe("arcade/machine/cab001/coinpulse")
    saved = save_plan(client, PLAN)
    assert saved["version"] == 1 and saved["created_by"] == "admin api"
    assert saved["links"] == {"machines": 1, "made": 2, "updated": 0}
    prices = stripe_standin.requests_to("POST", "/v1/prices")
    assert [r.params["unit_amount"] for r in prices] == ["100", "400"]
    assert prices[1].params["product_data"] == {"name": "5 games"}
    texts = [link["custom_text"]["submit"]["message"] for link in stripe_standin.payment_links]
    assert texts[1].startswith("5 games: 6 credits for each one you buy. Buy 3 or more: +2")

    one, five = bundle_link(app, saved, 0), bundle_link(app, saved, 1)
    assert pay_link(client, one, "cs_one", 1).json["result"] == "delivered"
    assert pay_link(client, five, "cs_five", 2).json["result"] == "delivered"
    assert pay_link(client, five, "cs_five_bonus", 3).json["result"] == "delivered"
    assert pay_link(client, one, "cs_one_below", 2).json["result"] == "delivered"

    credits = {p: payment(client, p)["credits"] for p in ("cs_one", "cs_five", "cs_five_bonus")}
    assert credits == {"cs_one": 1, "cs_five": 12, "cs_five_bonus": 20}  # 3 x 6 + 2
    assert payment(client, "cs_one_below")["credits"] == 2  # one unit below the bonus
    assert payment(client, "cs_five")["bundle"] == "5 games"
    assert payment(client, "cs_five")["plan_version"] == 1
    assert [m.payload["credits"] for m in pulses.wait_for(4)] == [1, 12, 20, 2]
    assert not stripe_standin.requests_to("GET", "/v1/checkout/sessions/*")

    report = client.get("/reports/revenue?group=bundle", headers=ADMIN).json["rows"]
    assert [(r["bundle"], r["gross"], r["payments"], r["credits"]) for r in report] == [
        ("1 game", 300, 2, 3),
        ("5 games", 2000, 2, 32),
    ]


def test_a_plan_is_versioned_and_every_change_is_recorded_with_who_and_when(
    app, client, cabinet, stripe_standin
):
    """GIVEN a machine's plan WHEN the operator saves another version and changes the machine's
    settings THEN both versions are listed newest first, the links' text follows the new
    version, and the record names who made each change."""
    first = save_plan(client, PLAN)
    existing = stripe_standin.add_price("price_existing_ten", 800)["id"]
    second = save_plan(
        client,
        {
            "bundles": [
                {
                    "name": "1 game",
                    "credits": 2,
                    "price_id": first["plan"]["bundles"][0]["price_id"],
                },
                {"name": "10 games", "credits": 12, "price_id": existing},
            ]
        },
    )
    assert second["version"] == 2
    # "5 games" is not sold by version 2: its link is switched off.
    assert second["links"] == {"machines": 1, "made": 1, "updated": 1, "retired": 1}
    updates = stripe_standin.requests_to("POST", "/v1/payment_links/*")
    [texted] = [u for u in updates if "custom_text" in u.params]
    assert texted.params["custom_text"]["submit"]["message"].startswith(
        "1 game: 2 credits for each one you buy."
    )
    shown = client.get("/machines/cab001/plan", headers=ADMIN).json
    assert shown["current"]["version"] == 2
    assert [v["version"] for v in shown["versions"]] == [2, 1]
    assert shown["in_force"] == {"owner": "cab001", "version": 2}
    assert shown["current"]["plan"]["bundles"][1] == {
        "name": "10 games",
        "price_id": existing,
        "credits": 12,
        "unit_amount": 800,
        "currency": "usd",
    }
    answer = client.patch(
        "/machines/cab001", json={"credits_per_game": 2, "timezone": "Europe/Paris"}, headers=ADMIN
    )
    assert answer.json == {
        "machine_id": "cab001",
        "credits_per_game": 2,
        "timezone": "Europe/Paris",
    }
    changes = client.get("/machines/cab001/changes", headers=ADMIN).json["changes"]
    assert [c["what"] for c in changes] == [
        {
            "credits_per_game": {"from": 1, "to": 2},
            "timezone": {"from": "UTC", "to": "Europe/Paris"},
        },
        {"plan_version": 2},
        {"plan_version": 1},
    ]
    assert {c["by"] for c in changes} == {"admin api"}
    assert all(c["at"].endswith("Z") for c in changes)


def test_the_default_plan_prices_machines_without_their_own(app, client, register, subscribe):
    """GIVEN a default plan and one machine with a plan of its own WHEN both are paid THEN the
    machine without a plan is credited by the default plan, the other by its own."""
    register("cab001")
    register("cab002")
    pulses = subscribe("arcade/machine/+/coinpulse")
    default = save_plan(client, PLAN, machine_id=None)
    assert default["owner"] == "default" and default["links"]["machines"] == 2
    own = save_plan(
        client,
        {"bundles": [{"name": "Big", "credits": 3, "amount": 100, "currency": "usd"}]},
        "cab002",
    )
    assert pay_link(client, bundle_link(app, default, 1, "cab001"), "cs_def", 1).status_code == 200
    assert pay_link(client, bundle_link(app, own, 0, "cab002"), "cs_own", 1).status_code == 200
    assert payment(client, "cs_def")["credits"] == 6
    assert payment(client, "cs_own")["credits"] == 3
    assert client.get("/machines/cab001/plan", headers=ADMIN).json["in_force"] == {
        "owner": "default",
        "version": 1,
    }
    assert len(pulses.wait_for(2)) == 2


# --- what counts -------------------------------------------------------------------------------
def test_a_plan_edited_between_checkout_and_webhook_credits_by_the_old_version(
    app, client, cabinet, subscribe
):
    """GIVEN a player's checkout begun under version 1 WHEN the operator saves version 2 (more
    credits) before Stripe's webhook arrives THEN the payment is credited by version 1."""
    pulses = subscribe("arcade/machine/cab001/coinpulse")
    first = save_plan(client, PLAN)
    created = int(time.time())
    edited = json.loads(json.dumps(PLAN))
    edited["bundles"][1]["credits"] = 9
    assert save_plan(client, edited)["version"] == 2
    assert (
        pay_link(client, bundle_link(app, first, 1), "cs_old", 1, created=created).status_code
        == 200
    )
    assert payment(client, "cs_old")["credits"] == 6
    assert payment(client, "cs_old")["plan_version"] == 1
    assert pay_link(client, bundle_link(app, first, 1), "cs_new", 1).status_code == 200
    assert payment(client, "cs_new")["credits"] == 9
    assert [m.payload["credits"] for m in pulses.wait_for(2)] == [6, 9]


def test_a_price_not_in_the_plan_buys_nothing(app, client, cabinet, stripe_standin, subscribe):
    """GIVEN a machine under a plan WHEN a session of its own bundle link carries a line item
    at another Price, and its old single-price link is paid THEN neither buys anything: both
    are unattributed with the reason, and nothing is published."""
    pulses = subscribe("arcade/machine/cab001/coinpulse")
    old = client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth
    ).json["payment_link_id"]
    saved = save_plan(client, PLAN)
    stripe_standin.add_price("price_foreign", 100)
    foreign = stripe_standin.add_checkout_session(
        "cs_foreign",
        [("price_foreign", 1)],
        payment_link=bundle_link(app, saved, 0).link_id,
        discount=10,  # not the link's own amount: its line items are read
    )
    answer = signed_post(client, event("checkout.session.completed", foreign))
    assert answer.json["result"] == "unattributed"
    legacy = stripe_standin.add_checkout_session(
        "cs_legacy", [(DEFAULT_PRICE, 2)], payment_link=old
    )
    assert signed_post(client, event("checkout.session.completed", legacy)).json["result"] == (
        "unattributed"
    )
    for payment_id in ("cs_foreign", "cs_legacy"):
        shown = payment(client, payment_id)
        assert shown["status"] == "unattributed" and shown["credits"] == 0
        assert shown["reason"] == "no line item is at a price of plan version 1"
    assert pulses.settle(0.5) == []


def test_a_session_with_two_bundles_gets_one_bonus_and_a_refund_is_booked_to_its_bundle(
    app, client, cabinet, stripe_standin, subscribe
):
    """GIVEN a session (a link made in Stripe's dashboard) buying two bundles, 2 units each
    WHEN it is paid and later refunded in part THEN the bonus is given once for the 4 units,
    and the bundle report shows the refund."""
    pulses = subscribe("arcade/machine/cab001/coinpulse")
    saved = save_plan(client, PLAN)
    one, five = (b["price_id"] for b in saved["plan"]["bundles"])
    both = stripe_standin.add_checkout_session(
        "cs_both", [(one, 2), (five, 2)], metadata={"machine_id": "cab001"}, payment_intent="pi_b"
    )
    assert signed_post(client, event("checkout.session.completed", both)).status_code == 200
    assert payment(client, "cs_both")["credits"] == 2 * 1 + 2 * 6 + 2
    assert payment(client, "cs_both")["bundle"] == "1 game + 5 games"
    assert len(pulses.wait_for(1)) == 1
    refunded = charge(payment_intent="pi_b", amount=1000, amount_refunded=400)
    assert signed_post(client, event("charge.refunded", refunded)).json["result"] == (
        "refund_recorded"
    )
    [row] = client.get("/reports/revenue?group=bundle", headers=ADMIN).json["rows"]
    assert (row["bundle"], row["gross"], row["refunded"], row["net"]) == (
        "1 game + 5 games",
        1000,
        400,
        600,
    )


@pytest.mark.parametrize(
    ("created", "credits"),
    [
        (at(2027, 3, 28, 15, 0), 12),  # 17:00 in Paris, the first summer-time Sunday
        (at(2027, 3, 28, 16, 59), 12),  # 18:59, its last minute
        (at(2027, 3, 28, 17, 0), 6),  # 19:00, one minute after
        (at(2027, 3, 28, 14, 59), 6),  # 16:59, one minute before
        (at(2027, 3, 21, 16, 0), 12),  # 17:00 a week before, in winter time (UTC+1)
        (at(2027, 3, 21, 15, 0), 6),  # 16:00 then: 17:00 in UTC+2, not in Paris
    ],
)
def test_a_happy_hour_holds_from_its_first_to_its_last_local_minute_across_a_dst_change(
    make_app, register, created, credits
):
    """GIVEN a Sunday 17:00-19:00 happy hour (credits x2) at a machine in Europe/Paris WHEN a
    session is created at its start minute, its last minute and one minute after, on the day
    the clocks go forward and a week before THEN credits double exactly inside the window."""
    app = make_app()
    client = app.test_client()
    register_ = app.extensions["arcade"].registry.register
    register_("cab001")
    client.patch("/machines/cab001", json={"timezone": "Europe/Paris"}, headers=ADMIN)
    plan = json.loads(json.dumps(PLAN))
    plan["happy_hours"] = [{"days": ["sun"], "start": "17:00", "end": "19:00", "factor": 2}]
    saved = save_plan(client, plan)
    answer = pay_link(client, bundle_link(app, saved, 1), "cs_hh", 1, created=created)
    assert answer.status_code in (200, 503)  # the broker is not the point here
    assert payment(client, "cs_hh")["credits"] == credits


def test_one_happy_hour_and_one_bonus_apply_however_many_match(make_app):
    """GIVEN two overlapping happy hours (x2 and +1) and two bonus rules met WHEN credits are
    counted THEN only the richest of each applies, once."""
    from zoneinfo import ZoneInfo

    from arcade.pricing import Bonus, Bundle, HappyHour, Plan, credits_for

    plan = Plan(
        bundles=(Bundle("B", "price_b", 2, 100, "usd"),),
        bonuses=(Bonus(2, 1), Bonus(3, 3)),
        happy_hours=(
            HappyHour(("mon",), "10:00", "12:00", factor=2),
            HappyHour(("mon",), "11:00", "13:00", extra=1),
        ),
    )
    monday = datetime(2027, 1, 4, 11, 30, tzinfo=ZoneInfo("Europe/Paris"))
    bought = credits_for(plan, [("price_b", 3), ("price_b", 1)], at=monday, zone=monday.tzinfo)
    assert (bought.base, bought.bonus, bought.credits) == (8, 3, 22)  # (8 + 3) x 2


# --- games that cost more than one credit ------------------------------------------------------
def test_two_credits_per_game_with_three_left_plays_one_game_then_none(
    app, client, cabinet, subscribe
):
    """GIVEN a machine whose games cost 2 credits, with 3 credits granted WHEN two games end
    THEN the first uses 2 (1 left, no new session) and the second counts a game without credit,
    and the machine's state, the heartbeat's answer and the cabinet agree on 2 a game."""
    pulses = subscribe("arcade/machine/cab001/coinpulse")
    assert (
        client.patch("/machines/cab001", json={"credits_per_game": 2}, headers=ADMIN).status_code
        == 200
    )
    grant = client.post(
        "/machines/cab001/credits", json={"credits": 3, "reason": "test"}, headers=ADMIN
    )
    assert grant.status_code == 201 and len(pulses.wait_for(1)) == 1
    state = client.get("/machines/cab001", headers=cabinet.auth).json
    assert state["credits_per_game"] == 2 and state["state"] == "playing"
    client.post("/gameover", json={"machine_id": "cab001"}, headers=cabinet.auth)
    state = client.get("/machines/cab001", headers=cabinet.auth).json
    assert state["credits"] == {"granted": 3, "used": 2, "left": 1}
    assert state["state"] == "idle" and state["games_without_credit"] == 0
    client.post("/gameover", json={"machine_id": "cab001"}, headers=cabinet.auth)
    state = client.get("/machines/cab001", headers=cabinet.auth).json
    assert state["credits"] == {"granted": 3, "used": 2, "left": 1}
    assert state["games_without_credit"] == 1
    beat = client.post(
        "/machines/cab001/heartbeat", json={"mqtt_connected": True}, headers=cabinet.auth
    )
    assert beat.json["credits_per_game"] == 2


def test_what_a_link_says_is_whole_sentences_within_stripes_limit():
    """GIVEN a plan with 14 happy hours on every day in a long zone name WHEN its link text is
    written THEN it keeps within Stripe's 1200 characters in whole sentences, says more happy
    hours are on the machine's page and still ends with when the credits arrive."""
    from arcade.pricing import MAX_CUSTOM_TEXT, Bundle, HappyHour, Plan, offer_text

    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    bundle = Bundle("5 games", "price_5", 6, 400, "usd")
    hours = tuple(
        HappyHour(days=days, start=f"{h:02d}:00", end=f"{h:02d}:30", factor=2) for h in range(14)
    )

    text = offer_text(Plan((bundle,), (), hours), bundle, "America/Argentina/ComodRivadavia")

    assert len(text) <= MAX_CUSTOM_TEXT
    assert text.startswith("5 games: 6 credits for each one you buy. Happy hour Mon, Tue")
    assert "More happy hours are listed on the machine's page." in text
    assert text.endswith("Credits go to the machine as soon as the payment succeeds.")


def test_a_bundle_in_a_currency_stripe_does_not_charge_in_is_refused_by_name(
    client, stripe_standin
):
    """GIVEN a plan whose bundle is priced in "xyz" WHEN it is saved THEN Stripe's refusal of
    the Price comes back as a 400 naming the bundle, not as a 502, and no version is stored."""
    plan = {"bundles": [{"name": "1 game", "credits": 1, "amount": 100, "currency": "xyz"}]}

    answer = client.put("/plans/default", json=plan, headers=ADMIN)

    assert answer.status_code == 400
    assert answer.json["code"] == "invalid_plan"
    assert answer.json["error"].startswith("bundles[0]: Stripe refused a Price of 100 in XYZ")
    assert client.get("/plans/default", headers=ADMIN).json.get("version") is None


def test_a_session_opens_once_a_full_game_is_paid_for(app, client, cabinet, subscribe):
    """GIVEN a machine whose games cost 3 credits WHEN a webhook grant of 1 credit is
    delivered THEN it stays idle (not enough for a game); WHEN 2 more credits come by hand THEN
    it is playing. A machine of one credit a game plays on its first grant (the same write)."""
    pulses = subscribe("arcade/machine/cab001/coinpulse")
    client.patch("/machines/cab001", json={"credits_per_game": 3}, headers=ADMIN)
    link = client.post("/create-payment-link", json={"machine_id": "cab001"}, headers=ADMIN)
    paid = checkout_session(
        id="cs_one_credit", payment_link=link.json["payment_link_id"], amount_subtotal=50
    )
    answer = signed_post(client, event("checkout.session.completed", paid))
    assert answer.json["result"] == "delivered" and len(pulses.wait_for(1)) == 1
    state = client.get("/machines/cab001", headers=cabinet.auth).json
    assert state["credits"]["left"] == 1 and state["state"] == "idle"

    grant = client.post(
        "/machines/cab001/credits", json={"credits": 2, "reason": "test"}, headers=ADMIN
    )
    assert grant.status_code == 201 and len(pulses.wait_for(2)) == 2
    state = client.get("/machines/cab001", headers=cabinet.auth).json
    assert state["credits"]["left"] == 3 and state["state"] == "playing"

    client.patch("/machines/cab001", json={"credits_per_game": 1}, headers=ADMIN)
    for _ in range(3):
        client.post("/gameover", json={"machine_id": "cab001"}, headers=cabinet.auth)
    assert client.get("/machines/cab001", headers=cabinet.auth).json["state"] == "idle"
    again = signed_post(
        client, event("checkout.session.completed", {**paid, "id": "cs_one_a_game"})
    )
    assert again.json["result"] == "delivered"
    assert client.get("/machines/cab001", headers=cabinet.auth).json["state"] == "playing"


def test_the_cabinet_counter_takes_what_the_api_says_a_game_costs(tmp_path):
    """GIVEN a cabinet told 2 credits a game, with 3 credits WHEN two games end THEN the first
    uses 2 and the second none, as the API counts them, also after a restart."""
    from arcade.cabinet.ledger import CabinetLedger

    ledger = CabinetLedger(tmp_path / "cabinet.db")
    assert ledger.credits_per_game() == 1
    ledger.keep_credits_per_game(2)
    ledger.add_payment("cs_1", 3)
    first, second = ledger.add_game_over("test"), ledger.add_game_over("test")
    assert (first.used_credit, first.credits_left) == (True, 1)
    assert (second.used_credit, second.credits_left) == (False, 1)
    ledger.close()
    assert CabinetLedger(tmp_path / "cabinet.db").credits_per_game() == 2


# --- bad input ---------------------------------------------------------------------------------
def bundle(**fields: Any) -> dict[str, Any]:
    return {"name": "B", "credits": 1, "amount": 100, "currency": "usd"} | fields


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({}, "bundles must be a list of 1 to 8 bundles"),
        ({"bundles": []}, "bundles must be a list of 1 to 8 bundles"),
        ({"bundles": [bundle()], "extra": 1}, "the plan has no field 'extra'"),
        ({"bundles": [bundle(price_id="price_x")]}, "bundles[0] gives price_id or amount"),
        ({"bundles": [bundle(currency="dollars")]}, "bundles[0].currency must be a three-letter"),
        ({"bundles": [bundle(credits=0)]}, "bundles[0].credits must be a whole number from 1"),
        ({"bundles": [bundle(amount="1.00")]}, "bundles[0].amount must be a whole number"),
        ({"bundles": [bundle(), bundle()]}, "two bundles have the same name"),
        ({"bundles": [{"name": "B", "credits": 1}]}, "bundles[0] needs a price_id, or an amount"),
        ({"bundles": [bundle(price_id="nope", amount=None, currency=None)]}, "price id"),
        (
            {"bundles": [bundle()], "bonuses": [{"min_units": 11, "credits": 1}]},
            "bonuses[0].min_units must be a whole number from 1 to 10",
        ),
        (
            {
                "bundles": [bundle()],
                "bonuses": [{"min_units": 2, "credits": 5}, {"min_units": 3, "credits": 1}],
            },
            "the bonus for 3 units (+1) must give more credits than the one for 2 units (+5)",
        ),
        (
            {
                "bundles": [bundle()],
                "happy_hours": [{"days": ["fri"], "start": "19:00", "end": "17:00", "factor": 2}],
            },
            "happy_hours[0] must end after it starts",
        ),
        (
            {
                "bundles": [bundle()],
                "happy_hours": [
                    {"days": ["friday"], "start": "17:00", "end": "19:00", "factor": 2}
                ],
            },
            "happy_hours[0].days must be a list of days",
        ),
        (
            {
                "bundles": [bundle()],
                "happy_hours": [
                    {"days": ["fri"], "start": "17:00", "end": "19:00", "factor": 2, "extra": 1}
                ],
            },
            "gives a factor (credits ×) or an extra (credits +), one of them",
        ),
        (
            {
                "bundles": [bundle()],
                "happy_hours": [{"days": ["fri"], "start": "5pm", "end": "19:00", "extra": 1}],
            },
            "happy_hours[0].start must be a local time HH:MM",
        ),
        (
            {
                "bundles": [bundle(credits=100)],
                "happy_hours": [{"days": ["fri"], "start": "17:00", "end": "19:00", "factor": 2}],
            },
            "this plan could give more than 1000 credits in one payment",
        ),
    ],
)
def test_a_plan_that_is_not_valid_is_refused_by_name_and_nothing_is_stored(
    make_app, stripe_standin, plan, message
):
    app = make_app()
    client = app.test_client()
    app.extensions["arcade"].registry.register("cab001")
    answer = client.put("/machines/cab001/plan", json=plan, headers=ADMIN)
    assert answer.status_code == 400, answer.json
    assert answer.json["code"] == "invalid_plan"
    assert message in answer.json["error"]
    assert client.get("/machines/cab001/plan", headers=ADMIN).json["current"] is None
    assert not stripe_standin.payment_links


def test_plan_doors_refuse_what_they_cannot_do(make_app, stripe_standin):
    """An unknown Price, an unknown machine, no admin key, a body that is not JSON, bad
    machine settings: each a 4xx that says why, never a 500."""
    app = make_app()
    client = app.test_client()
    app.extensions["arcade"].registry.register("cab001")
    unknown = client.put(
        "/machines/cab001/plan",
        json={"bundles": [{"name": "B", "credits": 1, "price_id": "price_missing"}]},
        headers=ADMIN,
    )
    assert (unknown.status_code, unknown.json["error"]) == (
        400,
        "bundles[0].price_id: Stripe has no price price_missing",
    )
    assert client.put("/machines/cab999/plan", json=PLAN, headers=ADMIN).status_code == 404
    assert client.put("/machines/cab001/plan", json=PLAN).status_code == 401
    assert client.get("/plans/default").status_code == 401
    garbled = client.put("/plans/default", data=b"{bundles", headers=ADMIN)
    assert (garbled.status_code, garbled.json["code"]) == (400, "invalid_json")
    for body, code in [
        ({"credits_per_game": 0}, "invalid_credits_per_game"),
        ({"credits_per_game": "2"}, "invalid_credits_per_game"),
        ({"credits_per_game": True}, "invalid_credits_per_game"),
        ({"timezone": "Mars/Olympus"}, "invalid_timezone"),
        ({"timezone": 5}, "invalid_timezone"),
        ({"timezone": "localtime"}, "invalid_timezone"),
        ({"timezone": "Factory"}, "invalid_timezone"),
        ({"price": 1}, "invalid_machine_settings"),
        ({}, "invalid_machine_settings"),
    ]:
        answer = client.patch("/machines/cab001", json=body, headers=ADMIN)
        assert (answer.status_code, answer.json["code"]) == (400, code), body
    assert (
        client.patch("/machines/cab999", json={"timezone": "UTC"}, headers=ADMIN).status_code == 404
    )
    assert client.get("/machines/cab001/changes", headers=ADMIN).json == {"changes": []}


# --- the operator's command line ------------------------------------------------------------------
def test_operators_manage_plans_and_settings_from_the_cli(make_app, tmp_path):
    """GIVEN a machine WHEN the operator sets a plan from a file, configures the machine and
    asks for the plan and its history THEN each says what it did and the record names the CLI;
    a file that is not a plan exits 1 with the reason."""
    app = make_app()
    app.extensions["arcade"].registry.register("cab001")
    runner = app.test_cli_runner()
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(PLAN))
    result = runner.invoke(args=["plans", "set", str(plan_file), "--machine", "cab001"])
    assert result.exit_code == 0, result.output
    assert "cab001 plan version 1 in force from" in result.output
    assert "2 bundles; links for 1 machines, 2 made, 0 updated" in result.output
    shown = runner.invoke(args=["plans", "show", "--machine", "cab001"]).output
    assert "5 games" in shown and "4.00 USD" in shown and "bonus: 3+ units -> +2 credits" in shown
    configured = runner.invoke(args=["machines", "configure", "cab001", "--credits-per-game", "3"])
    assert json.loads(configured.output)["credits_per_game"] == 3
    history = runner.invoke(args=["plans", "history", "--machine", "cab001"]).output
    assert history.count("cli (") == 3  # the version, and two changes
    assert "no plan" in runner.invoke(args=["plans", "show"]).output
    plan_file.write_text('{"bundles": []}')
    refused = runner.invoke(args=["plans", "set", str(plan_file)])
    assert refused.exit_code == 1
    assert "bundles must be a list of 1 to 8 bundles" in refused.output
    bad = runner.invoke(args=["machines", "configure", "cab001", "--timezone", "Nowhere"])
    assert bad.exit_code == 1 and "timezone must be an IANA time zone" in bad.output
    for text, said in [
        (b"[" * 20000 + b"]" * 20000, "is not read: the JSON is nested deeper than 32 levels"),
        (b"\xff\xfe{", "is not JSON"),
    ]:
        plan_file.write_bytes(text)
        refused = runner.invoke(args=["plans", "set", str(plan_file)])
        assert refused.exit_code == 1 and said in refused.output, refused.output
        assert refused.exception is None or isinstance(refused.exception, SystemExit)


# --- the dashboard -------------------------------------------------------------------------------
def test_an_operator_edits_plans_and_settings_on_the_dashboard(make_app):
    """GIVEN a logged-in operator WHEN they save the default plan, a machine's settings and a
    plan that is not JSON THEN the pages say what happened in sentences, the record names the
    admin session, and the default plan's page shows its version and bundles."""
    from tests.support.admin import csrf_of, login

    app = make_app()
    app.extensions["arcade"].registry.register("cab001")
    client = app.test_client()
    login(client)
    csrf = csrf_of(client.get("/admin/plans").data)
    before = client.get("/admin/machines/cab001").data.decode()
    assert "Sells the default price (STRIPE_PRICE_ID), the default number of credit(s)" in before
    assert 'href="/machines/cab001/qr.png" download' in before
    saved = client.post(
        "/admin/plans", data={"plan": json.dumps(PLAN), "csrf_token": csrf}, follow_redirects=True
    )
    assert b"Plan version 1 is in force: 2 bundles, 2 payment links made" in saved.data
    page = client.get("/admin/machines/cab001").data.decode()
    assert "Sells by the default pricing plan (version 1)." in page
    # The QR code to print opens the player's page, which lists every bundle.
    assert "http://localhost/play/cab001</p>" in page
    assert 'href="/play/cab001/qr.png" download' in page
    settings = client.post(
        "/admin/machines/cab001/settings",
        data={"credits_per_game": "2", "timezone": "Europe/Paris", "csrf_token": csrf},
        follow_redirects=True,
    )
    assert (
        b"One game on cab001 costs 2 credit(s); its happy hours are read in Europe/Paris."
        in settings.data
    )
    assert b'the <a href="/admin/plans">default plan</a> (version 1)' in settings.data
    broken = client.post(
        "/admin/machines/cab001/plan",
        data={"plan": "{bundles", "csrf_token": csrf},
        follow_redirects=True,
    )
    assert b"The plan is not JSON: check its brackets, commas and quotes." in broken.data
    deep = client.post(
        "/admin/machines/cab001/plan",
        data={"plan": "[" * 20000 + "]" * 20000, "csrf_token": csrf},
        follow_redirects=True,
    )
    assert deep.status_code == 200
    assert b"The plan is not read: the JSON is nested deeper than 32 levels." in deep.data
    changes = app.extensions["arcade"].plans.changes("cab001")
    assert [c["by"] for c in changes] == ["admin session"]
    assert app.extensions["arcade"].plans.changes("*")[0]["by"] == "admin session"
    default_page = client.get("/admin/plans").data
    assert b"Version 1, in force since" in default_page and b"by admin session" in default_page
    assert b"4.00 USD" in default_page


# --- links that no longer buy ----------------------------------------------------------------
def standin_link(stripe_standin, link_id: str) -> dict[str, Any]:
    return next(link for link in stripe_standin.payment_links if link["id"] == link_id)


def stored_link(app, link_id: str):
    return app.extensions["arcade"].store.get_link_by_id(link_id)


def test_a_plan_version_switches_off_the_links_it_no_longer_sells_and_on_those_it_sells_again(
    app, client, cabinet, stripe_standin, caplog
):
    """GIVEN a machine's single-price link WHEN a plan of two bundles comes into force THEN
    that link is switched off at Stripe and retired; WHEN version 2 drops a bundle THEN its
    link is too; WHEN version 3 sells that bundle again THEN its link is switched on and sells,
    while the single-price link stays off. Each answer counts the links it retired."""
    caplog.set_level(logging.INFO, logger="arcade.plans")
    single = client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth
    ).json["payment_link_id"]
    first = save_plan(client, PLAN)
    assert first["links"] == {"machines": 1, "made": 2, "updated": 0, "retired": 1}
    assert standin_link(stripe_standin, single)["active"] is False
    assert stored_link(app, single).retired_at is not None
    [retired] = [r for r in caplog.records if r.getMessage() == "payment_link_retired"]
    assert retired.fields == {
        "machine_id": "cab001",
        "payment_link_id": single,
        "price_id": DEFAULT_PRICE,
        "quantity": 0,
    }
    one, five = bundle_link(app, first, 0), bundle_link(app, first, 1)

    kept = {"name": "1 game", "credits": 1, "price_id": one.price_id}
    second = save_plan(client, {"bundles": [kept]})
    assert second["links"] == {"machines": 1, "made": 0, "updated": 1, "retired": 1}
    assert [standin_link(stripe_standin, i)["active"] for i in (single, one.link_id)] == [
        False,
        True,
    ]
    assert standin_link(stripe_standin, five.link_id)["active"] is False
    assert stored_link(app, five.link_id).retired_at is not None

    back = {"name": "5 games", "credits": 6, "price_id": five.price_id}
    third = save_plan(client, {"bundles": [kept, back]})
    assert third["links"] == {"machines": 1, "made": 0, "updated": 2}
    assert standin_link(stripe_standin, five.link_id)["active"] is True
    assert stored_link(app, five.link_id).retired_at is None
    assert standin_link(stripe_standin, single)["active"] is False
    assert len(stripe_standin.payment_links) == 3  # the bundle's own link is used again
    assert pay_link(client, five, "cs_back", 1).status_code == 200
    assert payment(client, "cs_back")["credits"] == 6


def test_the_default_plan_retires_single_price_links_and_a_machine_plan_the_default_ones(
    app, client, register, stripe_standin
):
    """GIVEN two machines, one with a single-price link WHEN the default plan comes into force
    THEN that link is switched off; WHEN the other machine gets a plan of its own THEN the
    default plan's links of that machine are switched off, the first machine's stay on."""
    first, second = register("cab001"), register("cab002")
    single = client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=first.auth
    ).json["payment_link_id"]
    default = save_plan(client, PLAN, machine_id=None)
    assert default["links"]["retired"] == 1
    assert standin_link(stripe_standin, single)["active"] is False

    own = save_plan(
        client,
        {"bundles": [{"name": "Big", "credits": 3, "amount": 300, "currency": "usd"}]},
        second.machine_id,
    )
    assert own["links"] == {"machines": 1, "made": 1, "updated": 0, "retired": 2}
    for index in (0, 1):
        theirs = bundle_link(app, default, index, "cab002")
        ours = bundle_link(app, default, index, "cab001")
        assert standin_link(stripe_standin, theirs.link_id)["active"] is False
        assert standin_link(stripe_standin, ours.link_id)["active"] is True


def test_a_retired_link_stays_off_when_its_machine_goes_offline_and_online_again(
    app, client, cabinet, stripe_standin
):
    """GIVEN a heartbeating machine whose single-price link a plan retired WHEN it goes offline
    (the relay switches its links off) and comes back (its heartbeat switches them on) THEN
    its bundle links follow, and the retired link is never switched on, nor asked again."""
    beat = {"mqtt_connected": True, "credits_left": 0}
    assert client.post("/machines/cab001/heartbeat", json=beat, headers=cabinet.auth)
    single = client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth
    ).json["payment_link_id"]
    saved = save_plan(client, PLAN)
    bundles = [bundle_link(app, saved, i).link_id for i in (0, 1)]
    app.extensions["arcade"].store.update_machine(
        "cab001", last_seen=datetime(2026, 1, 1, tzinfo=UTC), mqtt_connected=1, credits_reported=0
    )
    assert app.extensions["arcade"].relay()["links_switched"] == 1
    assert [standin_link(stripe_standin, i)["active"] for i in (single, *bundles)] == [False] * 3

    back = client.post("/machines/cab001/heartbeat", json=beat, headers=cabinet.auth)
    assert back.json["presence"] == "online"
    assert [standin_link(stripe_standin, i)["active"] for i in (single, *bundles)] == [
        False,
        True,
        True,
    ]
    updates = stripe_standin.requests_to("POST", f"/v1/payment_links/{single}")
    assert [u.params for u in updates] == [{"active": "false"}]  # retired once, then left be


def test_a_heartbeat_that_read_the_links_before_a_save_retired_one_leaves_it_off(
    app, client, cabinet, stripe_standin, monkeypatch
):
    """GIVEN an offline machine whose heartbeat read its links just before a plan save
    retired one WHEN the heartbeat then switches the links it read back on THEN it sees the
    link was retired meanwhile and switches it off again: a retired link never stays on."""
    svc = app.extensions["arcade"]
    beat = {"mqtt_connected": True, "credits_left": 0}
    assert client.post("/machines/cab001/heartbeat", json=beat, headers=cabinet.auth)
    single = client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth
    ).json["payment_link_id"]
    svc.store.update_machine(
        "cab001", last_seen=datetime(2026, 1, 1, tzinfo=UTC), mqtt_connected=1, credits_reported=0
    )
    assert svc.relay()["links_switched"] == 1  # offline: the single-price link is off
    read_before_the_save = svc.store.list_links("cab001")
    save_plan(client, PLAN)  # retires the single-price link
    assert stored_link(app, single).retired_at is not None
    monkeypatch.setattr(svc.store, "list_links", lambda machine_id: read_before_the_save)

    back = client.post("/machines/cab001/heartbeat", json=beat, headers=cabinet.auth)

    assert back.json["presence"] == "online"
    assert standin_link(stripe_standin, single)["active"] is False


def after_version_2_dropped_the_first_bundle(app, client):
    """Save PLAN as version 1, then version 2 with its second bundle only; return the first
    bundle's link (retired by version 2), the second's, and version 1 as stored."""
    first = save_plan(client, PLAN)
    save_plan(client, {"bundles": [PLAN["bundles"][1]]})
    store = app.extensions["arcade"].store
    version_1 = next(v for v in store.list_plan_versions("cab001") if v.version == 1)
    return bundle_link(app, first, 0), bundle_link(app, first, 1), version_1


def test_a_save_that_finishes_after_a_newer_one_keeps_the_newer_versions_links(
    app, client, cabinet, stripe_standin
):
    """GIVEN version 1 (two bundles), then version 2 (the second bundle only) whose save
    retired the first bundle's link WHEN version 1's save finishes its link work last THEN it
    works to the version in force, 2: the first bundle's link stays retired and off, the
    second's stays on."""
    from arcade.pricing import Plan

    dropped, kept, version_1 = after_version_2_dropped_the_first_bundle(app, client)
    assert stored_link(app, dropped.link_id).retired_at is not None

    app.extensions["arcade"].plans._sync_links("cab001", Plan.from_json(version_1.plan))

    assert stored_link(app, dropped.link_id).retired_at is not None
    assert standin_link(stripe_standin, dropped.link_id)["active"] is False
    assert stored_link(app, kept.link_id).retired_at is None
    assert standin_link(stripe_standin, kept.link_id)["active"] is True


def test_a_save_that_read_an_older_version_does_not_bring_back_a_link_a_newer_one_retired(
    app, client, cabinet, stripe_standin, monkeypatch
):
    """GIVEN version 2 (the second bundle only) retired the first bundle's link WHEN a save
    that read version 1 as in force (before version 2 was stored) brings that link back THEN
    it reads the version in force again once the link is on, and retires it again: the link
    ends off and retired, the second bundle's on."""
    import arcade.plans
    from arcade.pricing import Plan

    dropped, kept, version_1 = after_version_2_dropped_the_first_bundle(app, client)
    real_plan_of, reads = arcade.plans.plan_of, []

    def read_before_version_2_was_stored(store_: object, machine_id: str, at=None):
        reads.append(machine_id)
        if len(reads) == 1:
            return version_1, Plan.from_json(version_1.plan)
        return real_plan_of(store_, machine_id, at)

    monkeypatch.setattr(arcade.plans, "plan_of", read_before_version_2_was_stored)

    app.extensions["arcade"].plans._sync_links("cab001", Plan.from_json(version_1.plan))

    assert stored_link(app, dropped.link_id).retired_at is not None
    assert standin_link(stripe_standin, dropped.link_id)["active"] is False
    assert stored_link(app, kept.link_id).retired_at is None
    assert standin_link(stripe_standin, kept.link_id)["active"] is True


def test_a_link_an_older_save_makes_for_a_price_the_newer_version_drops_ends_retired(
    app, client, cabinet, stripe_standin, monkeypatch
):
    """GIVEN version 2 in force WHEN a save that read an older version as in force makes a
    link for a bundle version 2 does not sell THEN, the link made, the version in force is
    read again and the new link is retired and off at once."""
    import arcade.links
    import arcade.plans
    from arcade.pricing import Bundle, Plan

    _, _, version_1 = after_version_2_dropped_the_first_bundle(app, client)
    stripe_standin.add_price("price_stale", 300)
    store = app.extensions["arcade"].store
    stale = Plan((Bundle("stale", "price_stale", 1, 300, "usd"),))
    real_plan_of, reads = arcade.plans.plan_of, []

    def read_before_version_2_was_stored(store_: object, machine_id: str, at=None):
        reads.append(machine_id)
        return (version_1, stale) if len(reads) == 1 else real_plan_of(store_, machine_id, at)

    monkeypatch.setattr(arcade.plans, "plan_of", read_before_version_2_was_stored)
    # The link service checked the price against the version it read, before 2 was stored.
    monkeypatch.setattr(arcade.links, "plan_of", lambda *args, **kwargs: (version_1, stale))

    report = app.extensions["arcade"].plans._sync_links("cab001", stale)

    made = store.get_link(link_key("cab001", "price_stale", 0))
    assert (report["made"], report["retired"]) == (1, 1)
    assert made is not None and made.retired_at is not None
    assert standin_link(stripe_standin, made.link_id)["active"] is False


def test_a_link_stripe_would_not_switch_off_is_a_problem_of_the_save_and_the_next_save_retires_it(
    app, client, cabinet, stripe_standin
):
    """GIVEN a single-price link WHEN a plan is saved while Stripe fails to switch it off THEN
    the version is saved (201) and the answer names the link as a problem, not retired; the
    next save switches it off."""
    single = client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth
    ).json["payment_link_id"]
    stripe_standin.fail_next(500, count=5, path=f"POST /v1/payment_links/{single}")
    saved = save_plan(client, PLAN)
    assert saved["version"] == 1 and "retired" not in saved["links"]
    [problem] = saved["links"]["problems"]
    assert problem.startswith(f"cab001 {single}: Stripe")
    assert standin_link(stripe_standin, single)["active"] is True
    assert stored_link(app, single).retired_at is None

    again = save_plan(client, PLAN)
    assert again["links"]["retired"] == 1 and "problems" not in again["links"]
    assert standin_link(stripe_standin, single)["active"] is False


# --- links that would buy nothing are not handed out ---------------------------------------------
def test_under_a_plan_only_its_bundles_prices_make_links(app, client, register, stripe_standin):
    """GIVEN a machine with a price of its own under a plan WHEN a link or QR code is asked at
    its own price or the default price THEN 400 price_not_allowed saying it sells by its
    plan's bundles, and nothing is asked of Stripe; without price_id it is the first bundle's
    link, and a bundle's price gets that bundle's link."""
    stripe_standin.add_price("price_own", 200)
    cabinet = register("cab001", price_id="price_own")
    saved = save_plan(client, PLAN)
    stripe_standin.reset_requests()
    for price_id in ("price_own", DEFAULT_PRICE):
        asked = client.post(
            "/create-payment-link",
            json={"machine_id": "cab001", "price_id": price_id},
            headers=cabinet.auth,
        )
        assert (asked.status_code, asked.json["code"]) == (400, "price_not_allowed")
        assert "machine cab001 sells by its pricing plan's bundles" in asked.json["error"]
        png = client.get(f"/machines/cab001/qr.png?price_id={price_id}")
        assert (png.status_code, png.json["code"]) == (400, "price_not_allowed")
    assert stripe_standin.requests == []

    first = client.post("/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth)
    assert first.json["payment_link_id"] == bundle_link(app, saved, 0).link_id
    five = saved["plan"]["bundles"][1]["price_id"]
    chosen = client.post(
        "/create-payment-link",
        json={"machine_id": "cab001", "price_id": five},
        headers=cabinet.auth,
    )
    assert chosen.json["payment_link_id"] == bundle_link(app, saved, 1).link_id
    assert client.get(f"/machines/cab001/qr.png?price_id={five}").status_code == 200


# --- machines registered under the default plan --------------------------------------------------
def test_a_machine_registered_under_the_default_plan_gets_its_bundle_links_at_once(
    app, client, stripe_standin
):
    """GIVEN a default plan WHEN a machine is registered by the admin API and by the CLI THEN
    each gets its bundles' links at once (the answers say so) and its player's page offers
    every bundle; WHEN Stripe fails meanwhile THEN the registration still answers its token
    and lists the links not made."""
    save_plan(client, PLAN, machine_id=None)
    added = client.post("/machines", json={"machine_id": "cab001"}, headers=ADMIN)
    assert added.status_code == 201 and added.json["token"].startswith("mt_")
    assert added.json["links"] == {"machines": 1, "made": 2, "updated": 0}
    assert len(app.extensions["arcade"].store.list_links("cab001")) == 2
    for _ in range(2):  # the page needs no Stripe call: no minute's budget to wait for
        page = client.get("/play/cab001").data.decode()
        assert "not available right now" not in page and page.count("buy.stripe.com") == 2

    result = app.test_cli_runner().invoke(args=["machines", "add", "cab002"])
    assert result.exit_code == 0, result.output
    assert "Its pricing plan's payment links: 2 made." in result.output
    assert len(app.extensions["arcade"].store.list_links("cab002")) == 2

    stripe_standin.fail_next(500, count=20, path="POST /v1/payment_links")
    failed = client.post("/machines", json={"machine_id": "cab003"}, headers=ADMIN)
    assert failed.status_code == 201 and failed.json["token"].startswith("mt_")
    assert failed.json["links"]["made"] == 0 and len(failed.json["links"]["problems"]) == 2
    assert client.get("/play/cab003").status_code == 200


def test_a_machine_registered_without_any_plan_answers_as_before(app, client, stripe_standin):
    """GIVEN no plan WHEN a machine is registered THEN the answer is its id and token only, and
    Stripe is not asked."""
    added = client.post("/machines", json={"machine_id": "cab001"}, headers=ADMIN)
    assert set(added.json) == {"machine_id", "token"}
    assert stripe_standin.requests == []


# --- fixed-quantity links -----------------------------------------------------------------------
def test_a_fixed_quantity_link_under_a_plan_says_what_the_player_gets_and_follows_each_version(
    app, client, cabinet, stripe_standin
):
    """GIVEN a plan WHEN a link for 3 units is asked THEN its page states the bundle's offer
    like the bundle's own link; WHEN a new version changes the bundle's credits THEN that
    link's text is updated too."""
    save_plan(client, PLAN)
    three = client.post(
        "/create-payment-link", json={"machine_id": "cab001", "quantity": 3}, headers=cabinet.auth
    ).json["payment_link_id"]
    text = standin_link(stripe_standin, three)["custom_text"]["submit"]["message"]
    assert text.startswith("1 game: 1 credit for each one you buy. Buy 3 or more: +2 credits.")

    edited = json.loads(json.dumps(PLAN))
    edited["bundles"][0]["credits"] = 2
    assert save_plan(client, edited)["links"]["updated"] == 3
    text = standin_link(stripe_standin, three)["custom_text"]["submit"]["message"]
    assert text.startswith("1 game: 2 credits for each one you buy.")
