"""The store interface: what the ledger needs kept, and the atomic facts it relies on.

Back ends only store and fetch. Every rule about money lives in ``arcade.ledger``; the
store's job is to make "first writer wins" and "only if nothing changed meanwhile" facts of
the database (a unique key, a conditional write), never a check in this process's memory.

Instants in records are timezone-aware ``datetime`` values (UTC as read back). The back ends
alone write them as text, ``arcade.clock.iso`` (fixed width, so the text sorts in time order),
and read them back with ``arcade.clock.parse_iso``; ``instant_fields`` tells them which fields
of a record those are. Query bounds are written the same way, so stored text keeps one form.
"""

from __future__ import annotations

import functools
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, TypeVar

from arcade.clock import iso
from arcade.errors import MachineExists, StoreError, UnknownMachine
from arcade.store.primitives import (
    ABSENT,
    EXISTS,
    AbsentOrBelow,
    Delete,
    Index,
    Kind,
    Operation,
    Put,
    Refused,
    Update,
    Version,
)

R = TypeVar("R")


def changed(record: R, **changes: Any) -> R:
    """Return a copy of a frozen record with ``changes``, like ``dataclasses.replace``.

    ``replace`` runs the record's ``__init__`` again, one frozen ``__setattr__`` per field:
    about 16 µs for a Payment, several times on every webhook. No record here has an
    ``__init__`` or ``__post_init__`` of its own, so copying the fields is the same record
    in a fifth of the time. Raises TypeError for a name that is not a field.
    """
    values = record.__dict__
    unknown = changes.keys() - record.__dataclass_fields__.keys()  # type: ignore[attr-defined]
    if unknown:
        raise TypeError(f"{type(record).__name__} has no field {', '.join(sorted(unknown))}")
    copy = object.__new__(type(record))
    object.__setattr__(copy, "__dict__", {**values, **changes})
    return copy


@functools.cache
def instant_fields(record_type: type) -> frozenset[str]:
    """Return the names of a record type's fields that hold an instant (``datetime`` or
    ``datetime | None``), read from its annotations once per type."""
    hints = typing.get_type_hints(record_type)
    return frozenset(
        name
        for name, hint in hints.items()
        if hint is datetime or datetime in typing.get_args(hint)
    )


@dataclass(frozen=True)
class Machine:
    """A registered cabinet."""

    machine_id: str
    # Kept out of repr, as every credential is: a record may be shown in a log or a trace.
    token_hash: str = field(repr=False)
    created_at: datetime
    name: str | None = None
    price_id: str | None = None
    credits_per_unit: int | None = None
    # Presence, from the cabinet's heartbeats (None: it never sent one).
    last_seen: datetime | None = None
    mqtt_connected: int | None = None  # 1 or 0, as the last heartbeat said
    credits_reported: int | None = None  # credits left, as the cabinet counts them
    links_active: int | None = None  # 0 while its Stripe Payment Links are switched off
    credits_per_game: int | None = None  # credits one game over uses (None: 1)
    timezone: str | None = None  # IANA zone its happy hours are read in (None: UTC)


# What Store.update_machine may set: every field of a machine but its key; those without a
# default can be changed but never cleared.
UPDATABLE_MACHINE_FIELDS = frozenset(f.name for f in fields(Machine)) - {"machine_id"}
REQUIRED_MACHINE_FIELDS = frozenset(f.name for f in fields(Machine) if f.default is MISSING)


def check_machine_changes(changes: dict[str, Any]) -> None:
    """Check ``changes`` as an update of a stored machine before anything is written
    (``Store.update_machine``): at least one name, each in UPDATABLE_MACHINE_FIELDS, each value
    what ``stored_form`` takes for that field, or None (never for REQUIRED_MACHINE_FIELDS).
    Raises TypeError otherwise (ValueError for a datetime without a zone)."""
    if not changes:
        raise TypeError("a machine update needs at least one field")
    unknown = changes.keys() - UPDATABLE_MACHINE_FIELDS
    if unknown:
        raise TypeError(f"a machine has no field {', '.join(sorted(unknown))} to update")
    instants = instant_fields(Machine)
    for name, value in changes.items():
        if value is None and name in REQUIRED_MACHINE_FIELDS:
            raise TypeError(f"a machine's {name} cannot be cleared")
        if value is not None:
            stored_form(name, value, name in instants)


def as_stored(value: Any) -> Any:
    """Return a record value as both stores keep it: an instant as the text
    ``arcade.clock.iso`` writes (it sorts in time order), anything else as it is."""
    return iso(value) if isinstance(value, datetime) else value


def stored_form(name: str, value: Any, instant: bool) -> str | int:
    """Return a field's value as both stores keep it: an instant field's aware ``datetime``
    as the text ``arcade.clock.iso`` writes (it sorts in time order), any other value as the
    text or whole number it is. Raises TypeError for anything else a record must not hold,
    and ValueError for a datetime without a zone."""
    if instant:
        if not isinstance(value, datetime):
            raise TypeError(f"{name} is an instant: a datetime, not {type(value).__name__}")
        return as_stored(value)
    # A bool would read back as 1 from SQLite but as True from DynamoDB: flags are 1 or 0.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"{name} cannot be stored as {type(value).__name__}")
    return value


@dataclass(frozen=True)
class PaymentLink:
    """A Stripe Payment Link made for one machine, price and quantity (0 = player chooses)."""

    link_id: str
    machine_id: str
    price_id: str
    quantity: int
    url: str
    unit_amount: int | None
    currency: str
    created_at: datetime
    # When a plan version came into force under which its price buys nothing: switched off at
    # Stripe then, and kept off (presence never switches it on). None: it sells.
    retired_at: datetime | None = None

    @property
    def key(self) -> str:
        return link_key(self.machine_id, self.price_id, self.quantity)


def link_key(machine_id: str, price_id: str, quantity: int) -> str:
    """Return the lookup key of a machine's link for a price and quantity."""
    return f"{machine_id}|{price_id}|{quantity}"


@dataclass(frozen=True)
class Payment:
    """One Checkout Session as the ledger knows it; ``payment_id`` is the session id.

    The fields are facts; ``status`` is stored for queries and always equals what
    ``arcade.payment_states.status_of`` computes from them. ``version`` counts the writes, so a
    change based on a stale read is refused (``Store.commit_payment``).
    """

    payment_id: str
    status: str
    created_at: datetime
    machine_id: str | None = None
    credits: int = 0
    amount: int = 0
    currency: str = "usd"
    payment_intent: str | None = None
    amount_refunded: int = 0
    granted_at: datetime | None = None
    delivered_at: datetime | None = None
    # Until this instant one request holds the right to publish the coinpulse.
    delivery_claimed_until: datetime | None = None
    updated_at: datetime | None = None
    phase: str | None = None  # pending_payment | payment_failed | paid
    reason: str | None = None  # why a paid session bought nothing here (unattributed)
    disputed_at: datetime | None = None
    # The transactional outbox: while set, the grant's coinpulse is owed, and the delivery
    # relay publishes it once this instant has passed.
    due_at: datetime | None = None
    delivery_attempts: int = 0
    delivery_alarm_at: datetime | None = None  # when "undeliverable for an hour" was logged
    credited_at: datetime | None = None  # when the cabinet confirmed it fired the coins
    note: str | None = None  # the operator's reason for a manual grant (``manual_…`` ids)
    bundle: str | None = None  # the pricing plan's bundle it bought (None: no plan)
    plan_version: int | None = None  # the plan version that credited it
    version: int = 0


@dataclass(frozen=True)
class IntentRecord:
    """What is known of a PaymentIntent: its Checkout Session, and refunds or a dispute that
    arrived before that session did (kept here until the session is recorded)."""

    payment_intent: str
    payment_id: str | None = None
    amount_refunded: int = 0
    disputed_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0


@dataclass(frozen=True)
class StateDelta:
    """A change to a machine's credits granted and revenue (in ``currency``'s smallest unit)."""

    machine_id: str
    credits: int = 0
    revenue: int = 0
    currency: str = "usd"

    def __bool__(self) -> bool:
        return bool(self.credits or self.revenue)


@dataclass(frozen=True)
class SessionStart:
    """A play session to open on a machine that has none open (SPEC "Machine state")."""

    machine_id: str
    session_id: str
    started_at: datetime


@dataclass(frozen=True)
class Lost:
    """A versioned write that lost: another writer's version is stored (``commit_payment``).

    ``payment`` and ``intent`` are what is stored now of the record whose version moved (None
    for a record that was not the cause, or that is not stored at all), taken from the refusal
    itself, so deciding again costs no second read. False in a boolean test, as a refused
    write is.
    """

    payment: Payment | None = None
    intent: IntentRecord | None = None

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True)
class RevenueEntry:
    """Money that moved on a grant, kept so revenue can be reported by day and by machine.

    ``gross`` is what a sale brought in, ``refunded`` what went back (both in ``currency``'s
    smallest unit; either may be negative when a correction takes back an earlier entry).
    ``at`` is when the money moved: the Checkout Session's creation for a sale, the moment the
    refund was recorded for a refund. ``entry_id`` is ``<payment_id>#<version>#<kind>``, made
    from the payment version that moved the money, so a write tried again never books twice.
    """

    entry_id: str
    at: datetime
    machine_id: str
    payment_id: str
    currency: str
    gross: int = 0
    refunded: int = 0
    bundle: str | None = None  # the bundle a plan sold (None: no plan)
    credits: int = 0  # credits a sale bought (0 on refunds)


@dataclass(frozen=True)
class PlanVersion:
    """One version of a machine's pricing plan (``owner`` is its machine id, or ``*`` for the
    default plan). Versions are never changed: an edit stores the next one.

    ``plan`` is the plan as ``arcade.pricing.Plan.to_json`` writes it; ``created_at`` is when it
    came into force, and ``created_by`` who made it (``admin session``, ``admin api``, ``cli``).
    """

    owner: str
    version: int
    created_at: datetime
    created_by: str
    plan: str


@dataclass(frozen=True)
class ChangeRecord:
    """An operator's change to a machine's settings or plan, kept for the record.

    ``subject`` is the machine id (``*``: the default plan), ``at`` when it was made, ``by`` who
    made it, ``what`` a JSON object saying what changed.
    """

    change_id: str
    subject: str
    at: datetime
    by: str
    what: str


@dataclass(frozen=True)
class PaymentQuery:
    """Which payments an operator asks for (SPEC "Operators": ``GET /payments``).

    All times are aware datetimes. ``since`` is inclusive and ``until`` exclusive,
    on ``created_at`` (the Checkout Session's creation). ``delivered_before`` keeps only
    payments delivered at or before that instant. ``after`` is the ``(created_at,
    payment_id)`` of the last payment of the previous page: the answer continues strictly
    after it in the order newest first, ties broken by ``payment_id`` descending.
    """

    status: str | None = None
    machine_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    delivered_before: datetime | None = None
    after: tuple[datetime, str] | None = None
    limit: int = 50


@dataclass(frozen=True)
class GameOverKey:
    """A game over's Idempotency-Key, remembered per machine until ``expires_at``.

    The stores compare ``expires_at`` with a new key's ``created_at`` in their own text form
    (``arcade.clock.iso``, which sorts in time order), and DynamoDB derives its Time to Live
    from ``expires_at``.
    """

    machine_id: str
    key: str
    created_at: datetime
    expires_at: datetime
    published: int = 0  # 1 once its gameover message was acknowledged by the broker


@dataclass(frozen=True)
class MachineState:
    """A machine's credit counter mirror, open session and revenue.

    ``version`` moves on every change, so a write based on a stale read is refused.
    """

    machine_id: str
    credits_granted: int = 0
    credits_used: int = 0
    games_without_credit: int = 0
    session_id: str | None = None
    session_started_at: datetime | None = None
    revenue: dict[str, int] = field(default_factory=dict)
    version: int = 0

    @property
    def credits_left(self) -> int:
        return max(self.credits_granted - self.credits_used, 0)

    def with_changes(self, **changes: object) -> MachineState:
        """Return a copy with the given fields changed."""
        return changed(self, **changes)


@dataclass(frozen=True)
class KeptValue:
    """A value the service keeps for itself under a name (a signing key, a setting)."""

    name: str
    value: str


# The kinds of record the store keeps, as ``arcade.store.primitives`` describes them: each back
# end maps a kind and its indexes onto its own layout. Instants in sort fields sort in time
# order because the back ends store them as ``arcade.clock.iso`` text.
VALUE = Kind("value", KeptValue, key=("name",))
PLAN_VERSION = Kind(
    "plan_version",
    PlanVersion,
    key=("owner", "version"),
    indexes={"by_owner": Index(partition=("owner",), sort=("version",))},
)
# A change is kept under its subject and instant too (DynamoDB's key holds all three).
CHANGE = Kind(
    "change",
    ChangeRecord,
    key=("subject", "at", "change_id"),
    indexes={"by_subject": Index(partition=("subject",), sort=("at", "change_id"))},
)
GAME_OVER_KEY = Kind("game_over_key", GameOverKey, key=("machine_id", "key"))
MACHINE = Kind(
    "machine", Machine, key=("machine_id",), indexes={"all": Index(sort=("machine_id",))}
)
# A link's key is its ``key`` property (machine, price, quantity); its Stripe id is unique too.
LINK = Kind(
    "link",
    PaymentLink,
    key=("key",),
    unique=("link_id",),
    indexes={
        "by_id": Index(partition=("link_id",)),
        "by_machine": Index(partition=("machine_id",)),
    },
)


# A payment reads by machine, by status or all of them newest first, and by its due instant.
PAYMENT = Kind(
    "payment",
    Payment,
    key=("payment_id",),
    indexes={
        "by_machine": Index(partition=("machine_id",), sort=("created_at", "payment_id")),
        "by_status": Index(partition=("status",), sort=("created_at", "payment_id")),
        "by_time": Index(sort=("created_at", "payment_id")),
        "due": Index(sort=("due_at",)),
    },
)
# The PaymentIntents whose Checkout Session is not on record (payment_id None) read by change.
INTENT = Kind(
    "intent",
    IntentRecord,
    key=("payment_intent",),
    indexes={"unmatched": Index(partition=("payment_id",), sort=("updated_at", "payment_intent"))},
)
REVENUE = Kind(
    "revenue",
    RevenueEntry,
    key=("entry_id",),
    indexes={"by_time": Index(sort=("at", "entry_id"))},
)
# A machine's state: ``revenue`` is a map field (one whole number per currency).
STATE = Kind("machine_state", MachineState, key=("machine_id",))


class Store(ABC):
    """Persistence for machines, payment links, payments and machine state.

    The record-named methods are written once here, on three primitives each back end
    provides (``_get``, ``_query``, ``_write``; ``arcade.store.primitives``). The back ends
    keep no rule of their own: they store, fetch, and enforce the storage guards they are given.
    """

    # --- the primitives each back end provides --------------------------------------------
    @abstractmethod
    def _get(self, kind: Kind, key: tuple[Any, ...]) -> Any | None:
        """Return the record of ``kind`` stored under ``key`` (values in ``kind.key`` order),
        read strongly consistent, or None. Raises StoreError when the store cannot be read."""

    @abstractmethod
    def _query(
        self,
        kind: Kind,
        index: str,
        equals: Mapping[str, Any],
        *,
        at_least: Mapping[str, Any] | None = None,
        below: Mapping[str, Any] | None = None,
        at_most: Mapping[str, Any] | None = None,
        after: tuple[Any, ...] | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> tuple[list[Any], bool]:
        """Return records of ``kind`` read through its index ``index``, and whether more follow.

        ``equals`` holds a value for each of the index's partition fields (None: the field is
        not set), and may hold other fields to keep only records with those values. The bounds
        keep records whose field is ``>=`` (``at_least``), ``<`` (``below``) or ``<=``
        (``at_most``) the value given; a record without the field is never kept by a bound.
        ``after`` is the sort fields' values of the last record of a previous page: the answer
        continues strictly after it. Records come in the order of the index's sort fields,
        descending with ``newest_first``; at most ``limit`` of them (a positive number; None:
        all). Raises StoreError when the store cannot be read.
        """

    @abstractmethod
    def _write(self, *operations: Operation) -> Literal[True] | Refused:
        """Apply ``operations`` all or nothing, in order; return True once they are written.

        When a condition is false nothing is written, and the answer is a ``Refused`` carrying
        what is stored under the key of the operation refused (read with the refusal, no
        second read). Raises StoreError when the store refuses the write otherwise, or when
        a Put would give a unique field (``Kind.unique``) a value another key holds.
        """

    # --- machines -------------------------------------------------------------------------
    def add_machine(self, machine: Machine) -> None:
        """Store a new machine; raise MachineExists if the id is taken."""
        if not self._write(Put(MACHINE, machine, ABSENT)):
            raise MachineExists(machine.machine_id)

    def get_machine(self, machine_id: str) -> Machine | None:
        """Return the machine, or None."""
        return self._get(MACHINE, (machine_id,))

    def list_machines(self) -> list[Machine]:
        """Return every machine, ordered by id (an operator command, never a request path)."""
        return self._query(MACHINE, "all", {})[0]

    def update_machine(self, machine_id: str, /, **changes: str | int | datetime | None) -> None:
        """Set the named fields of a stored machine to the values given, all in one write.

        Each name is a ``Machine`` field other than its key ``machine_id``; each value is an
        aware datetime for an instant field, else text or a whole number (flags as 1 or 0), or
        None, which clears the field. Fields not named keep what they hold; no condition is put
        on the values stored (a ``last_seen`` may go back).
        Raises UnknownMachine, writing nothing, when no machine is stored under ``machine_id``
        (never registered, or removed); TypeError, before any write, for no change, a name that
        is not such a field, another kind of value, or None for ``token_hash`` or
        ``created_at`` (``check_machine_changes``).
        """
        check_machine_changes(changes)  # first: nothing is written for a bad change
        if not self._write(Update(MACHINE, {"machine_id": machine_id}, changes, EXISTS)):
            raise UnknownMachine(machine_id)

    def remove_machine(self, machine_id: str) -> None:
        """Delete a machine (its payments stay); raise UnknownMachine if absent."""
        if not self._write(Delete(MACHINE, {"machine_id": machine_id}, EXISTS)):
            raise UnknownMachine(machine_id)

    # --- payment links --------------------------------------------------------------------
    def get_link(self, key: str) -> PaymentLink | None:
        """Return the link stored under ``link_key(...)``, or None."""
        return self._get(LINK, (key,))

    def get_link_by_id(self, link_id: str) -> PaymentLink | None:
        """Return the link with this Stripe id (``plink_…``), or None."""
        found, _ = self._query(LINK, "by_id", {"link_id": link_id}, limit=1)
        return found[0] if found else None

    def put_link(self, link: PaymentLink) -> PaymentLink:
        """Store a link unless one exists under its key; return the stored one (first wins).
        Raises StoreError when its Stripe id is stored under another key."""
        written = self._write(Put(LINK, link, ABSENT))
        if written:
            return link
        (stored,) = written.stored
        if stored is None:
            raise _vanished(f"payment link {link.link_id!r}")
        return stored

    def list_links(self, machine_id: str) -> list[PaymentLink]:
        """Return the links stored for a machine (any order)."""
        return self._query(LINK, "by_machine", {"machine_id": machine_id})[0]

    def set_link_retired(self, link: PaymentLink, retired_at: datetime | None) -> bool:
        """Mark a stored link retired at ``retired_at`` (None: selling again), under its key
        and its Stripe id alike; return False when no link is stored under its key."""
        retire = Update(LINK, LINK.ids_of(link), {"retired_at": retired_at}, EXISTS)
        return bool(self._write(retire))

    # --- payments -------------------------------------------------------------------------
    def get_payment(self, payment_id: str) -> Payment | None:
        """Return the payment, or None."""
        return self._get(PAYMENT, (payment_id,))

    def get_intent(self, payment_intent: str) -> IntentRecord | None:
        """Return what is stored of a PaymentIntent, or None."""
        return self._get(INTENT, (payment_intent,))

    def commit_payment(
        self,
        payment: Payment | None,
        *,
        intent: IntentRecord | None = None,
        delta: StateDelta | None = None,
        entries: Sequence[RevenueEntry] = (),
        open_session: SessionStart | None = None,
    ) -> Literal[True] | Lost:
        """Write a payment, its PaymentIntent record, a machine-state delta, revenue entries
        and the opening of a play session, all or nothing.

        ``payment`` and ``intent`` carry the ``version`` they were read at (0: not stored yet)
        and are written with ``version + 1`` only if the stored version is still that one.
        ``delta`` is added to the machine's ``credits_granted`` and ``revenue[currency]`` (the
        state's version moves on). ``entries`` are added to the revenue journal; an entry's id
        names the payment version that moved its money, so one already stored holds the same
        values (and the payment's version condition refuses the write first).
        ``open_session`` sets the machine's session id and start when it has no session open
        (the state's version moves on then), with no condition on the state: a machine with a
        session open keeps it. Returns True once written; when a version moved, writes nothing
        and returns a ``Lost`` carrying the stored record that won (SQLite reads it in the same
        transaction, DynamoDB takes it from the refusal with ``ALL_OLD``): decide again from
        it. No rule about payments lives here.
        """
        operations: list[Operation] = []
        if payment is not None:
            next_payment = changed(payment, version=payment.version + 1)
            operations.append(Put(PAYMENT, next_payment, Version(payment.version)))
        if intent is not None:
            next_intent = changed(intent, version=intent.version + 1)
            operations.append(Put(INTENT, next_intent, Version(intent.version)))
        if delta or open_session is not None:
            machine_id = delta.machine_id if delta else open_session.machine_id  # type: ignore[union-attr]
            add: dict[str, int | dict[str, int]] = {"version": 1}
            if delta:
                add |= {
                    "credits_granted": delta.credits,
                    "revenue": {delta.currency: delta.revenue},
                }
            fill: dict[str, Any] = {}
            if open_session is not None:
                fill = {
                    "session_id": open_session.session_id,
                    "session_started_at": open_session.started_at,
                }
            operations.append(Update(STATE, {"machine_id": machine_id}, add=add, fill=fill))
        # An entry's id comes from the payment version that moved the money, so it cannot be
        # stored unless that version's write already happened: no condition is needed.
        operations += [Put(REVENUE, entry) for entry in entries]
        if not operations:
            return True
        written = self._write(*operations)
        if written:
            return True
        stored = list(written.stored)
        return Lost(
            payment=stored.pop(0) if payment is not None else None,
            intent=stored.pop(0) if intent is not None else None,
        )

    def query_payments(self, query: PaymentQuery) -> tuple[list[Payment], bool]:
        """Return up to ``query.limit`` payments matching it, newest first, and whether more
        follow (an index query, never a scan of every payment)."""
        # The index that fits: a machine's payments, a status's, else all of them.
        if query.machine_id is not None:
            index = "by_machine"
        elif query.status is not None:
            index = "by_status"
        else:
            index = "by_time"
        equals = {
            name: value
            for name, value in (("machine_id", query.machine_id), ("status", query.status))
            if value is not None
        }
        return self._query(
            PAYMENT,
            index,
            equals,
            at_least=None if query.since is None else {"created_at": query.since},
            below=None if query.until is None else {"created_at": query.until},
            at_most=(
                None if query.delivered_before is None else {"delivered_at": query.delivered_before}
            ),
            after=query.after,
            newest_first=True,
            limit=query.limit,
        )

    def list_unmatched_intents(self, limit: int = 100) -> list[IntentRecord]:
        """Return up to ``limit`` PaymentIntent records whose Checkout Session is not on record
        (a refund or dispute kept for later), most recently changed first."""
        if limit <= 0:
            return []
        unmatched = {"payment_id": None}
        return self._query(INTENT, "unmatched", unmatched, newest_first=True, limit=limit)[0]

    def list_revenue(self, since: datetime, until: datetime) -> list[RevenueEntry]:
        """Return every revenue entry with ``since <= at < until``, oldest first."""
        return self._query(REVENUE, "by_time", {}, at_least={"at": since}, below={"at": until})[0]

    def list_due(self, now: datetime, limit: int = 100) -> list[Payment]:
        """Return up to ``limit`` payments whose ``due_at`` is set and not after ``now``,
        earliest due first (the outbox entries to publish)."""
        if limit <= 0:
            return []
        return self._query(PAYMENT, "due", {}, at_most={"due_at": now}, limit=limit)[0]

    # --- machine state --------------------------------------------------------------------
    def get_machine_state(self, machine_id: str) -> MachineState:
        """Return the machine's state (zeros and version 0 when nothing was stored yet)."""
        return self._get(STATE, (machine_id,)) or MachineState(machine_id=machine_id)

    def update_machine_state(
        self,
        state: MachineState,
        *,
        put_key: GameOverKey | None = None,
        delete_key: GameOverKey | None = None,
    ) -> bool:
        """Store credits_used, games_without_credit and the session, all or nothing.

        Only if the stored version still equals ``state.version``; the stored version then
        moves on. With ``put_key``, also store that game-over key, only if no key of that
        machine and name is stored or the stored one expired before ``put_key.created_at``;
        with ``delete_key``, also forget it. Returns False, writing nothing, when another
        writer got there first or the key is taken (read again, decide again). Never writes
        credits_granted or revenue: those move only with payments.
        """
        operations: list[Operation] = [
            Update(
                STATE,
                {"machine_id": state.machine_id},
                {
                    "credits_used": state.credits_used,
                    "games_without_credit": state.games_without_credit,
                    "session_id": state.session_id,
                    "session_started_at": state.session_started_at,
                    "version": state.version + 1,
                },
                Version(state.version),
            )
        ]
        if put_key is not None:
            free = AbsentOrBelow("expires_at", put_key.created_at)
            operations.append(Put(GAME_OVER_KEY, put_key, free))
        if delete_key is not None:
            ids = {"machine_id": delete_key.machine_id, "key": delete_key.key}
            operations.append(Delete(GAME_OVER_KEY, ids))
        return bool(self._write(*operations))

    def get_game_over_key(self, machine_id: str, key: str) -> GameOverKey | None:
        """Return the stored game-over key (expired or not), or None."""
        return self._get(GAME_OVER_KEY, (machine_id, key))

    def save_game_over_key(self, record: GameOverKey) -> None:
        """Store a game-over key as it is, replacing any stored one."""
        self._write(Put(GAME_OVER_KEY, record))

    # --- pricing plans and the record of changes -----------------------------------------
    def put_plan_version(self, plan: PlanVersion) -> bool:
        """Store a plan version unless that owner already has one with that number; return
        whether it was stored (first writer wins: the loser reads again and numbers anew)."""
        return bool(self._write(Put(PLAN_VERSION, plan, ABSENT)))

    def get_plan_version(self, owner: str, at: datetime | None = None) -> PlanVersion | None:
        """Return the owner's newest plan version created at or before ``at`` (None: the
        newest of all), or None when there is none."""
        found, _ = self._query(
            PLAN_VERSION,
            "by_owner",
            {"owner": owner},
            at_most=None if at is None else {"created_at": at},
            newest_first=True,
            limit=1,
        )
        return found[0] if found else None

    def list_plan_versions(self, owner: str, limit: int = 50) -> list[PlanVersion]:
        """Return up to ``limit`` of the owner's plan versions, newest first."""
        if limit <= 0:
            return []
        query = {"owner": owner}
        return self._query(PLAN_VERSION, "by_owner", query, newest_first=True, limit=limit)[0]

    def record_change(self, change: ChangeRecord) -> None:
        """Keep a change for the record."""
        self._write(Put(CHANGE, change))

    def list_changes(self, subject: str, limit: int = 50) -> list[ChangeRecord]:
        """Return up to ``limit`` changes of one subject, newest first."""
        if limit <= 0:
            return []
        query = {"subject": subject}
        return self._query(CHANGE, "by_subject", query, newest_first=True, limit=limit)[0]

    # --- values the service keeps for itself ------------------------------------------------
    def get_value(self, name: str) -> str | None:
        """Return a value stored under ``name``, or None."""
        kept = self._get(VALUE, (name,))
        return None if kept is None else kept.value

    def put_value(self, name: str, value: str) -> None:
        """Store ``value`` under ``name``, replacing any stored one."""
        self._write(Put(VALUE, KeptValue(name, value)))

    def put_value_if_absent(self, name: str, value: str) -> str:
        """Store ``value`` under ``name`` unless one is there; return the stored one (first
        writer wins, so processes racing to create a value all end up with the same). Raises
        StoreError when the value that won is gone by the time it is read."""
        written = self._write(Put(VALUE, KeptValue(name, value), ABSENT))
        if written:
            return value
        (kept,) = written.stored
        if kept is None:
            raise _vanished(f"the value {name!r}")
        return kept.value

    def maintain(self) -> None:  # noqa: B027 - optional hook, most back ends need nothing
        """Do housekeeping off the request path (run by the background thread of app.py)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most back ends hold nothing
        """Release connections."""


def _vanished(what: str) -> StoreError:
    """Return the error of a first-writer-wins write that lost to a record no longer there
    (removed between the refusal and its answer): the caller may try again."""
    return StoreError(f"{what} vanished while it was written")
