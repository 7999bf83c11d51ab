"""One contract for every store back end: what the ledger relies on, run against each of them.

SQLite runs on a temporary file; DynamoDB runs against moto in server mode on a loopback port,
so every call crosses real HTTP through boto3, as it does in Lambda.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from arcade.errors import MachineExists, StoreError, UnknownMachine
from arcade.store.base import (
    DELIVERED,
    PARTIALLY_REFUNDED,
    PAYMENT_FAILED,
    PENDING_DELIVERY,
    PENDING_PAYMENT,
    REFUNDED,
    UNATTRIBUTED,
    Machine,
    MachineState,
    Payment,
    PaymentLink,
    Store,
    link_key,
)

THREADS = 8
T0 = "2026-11-22T10:00:00Z"
T1 = "2026-11-22T10:01:00Z"
T2 = "2026-11-22T10:02:00Z"
T3 = "2026-11-22T10:03:00Z"


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Store]:
    """Open an empty store of each back end."""
    if request.param == "sqlite":
        from arcade.store.sqlite import SqliteStore

        opened: Store = SqliteStore(str(tmp_path / "arcade.db"))
    else:
        from arcade.store.dynamodb import DynamoStore

        dynamo = DynamoStore(
            request.getfixturevalue("dynamodb_table"),
            client=request.getfixturevalue("dynamodb_client"),
        )
        dynamo.create_table()
        opened = dynamo
    yield opened
    opened.close()


@pytest.fixture
def machine(store: Store) -> Machine:
    """Register cabinet cab001."""
    registered = make_machine()
    store.add_machine(registered)
    return registered


# --- factories --------------------------------------------------------------------------------
def make_machine(*, machine_id: str = "cab001", **fields: Any) -> Machine:
    """Return a machine with every optional field set unless given."""
    values: dict[str, Any] = {
        "token_hash": f"hash-{machine_id}",
        "created_at": T0,
        "name": f"Cabinet {machine_id}",
        "price_id": "price_123",
        "credits_per_unit": 2,
    }
    return Machine(machine_id=machine_id, **(values | fields))


def make_link(*, link_id: str = "plink_1", quantity: int = 1, **fields: Any) -> PaymentLink:
    """Return cab001's link for price_123."""
    values: dict[str, Any] = {
        "machine_id": "cab001",
        "price_id": "price_123",
        "url": f"https://buy.stripe.com/{link_id}?client_reference_id=cab001",
        "unit_amount": 100,
        "currency": "usd",
        "created_at": T0,
    }
    return PaymentLink(link_id=link_id, quantity=quantity, **(values | fields))


def make_payment(
    *, payment_id: str = "cs_1", status: str = PENDING_DELIVERY, **fields: Any
) -> Payment:
    """Return a payment of 2 credits for 200 usd cents to cab001, claimed until T1."""
    values: dict[str, Any] = {
        "created_at": T0,
        "machine_id": "cab001",
        "credits": 2,
        "amount": 200,
        "currency": "usd",
        "payment_intent": f"pi_{payment_id}",
    }
    if status == PENDING_DELIVERY:
        values |= {"granted_at": T0, "delivery_claimed_until": T1}
    return Payment(payment_id=payment_id, status=status, **(values | fields))


def run_together(action: Callable[[], Any], times: int = THREADS) -> list[Any]:
    """Run ``action`` in that many threads released at the same instant; return the results."""
    start = threading.Barrier(times)

    def at_once() -> Any:
        start.wait()
        return action()

    with ThreadPoolExecutor(max_workers=times) as pool:
        futures = [pool.submit(at_once) for _ in range(times)]
        return [future.result() for future in futures]


# --- machines ---------------------------------------------------------------------------------
def test_given_a_new_machine_when_added_then_it_reads_back_equal(store: Store) -> None:
    """A machine, with or without its optional fields, reads back exactly as stored."""
    full = make_machine(machine_id="cab001")
    bare = Machine(machine_id="cab002", token_hash="h", created_at=T0)

    store.add_machine(full)
    store.add_machine(bare)

    assert store.get_machine("cab001") == full
    assert store.get_machine("cab002") == bare


def test_given_no_machine_when_read_then_none(store: Store) -> None:
    """An unknown id reads as None."""
    assert store.get_machine("nobody") is None


def test_given_a_machine_when_the_id_is_added_again_then_machine_exists(
    store: Store, machine: Machine
) -> None:
    """The first registration wins and the second one is refused."""
    with pytest.raises(MachineExists, match="^machine cab001 is already registered$"):
        store.add_machine(make_machine(token_hash="other"))

    assert store.get_machine("cab001") == machine


def test_given_machines_when_listed_then_all_ordered_by_id(store: Store) -> None:
    """list_machines returns every machine, ordered by id, and nothing else."""
    for machine_id in ("cab010", "cab002", "cab001"):
        store.add_machine(make_machine(machine_id=machine_id))
    store.grant_payment(make_payment())
    store.put_link(make_link())

    listed = store.list_machines()

    assert [m.machine_id for m in listed] == ["cab001", "cab002", "cab010"]
    assert listed[0] == make_machine(machine_id="cab001")


def test_given_no_machines_when_listed_then_empty(store: Store) -> None:
    """An empty store lists no machine."""
    assert store.list_machines() == []


def test_given_a_machine_when_its_token_hash_is_set_then_only_the_hash_changes(
    store: Store, machine: Machine
) -> None:
    """Rotating the token replaces the hash and keeps every other field."""
    store.set_token_hash("cab001", "new-hash")

    assert store.get_machine("cab001") == make_machine(token_hash="new-hash")


def test_given_no_machine_when_its_token_hash_is_set_then_unknown_machine(store: Store) -> None:
    """Setting the hash of an unknown machine is refused and registers nothing."""
    with pytest.raises(UnknownMachine, match="^machine nobody is not registered$"):
        store.set_token_hash("nobody", "hash")

    assert store.get_machine("nobody") is None


def test_given_a_machine_with_payments_when_removed_then_it_is_gone_and_payments_stay(
    store: Store, machine: Machine
) -> None:
    """Removing a machine keeps the money trail."""
    store.grant_payment(make_payment())

    store.remove_machine("cab001")

    assert store.get_machine("cab001") is None
    assert store.list_machines() == []
    assert store.get_payment("cs_1") == make_payment()
    assert [p.payment_id for p in store.list_payments("cab001")] == ["cs_1"]


def test_given_no_machine_when_removed_then_unknown_machine(store: Store) -> None:
    """Removing an unknown machine is refused."""
    with pytest.raises(UnknownMachine, match="^machine nobody is not registered$"):
        store.remove_machine("nobody")


def test_given_a_removed_machine_when_added_again_then_it_is_registered(
    store: Store, machine: Machine
) -> None:
    """A removed id is free for a new registration."""
    store.remove_machine("cab001")

    store.add_machine(make_machine(token_hash="fresh"))

    assert store.get_machine("cab001") == make_machine(token_hash="fresh")


# --- payment links ----------------------------------------------------------------------------
def test_given_no_link_when_put_then_it_reads_back_by_key_and_by_id(store: Store) -> None:
    """A stored link is found under its key and under its Stripe id."""
    link = make_link()

    stored = store.put_link(link)

    assert stored == link
    assert store.get_link(link_key("cab001", "price_123", 1)) == link
    assert store.get_link_by_id("plink_1") == link


def test_given_a_link_without_unit_amount_when_put_then_none_reads_back(store: Store) -> None:
    """A link whose player chooses the quantity and whose unit amount is unknown round-trips."""
    link = make_link(quantity=0, unit_amount=None)

    store.put_link(link)

    assert store.get_link(link.key) == link


def test_given_a_link_when_another_is_put_under_the_same_key_then_the_first_wins(
    store: Store,
) -> None:
    """Two requests racing to create the same link both end up with the first one."""
    first = make_link(link_id="plink_first")
    store.put_link(first)

    stored = store.put_link(make_link(link_id="plink_second"))

    assert stored == first
    assert store.get_link(first.key) == first
    assert store.get_link_by_id("plink_second") is None


def test_given_links_for_other_quantities_when_put_then_each_has_its_own_key(
    store: Store,
) -> None:
    """The quantity is part of the key."""
    one = store.put_link(make_link(link_id="plink_1", quantity=1))
    three = store.put_link(make_link(link_id="plink_3", quantity=3))

    assert store.get_link(link_key("cab001", "price_123", 1)) == one
    assert store.get_link(link_key("cab001", "price_123", 3)) == three


def test_given_no_link_when_read_then_none(store: Store) -> None:
    """Unknown keys and ids read as None."""
    assert store.get_link(link_key("cab001", "price_123", 1)) is None
    assert store.get_link_by_id("plink_missing") is None


# --- recording payments that grant nothing ----------------------------------------------------
def test_given_no_payment_when_a_pending_one_is_recorded_then_it_is_stored(store: Store) -> None:
    """An async checkout is kept, granting nothing."""
    pending = make_payment(status=PENDING_PAYMENT)

    stored = store.record_payment(pending)

    assert stored == pending
    assert store.get_payment("cs_1") == pending
    assert store.get_machine_state("cab001") == MachineState(machine_id="cab001")


def test_given_a_pending_payment_when_its_failure_is_recorded_then_it_is_replaced(
    store: Store,
) -> None:
    """A payment not yet granted takes the new status and fields."""
    store.record_payment(make_payment(status=PENDING_PAYMENT))
    failed = make_payment(status=PAYMENT_FAILED, updated_at=T1)

    stored = store.record_payment(failed)

    assert stored == failed
    assert store.get_payment("cs_1") == failed


def test_given_a_granted_payment_when_a_pending_one_is_recorded_then_it_is_untouched(
    store: Store,
) -> None:
    """A late or replayed event never downgrades a granted payment."""
    granted = make_payment()
    store.grant_payment(granted)

    stored = store.record_payment(make_payment(status=PAYMENT_FAILED, credits=0, updated_at=T2))

    assert stored == granted
    assert store.get_payment("cs_1") == granted


def test_given_no_payment_when_an_unattributed_one_is_recorded_then_it_has_no_machine(
    store: Store,
) -> None:
    """A payment for no registered machine is kept without a machine and listed nowhere."""
    stray = make_payment(status=UNATTRIBUTED, machine_id=None, credits=0, payment_intent=None)

    store.record_payment(stray)

    assert store.get_payment("cs_1") == stray
    assert store.list_payments("cab001") == []


def test_given_no_payment_when_read_then_none(store: Store) -> None:
    """Unknown payment and PaymentIntent ids read as None."""
    assert store.get_payment("cs_missing") is None
    assert store.get_payment_by_intent("pi_missing") is None


# --- granting ---------------------------------------------------------------------------------
def test_given_no_payment_when_granted_then_credits_and_revenue_are_added(
    store: Store, machine: Machine
) -> None:
    """A grant stores the payment and adds its credits and amount to the machine, moving it on."""
    payment = make_payment()

    stored, granted = store.grant_payment(payment)

    assert (stored, granted) == (payment, True)
    assert store.get_payment("cs_1") == payment
    state = store.get_machine_state("cab001")
    assert (state.credits_granted, state.revenue) == (2, {"usd": 200})
    assert state.version > 0


def test_given_a_granted_payment_when_granted_again_then_nothing_changes(
    store: Store, machine: Machine
) -> None:
    """A redelivered webhook is answered with the first grant and adds nothing."""
    first = make_payment()
    store.grant_payment(first)
    before = store.get_machine_state("cab001")

    stored, granted = store.grant_payment(make_payment(credits=5, amount=500, granted_at=T2))

    assert (stored, granted) == (first, False)
    assert store.get_payment("cs_1") == first
    assert store.get_machine_state("cab001") == before


@pytest.mark.parametrize("earlier", [PENDING_PAYMENT, PAYMENT_FAILED])
def test_given_a_payment_before_its_grant_when_granted_then_it_counts(
    store: Store, machine: Machine, earlier: str
) -> None:
    """An async payment that succeeds later (or after a failed attempt) is granted once."""
    store.record_payment(make_payment(status=earlier))
    payment = make_payment(granted_at=T1)

    stored, granted = store.grant_payment(payment)

    assert (stored, granted) == (payment, True)
    assert store.get_payment("cs_1") == payment
    assert store.get_machine_state("cab001").credits_granted == 2


def test_given_an_unattributed_payment_when_granted_then_nothing_changes(
    store: Store, machine: Machine
) -> None:
    """Only a missing or pre-grant payment can be granted."""
    stray = make_payment(status=UNATTRIBUTED, machine_id=None, credits=0)
    store.record_payment(stray)

    stored, granted = store.grant_payment(make_payment())

    assert (stored, granted) == (stray, False)
    assert store.get_machine_state("cab001") == MachineState(machine_id="cab001")


def test_given_payments_in_two_currencies_when_granted_then_revenue_is_kept_per_currency(
    store: Store, machine: Machine
) -> None:
    """Revenue adds up per currency; credits add up across them."""
    store.grant_payment(make_payment(payment_id="cs_1", amount=200, currency="usd"))
    store.grant_payment(make_payment(payment_id="cs_2", amount=300, currency="usd"))
    store.grant_payment(make_payment(payment_id="cs_3", amount=150, currency="eur"))

    state = store.get_machine_state("cab001")

    assert state.revenue == {"usd": 500, "eur": 150}
    assert state.credits_granted == 6


def test_given_concurrent_grants_of_one_payment_then_exactly_one_counts(
    store: Store, machine: Machine
) -> None:
    """Eight deliveries of the same event at once grant its credits once."""
    results = run_together(lambda: store.grant_payment(make_payment()))

    assert sorted(granted for _, granted in results) == [False] * (THREADS - 1) + [True]
    assert all(stored == make_payment() for stored, _ in results)
    state = store.get_machine_state("cab001")
    assert (state.credits_granted, state.revenue) == (2, {"usd": 200})


# --- delivery claims --------------------------------------------------------------------------
@pytest.fixture
def undelivered(store: Store, machine: Machine) -> Payment:
    """Grant cs_1 with no delivery claim held."""
    payment = make_payment(delivery_claimed_until=None)
    store.grant_payment(payment)
    return payment


def test_given_an_unclaimed_payment_when_claimed_twice_then_only_the_first_succeeds(
    store: Store, undelivered: Payment
) -> None:
    """One request at a time may publish a coinpulse."""
    assert store.claim_delivery("cs_1", now=T0, until=T2) is True
    assert store.claim_delivery("cs_1", now=T1, until=T3) is False
    assert store.get_payment("cs_1").delivery_claimed_until == T2


def test_given_a_claim_when_it_expires_then_it_can_be_claimed_again(
    store: Store, undelivered: Payment
) -> None:
    """A claim held by a request that died frees itself at its expiry."""
    store.claim_delivery("cs_1", now=T0, until=T1)

    assert store.claim_delivery("cs_1", now=T2, until=T3) is True
    assert store.get_payment("cs_1").delivery_claimed_until == T3


def test_given_a_claim_until_now_when_claimed_at_that_instant_then_still_refused(
    store: Store, undelivered: Payment
) -> None:
    """A claim is held through its last instant; both back ends draw the line there."""
    store.claim_delivery("cs_1", now=T0, until=T1)

    assert store.claim_delivery("cs_1", now=T1, until=T3) is False


def test_given_a_claim_when_released_then_it_can_be_claimed_again(
    store: Store, undelivered: Payment
) -> None:
    """A request that failed to publish lets the next retry publish at once."""
    store.claim_delivery("cs_1", now=T0, until=T2)

    store.release_delivery("cs_1")

    assert store.get_payment("cs_1").delivery_claimed_until is None
    assert store.claim_delivery("cs_1", now=T1, until=T3) is True


def test_given_a_grant_that_holds_a_claim_when_claimed_before_expiry_then_refused(
    store: Store, machine: Machine
) -> None:
    """The claim written with the grant belongs to the request that granted."""
    store.grant_payment(make_payment(delivery_claimed_until=T2))

    assert store.claim_delivery("cs_1", now=T1, until=T3) is False


def test_given_concurrent_claims_then_exactly_one_succeeds(
    store: Store, undelivered: Payment
) -> None:
    """Eight retries at once give the right to publish to one of them."""
    results = run_together(lambda: store.claim_delivery("cs_1", now=T0, until=T2))

    assert sorted(results) == [False] * (THREADS - 1) + [True]


@pytest.mark.parametrize("status", [PENDING_PAYMENT, PAYMENT_FAILED, UNATTRIBUTED])
def test_given_a_payment_not_granted_when_claimed_then_refused(store: Store, status: str) -> None:
    """Nothing is published for a payment that grants nothing."""
    store.record_payment(make_payment(status=status))

    assert store.claim_delivery("cs_1", now=T0, until=T1) is False


def test_given_no_payment_when_claimed_or_released_then_nothing_is_stored(store: Store) -> None:
    """Claims on unknown payments are refused and create nothing."""
    assert store.claim_delivery("cs_missing", now=T0, until=T1) is False
    store.release_delivery("cs_missing")

    assert store.get_payment("cs_missing") is None


def test_given_a_claimed_delivery_when_marked_delivered_then_only_once_and_unclaimed(
    store: Store, undelivered: Payment
) -> None:
    """The broker's acknowledgement moves the payment on once and ends the claim."""
    store.claim_delivery("cs_1", now=T0, until=T2)

    assert store.mark_delivered("cs_1", now=T1) is True
    assert store.mark_delivered("cs_1", now=T2) is False

    stored = store.get_payment("cs_1")
    assert (stored.status, stored.delivered_at, stored.updated_at) == (DELIVERED, T1, T1)
    assert stored.delivery_claimed_until is None


def test_given_a_delivered_payment_when_claimed_then_refused(
    store: Store, undelivered: Payment
) -> None:
    """A delivered coinpulse is never published again."""
    store.mark_delivered("cs_1", now=T1)

    assert store.claim_delivery("cs_1", now=T2, until=T3) is False


def test_given_no_payment_or_one_not_granted_when_marked_delivered_then_false(
    store: Store,
) -> None:
    """Only a pending delivery can be delivered."""
    store.record_payment(make_payment(status=PENDING_PAYMENT))

    assert store.mark_delivered("cs_missing", now=T1) is False
    assert store.mark_delivered("cs_1", now=T1) is False
    assert store.get_payment("cs_1").status == PENDING_PAYMENT


# --- refunds ----------------------------------------------------------------------------------
def test_given_a_granted_payment_when_partly_then_fully_refunded_then_revenue_drops_by_each_step(
    store: Store, undelivered: Payment
) -> None:
    """charge.refunded carries the cumulative amount; each step takes off only the increase."""
    assert store.record_refund("cs_1", 50, PARTIALLY_REFUNDED, now=T1) == 50
    stored = store.get_payment("cs_1")
    assert (stored.amount_refunded, stored.status) == (50, PARTIALLY_REFUNDED)
    assert store.get_machine_state("cab001").revenue == {"usd": 150}

    assert store.record_refund("cs_1", 200, REFUNDED, now=T2) == 150

    stored = store.get_payment("cs_1")
    assert (stored.amount_refunded, stored.status) == (200, REFUNDED)
    state = store.get_machine_state("cab001")
    assert (state.revenue, state.credits_granted) == ({"usd": 0}, 2)


def test_given_a_refund_when_the_same_event_repeats_then_it_counts_once(
    store: Store, undelivered: Payment
) -> None:
    """A redelivered charge.refunded changes nothing."""
    store.record_refund("cs_1", 80, PARTIALLY_REFUNDED, now=T1)
    before = store.get_machine_state("cab001")

    assert store.record_refund("cs_1", 80, PARTIALLY_REFUNDED, now=T2) == 0

    assert store.get_machine_state("cab001") == before
    assert store.get_payment("cs_1").amount_refunded == 80


def test_given_a_refund_when_an_older_lower_amount_arrives_then_nothing_changes(
    store: Store, undelivered: Payment
) -> None:
    """Events out of order never raise revenue back."""
    store.record_refund("cs_1", 200, REFUNDED, now=T2)

    assert store.record_refund("cs_1", 50, PARTIALLY_REFUNDED, now=T1) == 0

    stored = store.get_payment("cs_1")
    assert (stored.amount_refunded, stored.status) == (200, REFUNDED)
    assert store.get_machine_state("cab001").revenue == {"usd": 0}


def test_given_concurrent_deliveries_of_one_refund_then_it_counts_once(
    store: Store, undelivered: Payment
) -> None:
    """Eight copies of one charge.refunded at once take the amount off once."""
    results = run_together(lambda: store.record_refund("cs_1", 120, PARTIALLY_REFUNDED, now=T1))

    assert sorted(results) == [0] * (THREADS - 1) + [120]
    assert store.get_machine_state("cab001").revenue == {"usd": 80}


def test_given_a_payment_not_granted_when_refunded_then_nothing_changes(store: Store) -> None:
    """A refund of a payment that counted nowhere takes nothing off revenue."""
    store.record_payment(make_payment(status=PENDING_PAYMENT))

    assert store.record_refund("cs_1", 200, REFUNDED, now=T1) == 0
    assert store.record_refund("cs_missing", 200, REFUNDED, now=T1) == 0
    assert store.get_machine_state("cab001") == MachineState(machine_id="cab001")


# --- lookups ----------------------------------------------------------------------------------
def test_given_a_payment_when_looked_up_by_its_intent_then_found(
    store: Store, machine: Machine
) -> None:
    """charge.refunded names a PaymentIntent; it leads to the payment."""
    store.grant_payment(make_payment(payment_id="cs_1", payment_intent="pi_A"))
    store.record_payment(
        make_payment(payment_id="cs_2", status=PENDING_PAYMENT, payment_intent="pi_B")
    )

    assert store.get_payment_by_intent("pi_A") == make_payment(
        payment_id="cs_1", payment_intent="pi_A"
    )
    assert store.get_payment_by_intent("pi_B").payment_id == "cs_2"


def test_given_payments_of_two_machines_when_listed_then_newest_first_limited_and_own(
    store: Store, machine: Machine
) -> None:
    """A machine's page shows its own latest payments, newest first."""
    store.add_machine(make_machine(machine_id="cab002"))
    times = [f"2026-11-22T10:0{minute}:00Z" for minute in range(5)]
    for number, created_at in enumerate(times):
        store.grant_payment(make_payment(payment_id=f"cs_{number}", created_at=created_at))
    store.record_payment(
        make_payment(
            payment_id="cs_pending", status=PENDING_PAYMENT, created_at="2026-11-22T11:00:00Z"
        )
    )
    store.grant_payment(
        make_payment(payment_id="cs_other", machine_id="cab002", created_at="2026-11-22T12:00:00Z")
    )

    newest = store.list_payments("cab001", limit=3)

    assert [p.payment_id for p in newest] == ["cs_pending", "cs_4", "cs_3"]
    assert newest[1] == make_payment(payment_id="cs_4", created_at=times[4])
    assert len(store.list_payments("cab001")) == 6
    assert [p.payment_id for p in store.list_payments("cab002")] == ["cs_other"]
    assert store.list_payments("cab003") == []


# --- machine state ----------------------------------------------------------------------------
def test_given_nothing_stored_when_state_read_then_zeros_and_version_zero(store: Store) -> None:
    """A machine that never paid or played has an empty state."""
    state = store.get_machine_state("cab001")

    assert state == MachineState(machine_id="cab001")
    assert (state.credits_left, state.version, state.revenue) == (0, 0, {})


def test_given_a_fresh_state_when_updated_then_counters_and_session_are_stored(
    store: Store,
) -> None:
    """The counters and the session read back and the version moves on."""
    state = store.get_machine_state("cab001").with_changes(
        credits_used=1,
        games_without_credit=2,
        session_id="s1",
        session_started_at=T1,
        last_game_over_key="cab001-key-1",
    )

    assert store.update_machine_state(state) is True

    stored = store.get_machine_state("cab001")
    assert stored.with_changes(version=0) == state
    assert stored.version > state.version


def test_given_an_open_session_when_closed_then_the_session_is_gone(store: Store) -> None:
    """A game over clears both session fields."""
    store.update_machine_state(
        MachineState(machine_id="cab001", session_id="s1", session_started_at=T1)
    )
    opened = store.get_machine_state("cab001")

    assert store.update_machine_state(
        opened.with_changes(session_id=None, session_started_at=None, credits_used=1)
    )

    closed = store.get_machine_state("cab001")
    assert (closed.session_id, closed.session_started_at, closed.credits_used) == (None, None, 1)


def test_given_a_stale_state_when_updated_then_refused_and_nothing_changes(store: Store) -> None:
    """A write based on an old read loses to the one that got there first."""
    stale = store.get_machine_state("cab001")
    store.update_machine_state(stale.with_changes(credits_used=1))
    winner = store.get_machine_state("cab001")

    assert store.update_machine_state(stale.with_changes(credits_used=5)) is False

    assert store.get_machine_state("cab001") == winner


def test_given_a_state_when_updated_with_other_granted_and_revenue_then_those_are_not_written(
    store: Store, machine: Machine
) -> None:
    """Credits granted and revenue move only through grants and refunds."""
    store.grant_payment(make_payment())
    state = store.get_machine_state("cab001")

    store.update_machine_state(
        state.with_changes(credits_used=1, credits_granted=99, revenue={"usd": 1})
    )

    stored = store.get_machine_state("cab001")
    assert (stored.credits_used, stored.credits_granted, stored.revenue) == (1, 2, {"usd": 200})


def test_given_a_grant_after_a_read_when_the_state_is_written_then_refused_and_grant_kept(
    store: Store, machine: Machine
) -> None:
    """A game over that read the state before a grant cannot wipe out the new credits."""
    read = store.get_machine_state("cab001")
    store.grant_payment(make_payment())

    assert store.update_machine_state(read.with_changes(credits_used=1)) is False

    again = store.get_machine_state("cab001")
    assert (again.credits_granted, again.credits_used) == (2, 0)
    assert store.update_machine_state(again.with_changes(credits_used=1)) is True
    assert store.get_machine_state("cab001").credits_left == 1


def test_given_concurrent_read_modify_write_loops_then_no_update_is_lost(store: Store) -> None:
    """Eight game overs at once, each retrying on a stale read, use eight credits."""

    def use_one_credit() -> int:
        attempts = 0
        while True:
            attempts += 1
            state = store.get_machine_state("cab001")
            if store.update_machine_state(state.with_changes(credits_used=state.credits_used + 1)):
                return attempts

    attempts = run_together(use_one_credit)

    assert store.get_machine_state("cab001").credits_used == THREADS
    assert sum(attempts) >= THREADS


# --- DynamoDB only: what the contract cannot say ---------------------------------------------
def test_given_the_dynamodb_module_when_imported_then_no_sdk_is_loaded() -> None:
    """A Lambda cold start that never touches the store does not pay for boto3."""
    code = (
        "import sys, arcade.store.dynamodb; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout

    assert loaded.strip() == "[]"


def test_given_no_client_when_used_then_one_is_made_from_the_aws_settings(
    moto_endpoint: str, dynamodb_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_REGION and AWS_ENDPOINT_URL choose where the default client goes."""
    from arcade.store.dynamodb import DynamoStore

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    store = DynamoStore(dynamodb_table)

    store.create_table()
    store.create_table()
    store.add_machine(make_machine())

    assert store.get_machine("cab001") == make_machine()


def test_given_a_missing_table_when_used_then_a_store_error_in_our_words(
    dynamodb_client: Any,
) -> None:
    """The SDK's text never reaches a person; the message names the table and the fix."""
    from arcade.store.dynamodb import DynamoStore

    store = DynamoStore("arcade-missing", client=dynamodb_client)

    with pytest.raises(StoreError, match="arcade-missing.*does not exist") as raised:
        store.get_machine("cab001")

    assert type(raised.value) is StoreError
    assert "ResourceNotFound" not in str(raised.value)
