"""Reconciliation: a paid session whose webhook never arrived still becomes exactly one grant.

Stripe is the stand-in, listing its Checkout Sessions the way Stripe's API does; the command is
the real ``flask --app app reconcile`` (through Flask's CLI runner, and once as a process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from arcade.reconcile import parse_window, reconcile
from tests.support.app import DEFAULT_PRICE, TOPIC_PREFIX, app_environment, signed_post
from tests.support.stripe_standin import charge, event

ROOT = Path(__file__).resolve().parent.parent
COINPULSE = f"{TOPIC_PREFIX}/cab001/coinpulse"


@pytest.fixture
def app(build):
    """Build the app on a fresh store of each kind."""
    return build()


@pytest.fixture
def shop(app, open_shop):
    return open_shop(app)


def pay_without_webhook(standin, shop, session_id: str, units: int = 2) -> dict:
    """Complete a Checkout Session at Stripe whose webhook never reaches us."""
    return standin.add_checkout_session(
        session_id,
        [(DEFAULT_PRICE, units)],
        payment_link=shop.link_id,
        payment_intent=f"pi_{session_id}",
    )


def run(app, *args: str):
    return app.test_cli_runner().invoke(args=["reconcile", *args])


def test_a_session_whose_webhook_never_arrived_is_granted_once(
    app, shop, stripe_standin, subscribe
):
    """GIVEN a paid session Stripe never told us about WHEN reconcile runs twice THEN one grant,
    one coinpulse, and the second run changes nothing."""
    pay_without_webhook(stripe_standin, shop, "cs_lost_webhook")
    subscriber = subscribe(COINPULSE)

    first = run(app)
    second = run(app, "--since", "72h")

    assert first.exit_code == 0, first.output
    assert "1 seen, 1 granted now, 0 already recorded, 0 unattributed" in first.output
    assert "1 seen, 0 granted now, 1 already recorded, 0 unattributed" in second.output
    pulses = subscriber.settle(0.5)
    assert [p.payload["paymentId"] for p in pulses] == ["cs_lost_webhook"]
    assert pulses[0].payload["credits"] == 2
    assert shop.state()["credits"]["granted"] == 2
    assert shop.state()["payments"][0]["status"] == "delivered"


def test_sessions_already_recorded_cost_no_stripe_call(app, shop, stripe_standin):
    """GIVEN a session its webhook recorded WHEN reconcile runs THEN only the list is asked."""
    session = pay_without_webhook(stripe_standin, shop, "cs_seen")
    signed_post(shop.client, event("checkout.session.completed", session))
    stripe_standin.reset_requests()

    answer = run(app, "--json")

    summary = json.loads(answer.output)
    assert (summary["seen"], summary["already_recorded"], summary["granted_now"]) == (1, 1, 0)
    assert [r.path for r in stripe_standin.requests] == ["/v1/checkout/sessions"]


def test_unattributed_and_pending_sessions_are_counted_by_name(app, shop, stripe_standin):
    """GIVEN a session at a foreign price and one still awaiting its bank debit WHEN reconcile
    runs THEN one unattributed, one awaiting payment, nothing granted."""
    stripe_standin.add_price("price_cent", 1)
    stripe_standin.add_checkout_session(
        "cs_cent", [("price_cent", 20)], payment_link="plink_else", client_reference_id="cab001"
    )
    stripe_standin.add_checkout_session(
        "cs_debit", [(DEFAULT_PRICE, 1)], payment_link=shop.link_id, payment_status="unpaid"
    )

    summary = json.loads(run(app, "--json").output)

    assert (summary["unattributed"], summary["pending_payment"], summary["granted_now"]) == (
        1,
        1,
        0,
    )
    statuses = {p["id"]: p["status"] for p in shop.state()["payments"]}
    assert statuses == {"cs_cent": "unattributed", "cs_debit": "pending_payment"}


def test_sessions_older_than_the_window_are_not_listed(app, shop, stripe_standin):
    """GIVEN a session created four days ago WHEN reconcile looks back 72 h THEN it is not seen."""
    import time

    stripe_standin.add_checkout_session(
        "cs_old",
        [(DEFAULT_PRICE, 1)],
        payment_link=shop.link_id,
        created=int(time.time()) - 4 * 86400,
    )

    assert json.loads(run(app, "--json").output)["seen"] == 0
    assert json.loads(run(app, "--json", "--since", "5d").output)["granted_now"] == 1


def test_a_stripe_failure_half_way_is_named_and_the_next_run_finishes(
    app, shop, stripe_standin, subscribe, fast_stripe_retries
):
    """GIVEN five lost webhooks and a list that fails on its second page WHEN reconcile runs
    THEN the first page is granted, the failure is named; the next run grants the rest."""
    for number in range(5):
        pay_without_webhook(stripe_standin, shop, f"cs_page_{number}")
    subscriber = subscribe(COINPULSE)
    stripe_standin.fail_next(500, count=3, path="GET /v1/checkout/sessions", after=1)
    svc = app.extensions["arcade"]

    with app.app_context():
        first = reconcile(svc.ledger, svc.gateway, page_size=2)
        second = reconcile(svc.ledger, svc.gateway, page_size=2)

    assert (first.seen, first.granted_now) == (2, 2)
    assert first.errors == ["Stripe could not be reached or failed"]
    assert "stopped early" in first.line()
    assert (second.seen, second.granted_now, second.already_recorded) == (5, 3, 2)
    assert second.errors == []
    assert sorted(m.payload["paymentId"] for m in subscriber.settle(0.5)) == [
        f"cs_page_{n}" for n in range(5)
    ]
    assert shop.state()["credits"]["granted"] == 10


def test_the_command_exits_1_when_stripe_fails(app, shop, stripe_standin, fast_stripe_retries):
    """GIVEN Stripe down WHEN reconcile runs THEN exit status 1 and the failure in words."""
    stripe_standin.fail_next(500, count=3)

    answer = run(app)

    assert answer.exit_code == 1
    assert "Stripe could not be reached or failed (the next run retries)" in answer.output


def test_a_webhook_arriving_while_reconcile_applies_the_same_session_grants_once(
    app, shop, stripe_standin, subscribe
):
    """GIVEN lost webhooks WHEN each is delivered at the very moment reconcile applies it THEN
    every session is granted once and published once."""
    sessions = [pay_without_webhook(stripe_standin, shop, f"cs_race_{n}") for n in range(4)]
    subscriber = subscribe(COINPULSE)
    svc = app.extensions["arcade"]
    start = threading.Barrier(2)
    answers = []

    def deliver_all() -> None:
        client = app.test_client()
        start.wait()
        for session in sessions:
            answers.append(signed_post(client, event("checkout.session.completed", session)))

    def reconcile_all() -> None:
        with app.app_context():
            start.wait()
            reconcile(svc.ledger, svc.gateway)

    threads = [threading.Thread(target=deliver_all), threading.Thread(target=reconcile_all)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {a.status_code for a in answers} == {200}
    paid = sorted(m.payload["paymentId"] for m in subscriber.settle(0.5))
    assert paid == sorted(s["id"] for s in sessions)
    assert shop.state()["credits"]["granted"] == 8


@pytest.mark.parametrize("text", ["0h", "72", "h", "-1d", "3w", "1.5h"])
def test_a_window_is_a_whole_positive_duration(text):
    with pytest.raises(ValueError, match="such as 72h"):
        parse_window(text)


def test_a_bad_since_is_refused_by_name(app):
    answer = run(app, "--since", "yesterday")

    assert answer.exit_code == 2
    assert "such as 72h" in answer.output


def test_the_real_flask_command_reconciles(broker, stripe_standin, tmp_path, subscribe):
    """GIVEN a lost webhook WHEN an operator runs `flask --app app reconcile` THEN it is granted."""
    env = os.environ | app_environment(broker, stripe_standin, tmp_path / "arcade.db")
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    added = subprocess.run(
        [*flask, "machines", "add", "cab001"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    token = json.loads(added.stdout.splitlines()[-1])["token"]
    assert token
    stripe_standin.add_checkout_session(
        "cs_cli", [(DEFAULT_PRICE, 3)], client_reference_id="cab001"
    )
    subscriber = subscribe(COINPULSE)

    done = subprocess.run(
        [*flask, "reconcile"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("1 seen, 1 granted now, 0 already recorded, 0 unattributed")
    assert subscriber.wait_for(1)[0].payload["credits"] == 3
    assert '"event":"credits_granted"' in done.stderr


def test_a_session_refunded_before_reconcile_found_it_is_counted_as_cancelled(
    app, shop, stripe_standin, subscribe
):
    """GIVEN a lost webhook whose charge was then refunded in full WHEN reconcile applies it THEN
    nothing is granted or published, and the line says so."""
    pay_without_webhook(stripe_standin, shop, "cs_refunded_first")
    signed_post(
        shop.client,
        event(
            "charge.refunded",
            charge(payment_intent="pi_cs_refunded_first", amount=100, amount_refunded=100),
        ),
    )
    subscriber = subscribe(COINPULSE)

    answer = run(app)

    assert "0 granted now" in answer.output
    assert "1 refunded or disputed before delivery" in answer.output
    assert subscriber.settle(0.3) == []
    assert shop.state()["credits"]["granted"] == 0


def test_two_reconciles_at_once_count_each_grant_once_between_them(app, shop, stripe_standin):
    """GIVEN six lost webhooks WHEN two reconciles run at the same moment THEN between them
    they report six grants, and the books hold six."""
    for number in range(6):
        pay_without_webhook(stripe_standin, shop, f"cs_twice_{number}")
    svc = app.extensions["arcade"]
    start = threading.Barrier(2)
    summaries = []

    def run_one() -> None:
        start.wait()
        summaries.append(reconcile(svc.ledger, svc.gateway))

    threads = [threading.Thread(target=run_one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(s.granted_now for s in summaries) == 6
    assert shop.state()["credits"]["granted"] == 12
