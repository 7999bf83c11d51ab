"""One contract for every store back end: what the ledger relies on, run against each of them.

SQLite runs on a temporary file; DynamoDB runs against moto in server mode on a loopback port,
so every call crosses real HTTP through boto3, as it does in Lambda. The stores keep no rule
about payments (those are ``arcade.ledger``'s and ``arcade.payment_states``'s): what is checked
here is only what they promise, records that read back as written, versioned writes that are
all or nothing, deltas that add up, and game-over keys that are taken once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest

from arcade.clock import parse_iso
from arcade.errors import MachineExists, StoreError, UnknownMachine
from arcade.payment_states import (
    DISPUTED,
    PAID,
    PENDING_DELIVERY,
    PENDING_PAYMENT,
    REFUNDED,
    UNATTRIBUTED,
)
from arcade.store.base import (
    UPDATABLE_MACHINE_FIELDS,
    ChangeRecord,
    GameOverKey,
    IntentRecord,
    Lost,
    Machine,
    MachineState,
    Payment,
    PaymentLink,
    PaymentQuery,
    PlanVersion,
    RevenueEntry,
    SessionStart,
    StateDelta,
    Store,
    instant_fields,
    link_key,
)

THREADS = 8
# Instants as records hold them: aware datetimes, one minute apart.
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 22, 10, 1, tzinfo=UTC)
T2 = datetime(2026, 11, 22, 10, 2, tzinfo=UTC)
T3 = datetime(2026, 11, 22, 10, 3, tzinfo=UTC)
GRANT = StateDelta("cab001", 2, 200, "usd")  # what make_payment() adds to cab001 when granted

Versioned = TypeVar("Versioned", Payment, IntentRecord)
Record = TypeVar("Record")


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


def make_payment(*, payment_id: str = "cs_1", phase: str = PAID, **fields: Any) -> Payment:
    """Return a payment of 2 credits for 200 usd cents to cab001, not stored yet (version 0).

    Once paid it is granted at T0 and claimed until T1; any other phase is its own status.
    """
    values: dict[str, Any] = {
        "status": PENDING_DELIVERY if phase == PAID else phase,
        "created_at": T0,
        "machine_id": "cab001",
        "credits": 2,
        "amount": 200,
        "currency": "usd",
        "payment_intent": f"pi_{payment_id}",
        "phase": phase,
    }
    if phase == PAID:
        values |= {"granted_at": T0, "delivery_claimed_until": T1}
    return Payment(payment_id=payment_id, **(values | fields))


def make_intent(*, payment_intent: str = "pi_cs_1", **fields: Any) -> IntentRecord:
    """Return the PaymentIntent record of cs_1, not stored yet (version 0)."""
    values: dict[str, Any] = {"payment_id": "cs_1", "updated_at": T0}
    return IntentRecord(payment_intent=payment_intent, **(values | fields))


def make_key(*, key: str = "key-1", machine_id: str = "cab001", **fields: Any) -> GameOverKey:
    """Return cab001's game-over key made at T0 and remembered until T2."""
    values: dict[str, Any] = {"created_at": T0, "expires_at": T2}
    return GameOverKey(machine_id=machine_id, key=key, **(values | fields))


def written(record: Versioned) -> Versioned:
    """Return a record committed at its version as it reads back: one version on."""
    return replace(record, version=record.version + 1)


def commit_ok(store: Store, payment: Payment | None, **parts: Any) -> None:
    """Commit and insist that it was written (the setup of a test, not what it checks)."""
    assert store.commit_payment(payment, **parts) is True


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
    commit_ok(store, make_payment(), delta=GRANT)
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
    store.update_machine("cab001", token_hash="new-hash")

    assert store.get_machine("cab001") == make_machine(token_hash="new-hash")


def test_given_no_machine_when_its_token_hash_is_set_then_unknown_machine(store: Store) -> None:
    """Setting the hash of an unknown machine is refused and registers nothing."""
    with pytest.raises(UnknownMachine, match="^machine nobody is not registered$"):
        store.update_machine("nobody", token_hash="hash")

    assert store.get_machine("nobody") is None


# Each field update_machine may set, with a value unlike make_machine's.
NEW_VALUES: dict[str, str | int | datetime] = {
    "token_hash": "hash-rotated",
    "created_at": T1,
    "name": "Renamed",
    "price_id": "price_456",
    "credits_per_unit": 3,
    "last_seen": T2,
    "mqtt_connected": 1,
    "credits_reported": 7,
    "links_active": 0,
    "credits_per_game": 2,
    "timezone": "Europe/Paris",
}


def test_every_field_update_machine_may_set_is_listed_here() -> None:
    """The tests below try each field a machine update may set: a new field joins them."""
    assert set(NEW_VALUES) == UPDATABLE_MACHINE_FIELDS


def test_given_a_machine_when_each_field_is_updated_then_only_that_field_changes(
    store: Store, machine: Machine
) -> None:
    """One field at a time: it reads back as set, every other field as it was."""
    expected = machine
    for name, value in NEW_VALUES.items():
        store.update_machine("cab001", **{name: value})
        expected = replace(expected, **{name: value})

        assert store.get_machine("cab001") == expected, name
    assert store.list_machines() == [expected]


def test_given_a_machine_when_several_fields_are_updated_at_once_then_all_change(
    store: Store, machine: Machine
) -> None:
    """A heartbeat's three fields are written together; the others stay."""
    store.update_machine("cab001", last_seen=T1, mqtt_connected=1, credits_reported=4)

    assert store.get_machine("cab001") == replace(
        machine, last_seen=T1, mqtt_connected=1, credits_reported=4
    )


def test_given_a_machine_when_optional_fields_are_set_to_none_then_they_are_cleared(
    store: Store, machine: Machine
) -> None:
    """None clears a field, alone or beside fields given a value, and reads back as None."""
    full = replace(machine, **NEW_VALUES)
    store.update_machine("cab001", **NEW_VALUES)
    assert store.get_machine("cab001") == full

    store.update_machine("cab001", last_seen=T3, mqtt_connected=0, credits_reported=None)
    assert store.get_machine("cab001") == replace(
        full, last_seen=T3, mqtt_connected=0, credits_reported=None
    )

    optional = NEW_VALUES.keys() - {"token_hash", "created_at"}
    store.update_machine("cab001", **dict.fromkeys(optional))
    assert store.get_machine("cab001") == Machine(
        machine_id="cab001", token_hash="hash-rotated", created_at=T1
    )


def test_given_a_heartbeat_when_an_older_one_is_stored_then_last_seen_goes_back(
    store: Store, machine: Machine
) -> None:
    """The store puts no condition on the values: a later write wins, whatever it says."""
    store.update_machine("cab001", last_seen=T2, mqtt_connected=1, credits_reported=1)
    store.update_machine("cab001", last_seen=T0, mqtt_connected=0, credits_reported=2)

    stored = store.get_machine("cab001")
    assert (stored.last_seen, stored.mqtt_connected, stored.credits_reported) == (T0, 0, 2)


@pytest.mark.parametrize(
    "changes",
    [
        {"token_hash": "hash"},
        {"last_seen": T1, "mqtt_connected": 1, "credits_reported": None},
        {"links_active": 0},
        {"credits_per_game": 2, "timezone": "Europe/Paris"},
        {"credits_per_game": None, "timezone": None},  # only clears: no value to write
    ],
)
def test_given_no_machine_when_updated_then_unknown_machine_and_nothing_is_stored(
    store: Store, changes: dict[str, Any]
) -> None:
    """An update never registers a machine, whatever it sets or clears."""
    with pytest.raises(UnknownMachine, match="^machine nobody is not registered$"):
        store.update_machine("nobody", **changes)

    assert store.get_machine("nobody") is None
    assert store.list_machines() == []


def test_given_a_removed_machine_when_updated_then_unknown_machine_and_it_stays_gone(
    store: Store, machine: Machine
) -> None:
    """A removed machine is unknown to an update, which does not bring it back."""
    store.remove_machine("cab001")

    for changes in (
        {"token_hash": "hash"},
        {"last_seen": T1, "mqtt_connected": 1, "credits_reported": 2},
        {"links_active": 1},
        {"credits_per_game": None, "timezone": None},
    ):
        with pytest.raises(UnknownMachine, match="^machine cab001 is not registered$"):
            store.update_machine("cab001", **changes)

    assert store.get_machine("cab001") is None
    assert store.list_machines() == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "at least one field"),
        ({"machine_id": "cab002"}, "no field machine_id"),
        ({"nickname": "x", "name": "y"}, "no field nickname"),
        ({"mqtt_connected": True}, "mqtt_connected cannot be stored as bool"),
        ({"credits_per_game": 1.5}, "credits_per_game cannot be stored as float"),
        ({"token_hash": None}, "token_hash cannot be cleared"),
        ({"created_at": None}, "created_at cannot be cleared"),
        ({"last_seen": "2026-11-01T10:00:00.000000Z"}, "last_seen is an instant"),
    ],
)
def test_given_a_machine_when_updated_with_what_it_cannot_hold_then_type_error_and_no_write(
    store: Store, machine: Machine, changes: dict[str, Any], message: str
) -> None:
    """No field, the key, a name that is no field, a bool, a float, clearing a field every
    machine has or an instant given as text is refused before anything is written."""
    with pytest.raises(TypeError, match=message):
        store.update_machine("cab001", **changes)

    assert store.get_machine("cab001") == machine


def test_given_a_machine_with_payments_when_removed_then_it_is_gone_and_payments_stay(
    store: Store, machine: Machine
) -> None:
    """Removing a machine keeps the money trail."""
    commit_ok(store, make_payment(), delta=GRANT)

    store.remove_machine("cab001")

    assert store.get_machine("cab001") is None
    assert store.list_machines() == []
    assert store.get_payment("cs_1") == written(make_payment())
    assert _ids(store.query_payments(PaymentQuery(machine_id="cab001"))) == ["cs_1"]


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


def test_given_a_link_when_retired_and_restored_then_key_id_and_list_agree(
    store: Store,
) -> None:
    """A retired link reads back retired by key, by Stripe id and in the machine's list; one
    restored reads back selling again; a link not stored cannot be retired."""
    link = store.put_link(make_link(quantity=0))

    assert store.set_link_retired(link, T1)
    retired = replace(link, retired_at=T1)
    assert store.get_link(link.key) == retired
    assert store.get_link_by_id(link.link_id) == retired
    assert store.list_links("cab001") == [retired]

    assert store.set_link_retired(link, None)
    assert store.get_link(link.key) == link
    assert store.get_link_by_id(link.link_id) == link
    assert not store.set_link_retired(make_link(link_id="plink_missing", quantity=5), T1)
    assert store.get_link(link_key("cab001", "price_123", 5)) is None


def test_given_no_link_when_read_then_none(store: Store) -> None:
    """Unknown keys and ids read as None."""
    assert store.get_link(link_key("cab001", "price_123", 1)) is None
    assert store.get_link_by_id("plink_missing") is None


def test_given_links_of_two_machines_when_listed_then_each_machine_has_its_own(
    store: Store,
) -> None:
    """list_links returns every link of one machine, whatever its quantity, and no other's."""
    one = store.put_link(make_link(link_id="plink_1", quantity=1))
    three = store.put_link(make_link(link_id="plink_3", quantity=3))
    other = store.put_link(
        make_link(
            link_id="plink_other",
            machine_id="cab002",
            url="https://buy.stripe.com/plink_other?client_reference_id=cab002",
        )
    )

    listed = sorted(store.list_links("cab001"), key=lambda link: link.link_id)

    assert listed == [one, three]
    assert store.list_links("cab002") == [other]
    assert store.list_links("cab003") == []


# --- payments: versioned commits --------------------------------------------------------------
def test_given_no_payment_when_committed_at_version_zero_then_it_reads_back_with_version_one(
    store: Store,
) -> None:
    """A new payment is written at version 1 and reads back otherwise equal."""
    payment = make_payment()

    assert store.commit_payment(payment) is True

    assert store.get_payment("cs_1") == replace(payment, version=1)
    assert store.get_intent("pi_cs_1") is None
    assert store.get_machine_state("cab001") == MachineState(machine_id="cab001")


def test_given_payments_with_every_or_no_optional_field_when_committed_then_they_read_back_equal(
    store: Store,
) -> None:
    """Each field round-trips, None included, on both back ends."""
    full = make_payment(
        payment_id="cs_full",
        status=DISPUTED,
        amount_refunded=50,
        delivered_at=T1,
        updated_at=T2,
        reason="a reason",
        disputed_at=T3,
        currency="eur",
    )
    bare = Payment(payment_id="cs_bare", status=UNATTRIBUTED, created_at=T0)

    commit_ok(store, full)
    commit_ok(store, bare)

    assert store.get_payment("cs_full") == written(full)
    assert store.get_payment("cs_bare") == written(bare)


def test_given_no_payment_or_intent_when_read_then_none(store: Store) -> None:
    """Unknown payment and PaymentIntent ids read as None."""
    assert store.get_payment("cs_missing") is None
    assert store.get_intent("pi_missing") is None


def test_given_a_stored_payment_when_committed_at_the_version_read_then_replaced_and_moved_on(
    store: Store,
) -> None:
    """A change based on a fresh read is written whole, one version further."""
    commit_ok(store, make_payment(phase=PENDING_PAYMENT))
    read = store.get_payment("cs_1")
    changed = make_payment(updated_at=T1, version=read.version)

    assert store.commit_payment(changed) is True

    assert store.get_payment("cs_1") == replace(changed, version=2)


@pytest.mark.parametrize("stale", [0, 1, 3])
def test_given_a_stored_payment_when_committed_at_another_version_then_refused_and_nothing_changes(
    store: Store, stale: int
) -> None:
    """A commit from a stale (or no, or a future) read writes neither payment, intent nor state."""
    commit_ok(store, make_payment(phase=PENDING_PAYMENT))
    commit_ok(store, written(make_payment(phase=PENDING_PAYMENT)), intent=make_intent())
    payment, intent, state = (
        store.get_payment("cs_1"),
        store.get_intent("pi_cs_1"),
        store.get_machine_state("cab001"),
    )
    assert payment.version == 2

    refused = store.commit_payment(
        make_payment(version=stale),
        intent=make_intent(version=intent.version, amount_refunded=50),
        delta=GRANT,
    )

    assert not refused
    assert refused == Lost(payment=payment)  # what won, from the refusal itself
    assert store.get_payment("cs_1") == payment
    assert store.get_intent("pi_cs_1") == intent
    assert store.get_machine_state("cab001") == state


def test_given_no_payment_when_committed_at_a_version_then_refused_and_nothing_is_stored(
    store: Store,
) -> None:
    """A payment that was never written cannot be replaced from a read that never happened."""
    refused = store.commit_payment(make_payment(version=1), delta=GRANT)

    assert not refused
    assert refused == Lost()

    assert store.get_payment("cs_1") is None
    assert store.get_machine_state("cab001") == MachineState(machine_id="cab001")


def test_given_a_fresh_payment_and_a_stale_intent_when_committed_then_nothing_is_written(
    store: Store,
) -> None:
    """All or nothing: the intent's version alone moving refuses the payment and the delta."""
    commit_ok(store, None, intent=make_intent())
    stored_intent = store.get_intent("pi_cs_1")

    refused = store.commit_payment(
        make_payment(), intent=make_intent(amount_refunded=50), delta=GRANT
    )

    assert not refused
    assert refused == Lost(intent=stored_intent)
    assert store.get_payment("cs_1") is None
    assert store.get_intent("pi_cs_1") == stored_intent
    assert store.get_machine_state("cab001") == MachineState(machine_id="cab001")


def test_given_a_stale_payment_and_a_fresh_intent_when_committed_then_nothing_is_written(
    store: Store,
) -> None:
    """All or nothing: the payment's version alone moving refuses the intent and the delta."""
    commit_ok(store, make_payment(phase=PENDING_PAYMENT))
    stored_payment = store.get_payment("cs_1")

    refused = store.commit_payment(make_payment(), intent=make_intent(), delta=GRANT)

    assert not refused
    assert refused == Lost(payment=stored_payment)
    assert store.get_payment("cs_1") == stored_payment
    assert store.get_intent("pi_cs_1") is None
    assert store.get_machine_state("cab001") == MachineState(machine_id="cab001")


# --- payments: intents ------------------------------------------------------------------------
def test_given_no_intent_when_committed_alone_then_it_is_stored(store: Store) -> None:
    """A refund that arrives before its session is kept on the intent, with no payment."""
    early = make_intent(payment_id=None, amount_refunded=80, disputed_at=T1, updated_at=T1)

    assert store.commit_payment(None, intent=early) is True

    assert store.get_intent("pi_cs_1") == written(early)
    assert store.get_payment("cs_1") is None


def test_given_a_stored_intent_when_committed_alone_at_its_version_then_it_moves_on(
    store: Store,
) -> None:
    """An intent is versioned like a payment: the fresh read wins, the stale one is refused."""
    commit_ok(store, None, intent=make_intent(payment_id=None))
    read = store.get_intent("pi_cs_1")
    later = replace(read, amount_refunded=120, updated_at=T2)

    assert store.commit_payment(None, intent=later) is True
    refused = store.commit_payment(None, intent=replace(read, amount_refunded=10))
    assert not refused
    assert refused == Lost(intent=written(later))

    assert store.get_intent("pi_cs_1") == written(later)
    assert store.get_intent("pi_cs_1").version == 2


def test_given_a_payment_and_its_intent_when_committed_together_then_both_read_back(
    store: Store,
) -> None:
    """The session and its PaymentIntent's pointer to it are written in one go."""
    payment = make_payment()
    intent = make_intent()

    assert store.commit_payment(payment, intent=intent, delta=GRANT) is True

    assert store.get_payment("cs_1") == written(payment)
    assert store.get_intent("pi_cs_1") == written(intent)
    state = store.get_machine_state("cab001")
    assert (state.credits_granted, state.revenue) == (2, {"usd": 200})


# --- payments: deltas -------------------------------------------------------------------------
def test_given_a_delta_when_committed_then_credits_and_revenue_are_added_and_the_state_moves_on(
    store: Store,
) -> None:
    """A grant's delta adds its credits and amount to the machine and moves its version on."""
    before = store.get_machine_state("cab001")

    assert store.commit_payment(make_payment(), delta=GRANT) is True

    state = store.get_machine_state("cab001")
    assert (state.credits_granted, state.revenue) == (2, {"usd": 200})
    assert (state.credits_used, state.session_id) == (0, None)
    assert state.version > before.version


def test_given_no_open_session_when_a_commit_opens_one_then_it_is_stored_with_the_write(
    store: Store,
) -> None:
    """Marking a grant delivered opens the machine's play session in the same write, with a
    delta on the same state item when the grant's counted credits changed meanwhile."""
    commit_ok(store, make_payment(), delta=GRANT)
    before = store.get_machine_state("cab001")
    delivered = replace(store.get_payment("cs_1"), delivered_at=T1, updated_at=T1)

    assert store.commit_payment(
        delivered, delta=GRANT, open_session=SessionStart("cab001", "s1", T1)
    )

    state = store.get_machine_state("cab001")
    assert (state.session_id, state.session_started_at) == ("s1", T1)
    assert (state.credits_granted, state.revenue) == (4, {"usd": 400})
    assert state.version > before.version
    assert store.get_payment("cs_1") == written(delivered)


def test_given_no_state_when_a_session_is_opened_alone_then_the_state_holds_only_it(
    store: Store,
) -> None:
    """A session opened on a machine with no state yet starts from zero counters."""
    assert store.commit_payment(None, open_session=SessionStart("cab009", "s9", T0))

    state = store.get_machine_state("cab009")
    assert (state.session_id, state.session_started_at) == ("s9", T0)
    assert (state.credits_granted, state.credits_used, state.revenue) == (0, 0, {})
    assert state.version >= 1


def test_given_an_open_session_when_a_commit_opens_another_then_the_first_is_kept(
    store: Store,
) -> None:
    """A machine already playing keeps its session; the payment is written all the same."""
    store.update_machine_state(
        MachineState(machine_id="cab001", session_id="s1", session_started_at=T0)
    )

    assert store.commit_payment(make_payment(), open_session=SessionStart("cab001", "s2", T1))

    state = store.get_machine_state("cab001")
    assert (state.session_id, state.session_started_at) == ("s1", T0)
    assert store.get_payment("cs_1") is not None


def test_given_a_stale_payment_when_a_commit_opens_a_session_then_nothing_is_written(
    store: Store,
) -> None:
    """All or nothing: a payment whose version moved leaves the session closed too."""
    commit_ok(store, make_payment())
    stale = make_payment(updated_at=T1)  # version 0, but version 1 is stored

    assert not store.commit_payment(stale, open_session=SessionStart("cab001", "s1", T1))

    assert store.get_machine_state("cab001").session_id is None


def test_given_deltas_in_two_currencies_when_committed_then_revenue_is_kept_per_currency(
    store: Store,
) -> None:
    """Revenue adds up per currency; credits add up across them."""
    commit_ok(store, make_payment(payment_id="cs_1"), delta=StateDelta("cab001", 2, 200, "usd"))
    commit_ok(store, make_payment(payment_id="cs_2"), delta=StateDelta("cab001", 2, 300, "usd"))
    commit_ok(store, make_payment(payment_id="cs_3"), delta=StateDelta("cab001", 2, 150, "eur"))

    state = store.get_machine_state("cab001")

    assert state.revenue == {"usd": 500, "eur": 150}
    assert state.credits_granted == 6


def test_given_a_negative_delta_when_committed_then_credits_and_revenue_drop(
    store: Store,
) -> None:
    """A refund or a cancelled grant takes off what was counted, in its own currency only."""
    commit_ok(store, make_payment(payment_id="cs_1"), delta=StateDelta("cab001", 2, 200, "usd"))
    commit_ok(store, make_payment(payment_id="cs_2"), delta=StateDelta("cab001", 2, 150, "eur"))
    granted = store.get_payment("cs_1")
    refunded = replace(granted, amount_refunded=200, status=REFUNDED, updated_at=T1)

    assert store.commit_payment(refunded, delta=StateDelta("cab001", -2, -200, "usd")) is True

    state = store.get_machine_state("cab001")
    assert (state.credits_granted, state.revenue) == (2, {"usd": 0, "eur": 150})
    assert store.get_payment("cs_1") == written(refunded)


def test_given_deltas_of_two_machines_when_committed_then_each_machine_counts_its_own(
    store: Store,
) -> None:
    """A delta moves only the machine it names."""
    commit_ok(store, make_payment(payment_id="cs_1"), delta=GRANT)
    commit_ok(
        store,
        make_payment(payment_id="cs_2", machine_id="cab002"),
        delta=StateDelta("cab002", 3, 300, "usd"),
    )

    one, two = store.get_machine_state("cab001"), store.get_machine_state("cab002")

    assert (one.credits_granted, one.revenue) == (2, {"usd": 200})
    assert (two.credits_granted, two.revenue) == (3, {"usd": 300})


# --- payments: concurrency --------------------------------------------------------------------
def test_given_concurrent_commits_of_one_new_payment_then_exactly_one_counts(
    store: Store,
) -> None:
    """Eight deliveries of the same event at once store it once and add its delta once."""
    results = run_together(lambda: store.commit_payment(make_payment(), delta=GRANT))

    assert sorted(bool(result) for result in results) == [False] * (THREADS - 1) + [True]
    assert store.get_payment("cs_1") == written(make_payment())
    # Each loser is told what won, with no read of its own.
    lost = [result for result in results if result is not True]
    assert lost == [Lost(payment=written(make_payment()))] * (THREADS - 1)
    state = store.get_machine_state("cab001")
    assert (state.credits_granted, state.revenue) == (2, {"usd": 200})


def test_given_concurrent_read_modify_write_loops_on_one_payment_then_no_update_is_lost(
    store: Store,
) -> None:
    """Eight refunds at once, each retrying on a stale read, each count once, with its delta."""
    commit_ok(store, make_payment(amount=800), delta=StateDelta("cab001", 2, 800, "usd"))

    def refund_one_cent() -> int:
        attempts = 0
        while True:
            attempts += 1
            read = store.get_payment("cs_1")
            refunded = replace(read, amount_refunded=read.amount_refunded + 1)
            if store.commit_payment(refunded, delta=StateDelta("cab001", 0, -1, "usd")):
                return attempts

    attempts = run_together(refund_one_cent)

    stored = store.get_payment("cs_1")
    assert (stored.amount_refunded, stored.version) == (THREADS, THREADS + 1)
    assert store.get_machine_state("cab001").revenue == {"usd": 800 - THREADS}
    assert sum(attempts) >= THREADS


# --- payments: listing ------------------------------------------------------------------------
def test_given_payments_of_two_machines_when_listed_then_newest_first_limited_and_own(
    store: Store, machine: Machine
) -> None:
    """A machine's page shows its own latest payments, newest first; a stray one is nowhere."""
    store.add_machine(make_machine(machine_id="cab002"))
    times = [T0 + timedelta(minutes=minute) for minute in range(5)]
    for number, created_at in enumerate(times):
        commit_ok(
            store, make_payment(payment_id=f"cs_{number}", created_at=created_at), delta=GRANT
        )
    commit_ok(
        store,
        make_payment(
            payment_id="cs_pending",
            phase=PENDING_PAYMENT,
            created_at=parse_iso("2026-11-22T11:00:00.000000Z"),
        ),
    )
    commit_ok(
        store,
        make_payment(
            payment_id="cs_other",
            machine_id="cab002",
            created_at=parse_iso("2026-11-22T12:00:00.000000Z"),
        ),
        delta=StateDelta("cab002", 2, 200, "usd"),
    )
    stray = make_payment(
        payment_id="cs_stray",
        phase=PAID,
        status=UNATTRIBUTED,
        machine_id=None,
        credits=0,
        payment_intent=None,
        granted_at=None,
        delivery_claimed_until=None,
        reason="no machine",
        created_at=parse_iso("2026-11-22T13:00:00.000000Z"),
    )
    commit_ok(store, stray)

    newest, more = store.query_payments(PaymentQuery(machine_id="cab001", limit=3))

    assert [p.payment_id for p in newest] == ["cs_pending", "cs_4", "cs_3"]
    assert more is True
    assert newest[1] == written(make_payment(payment_id="cs_4", created_at=times[4]))
    assert len(store.query_payments(PaymentQuery(machine_id="cab001", limit=20))[0]) == 6
    assert _ids(store.query_payments(PaymentQuery(machine_id="cab002"))) == ["cs_other"]
    assert store.query_payments(PaymentQuery(machine_id="cab003")) == ([], False)
    assert store.get_payment("cs_stray") == written(stray)


def test_given_a_machines_payments_made_at_one_instant_when_listed_then_by_id_descending(
    store: Store, machine: Machine
) -> None:
    """Payments created at the same instant come by id descending, whatever order they were
    written in, on every back end."""
    for payment_id in ("cs_b", "cs_c", "cs_a"):
        commit_ok(store, make_payment(payment_id=payment_id), delta=GRANT)

    assert _ids(store.query_payments(PaymentQuery(machine_id="cab001"))) == ["cs_c", "cs_b", "cs_a"]


# --- the outbox -------------------------------------------------------------------------------
def test_given_payments_due_at_several_instants_when_listed_due_then_only_those_due_earliest_first(
    store: Store, machine: Machine
) -> None:
    """The relay is shown the grants whose due_at has passed, earliest first, at most limit."""
    for number, due in enumerate([T2, T0, T3, T1]):
        commit_ok(store, make_payment(payment_id=f"cs_due_{number}", due_at=due))
    commit_ok(store, make_payment(payment_id="cs_not_owed", due_at=None))

    due = store.list_due(T2)

    assert [p.payment_id for p in due] == ["cs_due_1", "cs_due_3", "cs_due_0"]
    assert [p.payment_id for p in store.list_due(T3, limit=2)] == ["cs_due_1", "cs_due_3"]
    assert store.list_due(datetime(2026, 11, 22, 9, tzinfo=UTC)) == []


def test_given_an_owed_payment_when_written_without_due_at_then_it_leaves_the_outbox(
    store: Store, machine: Machine
) -> None:
    """A delivered grant is no longer the relay's business."""
    owed = make_payment(due_at=T0)
    commit_ok(store, owed)

    commit_ok(store, replace(written(owed), due_at=None, delivered_at=T1))

    assert store.list_due(T3) == []
    assert store.get_payment("cs_1").delivered_at == T1


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
    """Credits granted and revenue move only with payments (commit_payment's delta)."""
    commit_ok(store, make_payment(), delta=GRANT)
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
    commit_ok(store, make_payment(), delta=GRANT)

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


# --- game-over keys ---------------------------------------------------------------------------
def test_given_no_key_when_read_then_none(store: Store) -> None:
    """An unknown key reads as None."""
    assert store.get_game_over_key("cab001", "key-missing") is None


def test_given_a_free_key_when_put_with_a_state_update_then_both_are_stored(
    store: Store,
) -> None:
    """A game over's key is stored with the credit it used, in one write."""
    state = store.get_machine_state("cab001").with_changes(credits_used=1)

    assert store.update_machine_state(state, put_key=make_key()) is True

    assert store.get_game_over_key("cab001", "key-1") == make_key()
    assert store.get_machine_state("cab001").credits_used == 1


@pytest.mark.parametrize("created_at", [T1, T2], ids=["before-expiry", "at-expiry"])
def test_given_an_unexpired_key_when_put_again_then_refused_and_the_state_unchanged(
    store: Store, created_at: datetime
) -> None:
    """A repeated game over counts nothing while its key lives, through its last instant."""
    store.update_machine_state(
        store.get_machine_state("cab001").with_changes(credits_used=1), put_key=make_key()
    )
    state = store.get_machine_state("cab001")

    again = store.update_machine_state(
        state.with_changes(credits_used=2),
        put_key=make_key(created_at=created_at, expires_at=T3),
    )

    assert again is False
    assert store.get_machine_state("cab001") == state
    assert store.get_game_over_key("cab001", "key-1") == make_key()


def test_given_an_expired_key_when_put_again_then_it_is_replaced(store: Store) -> None:
    """A key whose time ran out is free again and takes the new record."""
    store.update_machine_state(
        store.get_machine_state("cab001"), put_key=make_key(created_at=T0, expires_at=T1)
    )
    state = store.get_machine_state("cab001")
    renewed = make_key(created_at=T2, expires_at=T3)

    assert store.update_machine_state(state.with_changes(credits_used=1), put_key=renewed) is True

    assert store.get_game_over_key("cab001", "key-1") == renewed
    assert store.get_machine_state("cab001").credits_used == 1


def test_given_a_key_of_one_machine_when_another_puts_the_same_name_then_both_are_stored(
    store: Store,
) -> None:
    """Keys are remembered per machine: one cabinet's key never blocks another's."""
    store.update_machine_state(store.get_machine_state("cab001"), put_key=make_key())
    other = make_key(machine_id="cab002")

    assert store.update_machine_state(store.get_machine_state("cab002"), put_key=other) is True

    assert store.get_game_over_key("cab001", "key-1") == make_key()
    assert store.get_game_over_key("cab002", "key-1") == other


def test_given_a_key_when_deleted_with_a_state_update_then_it_is_forgotten(
    store: Store,
) -> None:
    """An undone game over forgets its key, so a retry counts."""
    store.update_machine_state(
        store.get_machine_state("cab001").with_changes(credits_used=1), put_key=make_key()
    )
    state = store.get_machine_state("cab001")

    undone = store.update_machine_state(state.with_changes(credits_used=0), delete_key=make_key())

    assert undone is True
    assert store.get_game_over_key("cab001", "key-1") is None
    assert store.get_machine_state("cab001").credits_used == 0
    assert store.update_machine_state(store.get_machine_state("cab001"), put_key=make_key())


def test_given_a_stale_state_when_a_key_is_deleted_then_refused_and_the_key_kept(
    store: Store,
) -> None:
    """All or nothing: a refused state write forgets no key."""
    stale = store.get_machine_state("cab001")
    store.update_machine_state(stale.with_changes(credits_used=1), put_key=make_key())

    assert store.update_machine_state(stale, delete_key=make_key()) is False

    assert store.get_game_over_key("cab001", "key-1") == make_key()
    assert store.get_machine_state("cab001").credits_used == 1


def test_given_a_key_when_saved_then_it_replaces_the_stored_one(store: Store) -> None:
    """Once its gameover is acknowledged the key is saved again, marked published."""
    store.update_machine_state(store.get_machine_state("cab001"), put_key=make_key())
    state = store.get_machine_state("cab001")

    store.save_game_over_key(make_key(published=1))

    assert store.get_game_over_key("cab001", "key-1") == make_key(published=1)
    assert store.get_machine_state("cab001") == state


def test_given_no_key_when_saved_then_it_is_stored_as_it_is(store: Store) -> None:
    """Saving needs no state write and no key stored before."""
    store.save_game_over_key(make_key(published=1))

    assert store.get_game_over_key("cab001", "key-1") == make_key(published=1)


def test_given_a_stale_state_and_a_free_key_when_put_then_refused_and_the_key_not_stored(
    store: Store,
) -> None:
    """All or nothing: a state write that loses stores no key."""
    stale = store.get_machine_state("cab001")
    store.update_machine_state(stale.with_changes(credits_used=1))
    winner = store.get_machine_state("cab001")

    refused = store.update_machine_state(stale.with_changes(credits_used=5), put_key=make_key())

    assert refused is False

    assert store.get_game_over_key("cab001", "key-1") is None
    assert store.get_machine_state("cab001") == winner


def test_given_concurrent_puts_of_one_key_then_exactly_one_succeeds(store: Store) -> None:
    """Eight copies of one game over at once, each on a fresh read, count once."""

    def game_over() -> bool:
        state = store.get_machine_state("cab001")
        return store.update_machine_state(
            state.with_changes(credits_used=state.credits_used + 1), put_key=make_key()
        )

    results = run_together(game_over)

    assert sorted(results) == [False] * (THREADS - 1) + [True]
    assert store.get_machine_state("cab001").credits_used == 1
    assert store.get_game_over_key("cab001", "key-1") == make_key()


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


def test_given_a_table_made_without_the_outbox_index_when_initialised_then_it_is_added(
    dynamodb_client: Any, dynamodb_table: str
) -> None:
    """`flask store init` on a table of an older release gives it the indexes it lacks: the
    outbox, and the operator's listings by time and by status."""
    from arcade.store.dynamodb import ATTRIBUTES, BY_MACHINE_INDEX, INDEXES, DynamoStore

    dynamodb_client.create_table(
        TableName=dynamodb_table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            a
            for a in ATTRIBUTES
            if a["AttributeName"] in ("pk", "sk", "by_machine_pk", "by_machine_sk")
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[INDEXES[BY_MACHINE_INDEX]],
    )
    store = DynamoStore(dynamodb_table, client=dynamodb_client)

    store.create_table()
    store.add_machine(make_machine())
    commit_ok(store, make_payment(due_at=T0))

    described = dynamodb_client.describe_table(TableName=dynamodb_table)["Table"]
    assert {i["IndexName"] for i in described["GlobalSecondaryIndexes"]} == {
        "by_machine",
        "outbox",
        "by_time",
        "by_status",
    }
    assert [p.payment_id for p in store.list_due(T1)] == ["cs_1"]
    assert [
        p.payment_id for p in store.query_payments(PaymentQuery(status=PENDING_DELIVERY))[0]
    ] == ["cs_1"]


def test_given_sqlite_writes_when_maintained_then_the_database_file_alone_holds_them(
    tmp_path: Any,
) -> None:
    """Checkpoints run off the request path (maintain); after one, the main file alone is
    complete, as it must be before the write-ahead log can be let go."""
    import shutil
    import sqlite3

    from arcade.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "arcade.db"))
    store.add_machine(make_machine())
    for number in range(30):
        commit_ok(store, make_payment(payment_id=f"cs_{number}"), delta=GRANT)

    store.maintain()
    shutil.copy(tmp_path / "arcade.db", tmp_path / "copy.db")  # without its -wal file
    copy = sqlite3.connect(tmp_path / "copy.db")
    try:
        (count,) = copy.execute("SELECT COUNT(*) FROM payments").fetchone()
    finally:
        copy.close()
        store.close()

    assert count == 30


# --- the operator's listings ------------------------------------------------------------------
def _stored_payments(store: Store) -> None:
    """Store six payments on two machines, an unattributed one and several statuses."""
    rows = [
        ("cs_a", "cab001", T0, PENDING_DELIVERY, None),
        ("cs_b", "cab001", T1, "delivered", T1),
        ("cs_c", "cab002", T1, "delivered", T2),
        ("cs_d", "cab002", T2, REFUNDED, None),
        ("cs_e", None, T2, UNATTRIBUTED, None),
        ("cs_f", "cab001", T3, "delivered", T3),
    ]
    for payment_id, machine_id, created, status, delivered in rows:
        commit_ok(
            store,
            make_payment(
                payment_id=payment_id,
                machine_id=machine_id,
                created_at=created,
                status=status,
                delivered_at=delivered,
            ),
        )


def _ids(found: tuple[list[Payment], bool]) -> list[str]:
    return [p.payment_id for p in found[0]]


def test_given_payments_when_queried_then_newest_first_filtered_by_status_machine_and_time(
    store: Store,
) -> None:
    """Every filter of GET /payments is the store's, on an index: status, machine, since
    (inclusive), until (exclusive), delivered_before; newest first, ties by id descending."""
    _stored_payments(store)

    assert _ids(store.query_payments(PaymentQuery())) == [
        "cs_f",
        "cs_e",
        "cs_d",
        "cs_c",
        "cs_b",
        "cs_a",
    ]
    assert _ids(store.query_payments(PaymentQuery(status="delivered"))) == ["cs_f", "cs_c", "cs_b"]
    assert _ids(store.query_payments(PaymentQuery(machine_id="cab002"))) == ["cs_d", "cs_c"]
    assert _ids(store.query_payments(PaymentQuery(machine_id="cab001", status="delivered"))) == [
        "cs_f",
        "cs_b",
    ]
    assert _ids(store.query_payments(PaymentQuery(since=T1, until=T2))) == ["cs_c", "cs_b"]
    assert _ids(store.query_payments(PaymentQuery(status=UNATTRIBUTED, since=T2))) == ["cs_e"]
    assert _ids(store.query_payments(PaymentQuery(status="delivered", delivered_before=T2))) == [
        "cs_c",
        "cs_b",
    ]
    assert _ids(store.query_payments(PaymentQuery(since=T3, until=T1))) == []


def test_given_payments_when_paged_then_each_appears_once_and_the_last_page_says_so(
    store: Store,
) -> None:
    """Pages of two, continued after the last payment of the page before, list every payment
    once, on each index alike."""
    _stored_payments(store)
    for query in (
        PaymentQuery(limit=2),
        PaymentQuery(status="delivered", limit=2),
        PaymentQuery(machine_id="cab001", limit=2),
        PaymentQuery(machine_id="cab001", status="delivered", limit=1),
    ):
        seen: list[str] = []
        after = None
        for _ in range(10):
            page, more = store.query_payments(replace(query, after=after))
            seen += [p.payment_id for p in page]
            if not more:
                break
            after = (page[-1].created_at, page[-1].payment_id)
        assert seen == _ids(store.query_payments(replace(query, limit=50))), query
        assert len(seen) == len(set(seen))


def test_given_a_payment_whose_status_changes_when_queried_by_status_then_only_the_new_one(
    store: Store,
) -> None:
    """The status listing follows a payment's writes: it leaves the old status's list."""
    commit_ok(store, make_payment())
    stored = store.get_payment("cs_1")
    commit_ok(store, replace(stored, status="delivered", delivered_at=T1))

    assert _ids(store.query_payments(PaymentQuery(status=PENDING_DELIVERY))) == []
    assert _ids(store.query_payments(PaymentQuery(status="delivered"))) == ["cs_1"]


def _entry(entry_id: str, at: datetime, **fields: Any) -> RevenueEntry:
    values: dict[str, Any] = {
        "machine_id": "cab001",
        "payment_id": entry_id.split("#")[0],
        "currency": "usd",
    }
    return RevenueEntry(entry_id=entry_id, at=at, **(values | fields))


def test_given_revenue_entries_when_listed_then_those_in_the_window_oldest_first(
    store: Store,
) -> None:
    """Entries are written with their payment, all or nothing, once per id; the window is
    [since, until)."""
    commit_ok(store, make_payment(), delta=GRANT, entries=[_entry("cs_1#1#sale", T1, gross=200)])
    stored = store.get_payment("cs_1")
    commit_ok(
        store,
        replace(stored, amount_refunded=50),
        entries=[_entry("cs_1#2#refund", T3, refunded=50)],
    )
    # A write that loses on its version keeps nothing, its entry included.
    assert not store.commit_payment(make_payment(), entries=[_entry("cs_1#9#sale", T2, gross=999)])
    # An entry already stored is kept as it was.
    commit_ok(store, None, entries=[_entry("cs_1#1#sale", T1, gross=200)])

    assert [(e.entry_id, e.gross, e.refunded) for e in store.list_revenue(T0, T3)] == [
        ("cs_1#1#sale", 200, 0)
    ]
    assert [
        e.entry_id for e in store.list_revenue(T0, parse_iso("2026-11-23T00:00:00.000000Z"))
    ] == [
        "cs_1#1#sale",
        "cs_1#2#refund",
    ]
    assert store.list_revenue(T3, T0) == []


def test_given_a_value_when_put_twice_then_the_second_replaces_the_first(store: Store) -> None:
    """put_value overwrites (the readiness probe writes and reads back a fresh value)."""
    store.put_value("probe", "one")
    store.put_value("probe", "two")

    assert store.get_value("probe") == "two"


def test_given_no_value_when_put_if_absent_then_it_is_kept_and_returned(store: Store) -> None:
    """The first writer's value is stored and handed back to it."""
    assert store.put_value_if_absent("pulse_signing_key", "first") == "first"
    assert store.get_value("pulse_signing_key") == "first"


def test_given_a_value_when_put_if_absent_again_then_the_stored_one_is_returned_unchanged(
    store: Store,
) -> None:
    """A later writer gets the stored value back and changes nothing."""
    store.put_value_if_absent("pulse_signing_key", "first")

    assert store.put_value_if_absent("pulse_signing_key", "second") == "first"
    assert store.get_value("pulse_signing_key") == "first"


def test_given_concurrent_puts_if_absent_then_every_writer_gets_the_one_value_kept(
    store: Store,
) -> None:
    """Processes racing to generate the signing key all end up using the same one."""
    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(
            pool.map(lambda n: store.put_value_if_absent("key", f"value-{n}"), range(THREADS))
        )

    assert len(set(answers)) == 1
    assert store.get_value("key") == answers[0]


def test_given_dynamodb_when_a_first_writer_wins_then_the_loser_reads_nothing_again(
    dynamodb_table: str, dynamodb_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ALL_OLD: a refused conditional write brings back the item that won, so losing a race
    for a link key, a kept value or a payment's version costs no second read (a DynamoDB
    request count)."""
    from arcade.store.dynamodb import DynamoStore

    store = DynamoStore(dynamodb_table, client=dynamodb_client)
    store.create_table()
    first = store.put_link(make_link(link_id="plink_first"))
    store.put_value_if_absent("key", "first")
    commit_ok(store, make_payment(phase=PENDING_PAYMENT))
    commit_ok(store, None, intent=make_intent())
    payment, intent = store.get_payment("cs_1"), store.get_intent("pi_cs_1")
    calls: list[str] = []
    client = store.client
    for operation in ("get_item", "query", "put_item", "transact_write_items"):
        real = getattr(client, operation)
        monkeypatch.setattr(
            client,
            operation,
            lambda *args, _real=real, _name=operation, **kwargs: (
                calls.append(_name),
                _real(*args, **kwargs),
            )[1],
        )

    assert store.put_link(make_link(link_id="plink_other")) == first
    assert store.put_value_if_absent("key", "second") == "first"
    assert store.commit_payment(make_payment()) == Lost(payment=payment)
    assert store.commit_payment(make_payment(), delta=GRANT) == Lost(payment=payment)
    assert store.commit_payment(None, intent=make_intent()) == Lost(intent=intent)
    assert calls == [
        "transact_write_items",
        "put_item",
        "put_item",
        "transact_write_items",
        "put_item",
    ]


def test_given_intents_when_unmatched_are_listed_then_only_those_without_a_session(
    store: Store,
) -> None:
    """A PaymentIntent kept without its Checkout Session is listed, newest change first, and
    leaves the list once its session is recorded."""
    commit_ok(store, None, intent=make_intent(payment_intent="pi_a", payment_id=None))
    commit_ok(
        store,
        None,
        intent=make_intent(
            payment_intent="pi_b", payment_id=None, updated_at=T1, amount_refunded=50
        ),
    )
    commit_ok(store, None, intent=make_intent(payment_intent="pi_c", payment_id="cs_c"))

    assert [i.payment_intent for i in store.list_unmatched_intents()] == ["pi_b", "pi_a"]
    assert store.list_unmatched_intents()[0].amount_refunded == 50
    assert [i.payment_intent for i in store.list_unmatched_intents(1)] == ["pi_b"]

    matched = store.get_intent("pi_b")
    commit_ok(store, None, intent=replace(matched, payment_id="cs_b", updated_at=T2))

    assert [i.payment_intent for i in store.list_unmatched_intents()] == ["pi_a"]


# --- pricing plans, machine settings and the record of changes ---------------------------------
def plan_version(owner: str, version: int, created_at: str, plan: str = '{"bundles":[]}'):
    """Return a plan version that came into force at ``created_at`` (``iso`` text)."""
    from arcade.store.base import PlanVersion

    return PlanVersion(owner, version, parse_iso(created_at), "cli", plan)


def test_a_plan_version_number_is_taken_once(store: Store) -> None:
    """GIVEN version 1 of a plan WHEN another writer stores a version 1 too THEN it is refused
    and the first one stays; another owner's version 1 is its own."""
    assert store.put_plan_version(plan_version("cab001", 1, "2026-11-01T10:00:00.000000Z"))
    assert not store.put_plan_version(
        plan_version("cab001", 1, "2026-11-01T10:00:01.000000Z", '{"x":1}')
    )
    assert store.get_plan_version("cab001").plan == '{"bundles":[]}'
    assert store.put_plan_version(plan_version("*", 1, "2026-11-01T10:00:01.000000Z"))


def test_the_plan_version_in_force_at_an_instant_is_the_newest_made_by_then(store: Store) -> None:
    """GIVEN versions made at 10:00, 11:00 and 12:00 WHEN asked for each instant THEN the newest
    made at or before it is answered, none before the first, the newest without an instant."""
    for number, hour in ((1, 10), (2, 11), (3, 12)):
        store.put_plan_version(plan_version("cab001", number, f"2026-11-01T{hour}:00:00.000000Z"))
    found = {
        instant: getattr(store.get_plan_version("cab001", parse_iso(instant)), "version", 0)
        for instant in (
            "2026-11-01T09:59:59.999999Z",
            "2026-11-01T10:00:00.000000Z",
            "2026-11-01T11:59:59.999999Z",
            "2026-11-01T12:00:00.000000Z",
        )
    }
    assert list(found.values()) == [0, 1, 2, 3]
    assert store.get_plan_version("cab001").version == 3
    assert store.get_plan_version("cab002") is None
    assert [v.version for v in store.list_plan_versions("cab001")] == [3, 2, 1]
    assert [v.version for v in store.list_plan_versions("cab001", 2)] == [3, 2]


def test_machine_settings_and_changes_are_kept(store: Store, machine: Machine) -> None:
    """GIVEN a machine WHEN its credits per game and time zone are set and changes recorded
    THEN they read back, newest change first; an unknown machine is refused."""
    from arcade.store.base import ChangeRecord

    store.update_machine("cab001", credits_per_game=2, timezone="Europe/Paris")
    stored = store.get_machine("cab001")
    assert (stored.credits_per_game, stored.timezone) == (2, "Europe/Paris")
    store.update_machine("cab001", credits_per_game=None, timezone=None)
    stored = store.get_machine("cab001")
    assert (stored.credits_per_game, stored.timezone) == (None, None)
    with pytest.raises(UnknownMachine):
        store.update_machine("cab999", credits_per_game=2, timezone=None)
    for n, at in enumerate(("2026-11-01T10:00:00.000000Z", "2026-11-01T11:00:00.000000Z")):
        store.record_change(
            ChangeRecord(f"c{n}", "cab001", parse_iso(at), "admin session", f'{{"n":{n}}}')
        )
    store.record_change(
        ChangeRecord("c9", "*", parse_iso("2026-11-01T12:00:00.000000Z"), "cli", "{}")
    )
    assert [c.change_id for c in store.list_changes("cab001")] == ["c1", "c0"]
    assert [c.change_id for c in store.list_changes("cab001", 1)] == ["c1"]
    assert [c.by for c in store.list_changes("*")] == ["cli"]


# --- instants: midnight, daylight-saving changes and microseconds ------------------------------
PARIS = ZoneInfo("Europe/Paris")
# Instants given in the zone they were made in, stored in this scrambled order. In Paris the
# clocks went forward at 02:00 on 2026-03-29 and back at 03:00 on 2026-10-25, so 02:15 of the
# second pass (fold=1) is half an hour after 02:45 of the first; midnight in Paris is 23:00 UTC.
MIXED = {
    "midnight": datetime(2026, 11, 29, tzinfo=UTC),
    "autumn_0215_winter": datetime(2026, 10, 25, 2, 15, tzinfo=PARIS, fold=1),  # 01:15Z
    "midnight_after": datetime(2026, 11, 29, 0, 0, 0, 1, tzinfo=UTC),
    "spring_after": datetime(2026, 3, 29, 3, 0, tzinfo=PARIS),  # 01:00Z
    "paris_midnight_after": datetime(2026, 11, 29, 0, 0, 0, 1, tzinfo=PARIS),
    "autumn_0245_summer": datetime(2026, 10, 25, 2, 45, tzinfo=PARIS, fold=0),  # 00:45Z
    "midnight_before": datetime(2026, 11, 28, 23, 59, 59, 999999, tzinfo=UTC),
    "spring_before": datetime(2026, 3, 29, 1, 59, 59, 999999, tzinfo=PARIS),  # 00:59:59.999999Z
}
# Their order in time, written out rather than computed: the text each store keeps must sort so.
IN_TIME_ORDER = [
    "spring_before",  # 2026-03-29T00:59:59.999999Z
    "spring_after",  # 2026-03-29T01:00:00.000000Z
    "autumn_0245_summer",  # 2026-10-25T00:45:00.000000Z
    "autumn_0215_winter",  # 2026-10-25T01:15:00.000000Z
    "paris_midnight_after",  # 2026-11-28T23:00:00.000001Z
    "midnight_before",  # 2026-11-28T23:59:59.999999Z
    "midnight",  # 2026-11-29T00:00:00.000000Z
    "midnight_after",  # 2026-11-29T00:00:00.000001Z
]


def in_utc(record: Record) -> Record:
    """Return ``record`` with every instant in UTC, as a store reads it back.

    Records are compared in UTC because an instant in a daylight-saving fold never equals one
    of another zone, even the same instant (PEP 495): 02:15+01:00 (fold=1) != 01:15+00:00.
    """
    return replace(
        record,
        **{
            name: getattr(record, name).astimezone(UTC)
            for name in instant_fields(type(record))
            if getattr(record, name) is not None
        },
    )


def assert_in_utc(record: Any) -> None:
    """Insist that every instant a store read back is an aware UTC datetime."""
    for name in instant_fields(type(record)):
        value = getattr(record, name)
        assert value is None or value.tzinfo is UTC, (name, value)


def test_mixed_instants_read_back_equal_in_utc_and_every_listing_orders_them_by_time(
    store: Store, machine: Machine
) -> None:
    """GIVEN payments, revenue entries, kept PaymentIntents and changes made at instants a
    microsecond around midnight, on both sides of Paris's daylight-saving changes (given in
    Paris time) WHEN stored THEN each reads back as the same instant in UTC, and every listing
    of the store (by machine, by time, by status, the outbox, the revenue window, changes,
    unmatched intents) orders them by time, bounds given in any zone included."""
    for name, moment in MIXED.items():
        payment = make_payment(
            payment_id=f"cs_{name}",
            created_at=moment,
            granted_at=moment,
            delivery_claimed_until=moment,
            due_at=moment,
            updated_at=moment,
        )
        commit_ok(store, payment, entries=[_entry(f"cs_{name}#1#sale", moment, gross=100)])
        intent = make_intent(payment_intent=f"pi_kept_{name}", payment_id=None, updated_at=moment)
        commit_ok(store, None, intent=intent)
        store.record_change(ChangeRecord(f"c_{name}", "cab001", moment, "cli", "{}"))

        stored = store.get_payment(f"cs_{name}")
        assert stored == written(in_utc(payment))
        assert_in_utc(stored)
        assert store.get_intent(f"pi_kept_{name}") == written(in_utc(intent))

    oldest_first = [f"cs_{name}" for name in IN_TIME_ORDER]
    newest_first = oldest_first[::-1]
    listed, _ = store.query_payments(PaymentQuery(machine_id="cab001", limit=50))
    assert [p.payment_id for p in listed] == newest_first
    for query in (
        PaymentQuery(limit=50),
        PaymentQuery(status=PENDING_DELIVERY, limit=50),
        PaymentQuery(machine_id="cab001", limit=50),
    ):
        assert _ids(store.query_payments(query)) == newest_first, query
        seen: list[str] = []
        after = None
        while True:  # pages of three, each continued after the last of the page before
            page, more = store.query_payments(replace(query, limit=3, after=after))
            seen += [p.payment_id for p in page]
            if not more:
                break
            after = (page[-1].created_at, page[-1].payment_id)
        assert seen == newest_first, query
    # A window given in Paris time: [02:15 of its autumn's second pass, its midnight + 1 µs).
    window = PaymentQuery(since=MIXED["autumn_0215_winter"], until=MIXED["paris_midnight_after"])
    assert _ids(store.query_payments(window)) == ["cs_autumn_0215_winter"]
    around_midnight = PaymentQuery(since=MIXED["midnight_before"], until=MIXED["midnight_after"])
    assert _ids(store.query_payments(around_midnight)) == ["cs_midnight", "cs_midnight_before"]
    # The outbox: due by 02:15 (fold=1) in Paris is due by 01:15 UTC, 02:45 (fold=0) included.
    assert [p.payment_id for p in store.list_due(MIXED["autumn_0215_winter"])] == oldest_first[:4]
    assert [p.payment_id for p in store.list_due(MIXED["midnight"])] == oldest_first[:7]
    revenue = store.list_revenue(MIXED["spring_after"], MIXED["midnight"])
    assert [e.payment_id for e in revenue] == oldest_first[1:6]
    assert [e.at for e in revenue] == [MIXED[name].astimezone(UTC) for name in IN_TIME_ORDER[1:6]]
    assert [c.change_id for c in store.list_changes("cab001")] == [
        f"c_{name}" for name in reversed(IN_TIME_ORDER)
    ]
    assert [i.payment_intent for i in store.list_unmatched_intents()] == [
        f"pi_kept_{name}" for name in reversed(IN_TIME_ORDER)
    ]


def test_the_plan_version_in_force_across_dst_changes_and_midnight_is_found_by_time(
    store: Store,
) -> None:
    """GIVEN one plan version made at each mixed instant, in time order WHEN the version in
    force is asked for at each instant (in its own zone) and a microsecond before it THEN it is
    that version, and the one before it a microsecond earlier."""
    for number, name in enumerate(IN_TIME_ORDER, start=1):
        made = PlanVersion("cab001", number, MIXED[name], "cli", '{"bundles":[]}')
        assert store.put_plan_version(made)
        assert store.get_plan_version("cab001") == in_utc(made)

    for number, name in enumerate(IN_TIME_ORDER, start=1):
        # In UTC: arithmetic on a Paris time is wall-clock arithmetic, and 03:00 - 1 µs on the
        # spring change is 02:59:59.999999, an hour that never was (read as 01:59:59.999999Z).
        just_before = MIXED[name].astimezone(UTC) - timedelta(microseconds=1)
        assert store.get_plan_version("cab001", MIXED[name]).version == number, name
        in_force_before = store.get_plan_version("cab001", just_before)
        assert getattr(in_force_before, "version", 0) == number - 1, name


def test_records_made_in_a_dst_fold_read_back_in_utc_and_game_over_keys_expire_by_time(
    store: Store,
) -> None:
    """GIVEN a machine, a link, a heartbeat, a play session and game-over keys whose instants
    fall in Paris's autumn fold WHEN stored and read THEN each is the same instant in UTC; a
    key that expired at 02:45 (first pass) is free at 02:15 (second pass, later in time), and
    one that expires at 02:15 (second pass) is still taken at 02:45 (first pass)."""
    first_pass, second_pass = MIXED["autumn_0245_summer"], MIXED["autumn_0215_winter"]
    hour_before = first_pass.astimezone(UTC) - timedelta(hours=1)
    machine = make_machine(created_at=second_pass)
    store.add_machine(machine)
    store.update_machine("cab001", last_seen=first_pass, mqtt_connected=1, credits_reported=0)
    link = store.put_link(make_link(created_at=first_pass))
    assert store.set_link_retired(link, second_pass)
    commit_ok(store, None, open_session=SessionStart("cab001", "s1", second_pass))

    read = store.get_machine("cab001")
    assert read == in_utc(
        replace(machine, last_seen=first_pass, mqtt_connected=1, credits_reported=0)
    )
    assert_in_utc(read)
    assert store.get_link(link.key) == in_utc(replace(link, retired_at=second_pass))
    state = store.get_machine_state("cab001")
    assert state.session_started_at == second_pass.astimezone(UTC)
    assert_in_utc(state)

    expired = make_key(key="k-expired", created_at=hour_before, expires_at=first_pass)
    assert store.update_machine_state(state, put_key=expired)
    state = store.get_machine_state("cab001")
    assert store.get_game_over_key("cab001", "k-expired") == in_utc(expired)
    renewed = make_key(key="k-expired", created_at=second_pass, expires_at=MIXED["midnight"])
    assert store.update_machine_state(state, put_key=renewed) is True
    state = store.get_machine_state("cab001")
    assert store.get_game_over_key("cab001", "k-expired") == in_utc(renewed)

    living = make_key(key="k-living", created_at=hour_before, expires_at=second_pass)
    assert store.update_machine_state(state, put_key=living)
    state = store.get_machine_state("cab001")
    taken = make_key(key="k-living", created_at=first_pass, expires_at=MIXED["midnight"])
    assert store.update_machine_state(state, put_key=taken) is False
    assert store.get_game_over_key("cab001", "k-living") == in_utc(living)


@pytest.mark.parametrize(
    ("region", "default_region", "expected"),
    [
        ("eu-west-1", None, "eu-west-1"),
        (None, "ap-south-1", "ap-south-1"),
        ("eu-west-1", "ap-south-1", "eu-west-1"),
    ],
)
def test_given_aws_region_alone_the_dynamodb_client_uses_it(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    region: str | None,
    default_region: str | None,
    expected: str,
) -> None:
    """AWS_REGION, as the README and Lambda give it, is enough: boto3 alone reads only
    AWS_DEFAULT_REGION and ~/.aws/config, so `AWS_REGION=… DATABASE_URL=dynamodb://…` used to
    end in "could not set up the DynamoDB client"."""
    from arcade.store.dynamodb import DynamoStore

    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    for name, value in (("AWS_REGION", region), ("AWS_DEFAULT_REGION", default_region)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)

    assert DynamoStore("arcade-pay").client.meta.region_name == expected
