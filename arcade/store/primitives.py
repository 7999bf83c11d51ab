"""The few storage primitives every back end provides, in no business words.

``arcade.store.base.Store`` writes its record-named methods once on top of these, the way
Powertools' idempotency ``BasePersistenceLayer`` asks each back end for a handful of record
operations: read one record by key (``_get``), read one index of one kind in order
(``_query``), and write one or more records all or nothing under storage guards (``_write``).

A ``Kind`` names a record type's storage shape (its key fields, the fields that are unique
beside the key, its indexes); each back end maps a kind to its own layout (SQLite tables and
columns, DynamoDB keys and GSI attributes). Values in keys, bounds and updates are record
values (an instant is a ``datetime``); the back ends write them in their stored form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# Storage guards a write may carry; every other condition is a rule of the ledger.
ABSENT: Literal["absent"] = "absent"  # nothing is stored under the key (first writer wins)
EXISTS: Literal["exists"] = "exists"  # something is stored under the key


@dataclass(frozen=True)
class Version:
    """The stored record's ``version`` field is ``read`` (0: nothing is stored, or a record
    stored at version 0): optimistic locking. Its refusal carries the stored record."""

    read: int


@dataclass(frozen=True)
class AbsentOrBelow:
    """Nothing is stored under the key, or the stored record's ``field`` is below ``value``
    (compared as stored: instants as their text, which sorts in time order)."""

    field: str
    value: Any


Condition = Literal["absent", "exists"] | Version | AbsentOrBelow | None


@dataclass(frozen=True)
class Index:
    """One ordered way to read a kind: records whose ``partition`` fields equal given values,
    in the order of ``sort`` (field names, first compared first)."""

    partition: tuple[str, ...] = ()
    sort: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)  # one per record type, compared and cached by identity
class Kind:
    """A record type as stored: ``key`` names the fields (or properties) that identify one
    record, ``unique`` fields that no two records may share either (a second way to find
    one), and ``indexes`` the named orders it can be read in (``Store._query``)."""

    name: str
    record: type
    key: tuple[str, ...]
    unique: tuple[str, ...] = ()
    indexes: Mapping[str, Index] = field(default_factory=dict)

    def key_of(self, record: Any) -> tuple[Any, ...]:
        """Return the key of a record of this kind, as a tuple in ``key`` order."""
        return tuple(getattr(record, name) for name in self.key)

    def ids_of(self, record: Any) -> dict[str, Any]:
        """Return the key and unique fields of a record, by name (what an Update names)."""
        return {name: getattr(record, name) for name in (*self.key, *self.unique)}


@dataclass(frozen=True)
class Put:
    """Store ``record`` whole (replacing what its key holds) if ``condition`` holds."""

    kind: Kind
    record: Any
    condition: Condition = None


@dataclass(frozen=True)
class Update:
    """Change the record stored under ``ids`` (its key fields, and its unique fields when the
    kind has some) if ``condition`` holds: ``set`` fields to values (None clears one), ``add``
    whole numbers to whole-number fields (or, given a mapping, to entries of a map field,
    an entry not stored counting as 0), and ``fill`` fields with values only where they are
    unset. Unless the condition is EXISTS, a record not stored is made first, its key fields
    given and the rest at their defaults (as DynamoDB's UpdateItem does)."""

    kind: Kind
    ids: Mapping[str, Any]
    set: Mapping[str, Any] = field(default_factory=dict)
    condition: Condition = None
    add: Mapping[str, int | Mapping[str, int]] = field(default_factory=dict)
    fill: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Delete:
    """Forget the record stored under ``ids`` (as for ``Update``) if ``condition`` holds."""

    kind: Kind
    ids: Mapping[str, Any]
    condition: Condition = None


Operation = Put | Update | Delete


def held_under_another_key(kind: Kind) -> Exception:
    """Return the StoreError of a ``Put`` if ``ABSENT`` whose key is free but one of whose
    ``unique`` fields another record of ``kind`` holds: not a race to decide again (nothing
    under this key won), so it is an error, in the same words on every back end."""
    from arcade.errors import StoreError

    return StoreError(f"that {kind.name} is already stored under another key")


@dataclass(frozen=True)
class Refused:
    """A write whose condition was false: nothing of it was kept.

    ``stored`` holds, by operation, the record stored under that operation's key when its
    condition was the one refused (None for the others, and when nothing is stored), read
    with the refusal itself (SQLite inside the transaction, DynamoDB with ``ALL_OLD``). False
    in a boolean test.
    """

    stored: tuple[Any, ...]

    def __bool__(self) -> bool:
        return False
