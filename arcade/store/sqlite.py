"""SQLite back end: one file, one shared connection, unique keys and transactions."""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from arcade.clock import iso, iso_or_none, parse_iso
from arcade.errors import StoreError
from arcade.store.base import Store, as_stored, instant_fields
from arcade.store.primitives import (
    ABSENT,
    EXISTS,
    AbsentOrBelow,
    Kind,
    Operation,
    Put,
    Refused,
    Update,
    Version,
    held_under_another_key,
)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS machines (
    machine_id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    name TEXT,
    price_id TEXT,
    credits_per_unit INTEGER,
    last_seen TEXT,
    mqtt_connected INTEGER,
    credits_reported INTEGER,
    links_active INTEGER,
    credits_per_game INTEGER,
    timezone TEXT
);
CREATE TABLE IF NOT EXISTS machine_states (
    machine_id TEXT PRIMARY KEY,
    credits_granted INTEGER NOT NULL DEFAULT 0,
    credits_used INTEGER NOT NULL DEFAULT 0,
    games_without_credit INTEGER NOT NULL DEFAULT 0,
    session_id TEXT,
    session_started_at TEXT,
    revenue TEXT NOT NULL DEFAULT '{}',
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS payment_links (
    link_key TEXT PRIMARY KEY,
    link_id TEXT NOT NULL UNIQUE,
    machine_id TEXT NOT NULL,
    price_id TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    url TEXT NOT NULL,
    unit_amount INTEGER,
    currency TEXT NOT NULL,
    created_at TEXT NOT NULL,
    retired_at TEXT
);
CREATE TABLE IF NOT EXISTS payments (
    payment_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    machine_id TEXT,
    credits INTEGER NOT NULL DEFAULT 0,
    amount INTEGER NOT NULL DEFAULT 0,
    currency TEXT NOT NULL DEFAULT 'usd',
    payment_intent TEXT,
    amount_refunded INTEGER NOT NULL DEFAULT 0,
    granted_at TEXT,
    delivered_at TEXT,
    delivery_claimed_until TEXT,
    updated_at TEXT,
    phase TEXT,
    reason TEXT,
    disputed_at TEXT,
    due_at TEXT,
    delivery_attempts INTEGER NOT NULL DEFAULT 0,
    delivery_alarm_at TEXT,
    credited_at TEXT,
    note TEXT,
    bundle TEXT,
    plan_version INTEGER,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS payments_by_machine ON payments (machine_id, created_at);
CREATE INDEX IF NOT EXISTS payments_by_intent ON payments (payment_intent);
CREATE INDEX IF NOT EXISTS payment_links_by_machine ON payment_links (machine_id);
CREATE TABLE IF NOT EXISTS intents (
    payment_intent TEXT PRIMARY KEY,
    payment_id TEXT,
    amount_refunded INTEGER NOT NULL DEFAULT 0,
    disputed_at TEXT,
    updated_at TEXT,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS revenue_entries (
    entry_id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    gross INTEGER NOT NULL DEFAULT 0,
    refunded INTEGER NOT NULL DEFAULT 0,
    bundle TEXT,
    credits INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS plan_versions (
    owner TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    plan TEXT NOT NULL,
    PRIMARY KEY (owner, version)
);
CREATE TABLE IF NOT EXISTS changes (
    change_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    at TEXT NOT NULL,
    by TEXT NOT NULL,
    what TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_subject ON changes (subject, at);
CREATE INDEX IF NOT EXISTS revenue_by_time ON revenue_entries (at);
CREATE TABLE IF NOT EXISTS kept_values (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS game_over_keys (
    machine_id TEXT NOT NULL,
    key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (machine_id, key)
);
"""


class SqliteStore(Store):
    """Keep everything in one SQLite file."""

    def __init__(self, path: str):
        self.path = path
        self._conn: sqlite3.Connection | None = None
        # One connection, one writer at a time, queued on a lock in this process. SQLite's
        # own busy handler would make a waiting thread sleep whole milliseconds instead.
        self._lock = threading.RLock()

    # --- connections ----------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, timeout=10, isolation_level=None, check_same_thread=False
                )
                conn.row_factory = sqlite3.Row
                # WAL lets another process read beside our writer; NORMAL keeps every
                # committed transaction across a process crash and skips an fsync per commit.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                # A checkpoint writes the log back into the file and syncs it, which took a
                # webhook from 4 ms to 25 ms every so often; maintain() does it in the
                # background instead (and SQLite does it when the last connection closes).
                conn.execute("PRAGMA wal_autocheckpoint=0")
                conn.execute("PRAGMA busy_timeout=10000")
                conn.executescript(SCHEMA)
                _add_missing_columns(conn)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the SQLite store at {self.path}") from exc
            self._conn = conn
        return self._conn

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one immediate transaction and return what it returns.

        A connection that fails (a file made read-only, a full disk, an I/O error) is dropped
        and the transaction tried once more on a fresh one, so the store works again on the
        first call after the cause is gone. A broken constraint is not retried.
        """
        for attempt in (1, 2):
            with self._lock:
                conn = self._connection()
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        result = body(conn)
                    except BaseException:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                    return result
                except sqlite3.Error as exc:
                    self._forget_unless_constraint(exc)
                    if attempt == 2 or isinstance(exc, sqlite3.IntegrityError):
                        raise StoreError("the SQLite store refused the write") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _rows(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        for attempt in (1, 2):  # a failed connection is dropped and read through a fresh one
            with self._lock:
                try:
                    return self._connection().execute(sql, params).fetchall()
                except sqlite3.Error as exc:
                    self._forget_unless_constraint(exc)
                    if attempt == 2:
                        raise StoreError("the SQLite store could not be read") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _forget_unless_constraint(self, exc: sqlite3.Error) -> None:
        """Drop a connection that failed (read-only file, full disk, I/O error), so the next
        call opens a fresh one and works again once the cause is gone. A broken constraint
        says nothing about the connection."""
        if isinstance(exc, sqlite3.IntegrityError) or self._conn is None:
            return
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._conn = None

    def maintain(self) -> None:
        """Forget the game-over keys that expired (DynamoDB's Time to Live does the same), and
        copy the write-ahead log back into the database file, on a connection of its own so
        that requests never wait for its disk sync (a PASSIVE checkpoint waits for no one)."""
        if self._conn is None:
            return
        now = iso(datetime.now(UTC))
        self._transaction(
            lambda conn: conn.execute("DELETE FROM game_over_keys WHERE expires_at < ?", (now,))
        )
        try:
            conn = sqlite3.connect(self.path, timeout=1, isolation_level=None)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreError("the SQLite store could not be checkpointed") from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- the primitives -------------------------------------------------------------------
    def _get(self, kind: Kind, key: tuple[Any, ...]) -> Any | None:
        table = TABLES[kind.name]
        rows = self._rows(_select_sql(table, kind.key), tuple(as_stored(v) for v in key))
        return _from_row(kind, rows[0]) if rows else None

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
        # Every name in the statement is a field of the kind, mapped to its column; every value
        # is a bound parameter. Instants are compared as their stored text, which sorts in time
        # order, so the tables' indexes serve the bounds and the cursor.
        bounds = tuple(
            (operator, name)
            for operator, given in ((">=", at_least), ("<", below), ("<=", at_most))
            for name in (given or {})
        )
        sql = _query_text(
            TABLES[kind.name],
            kind.indexes[index].sort,
            tuple((name, value is None) for name, value in equals.items()),
            bounds,
            after is not None,
            newest_first,
            limit is not None,
        )
        params = [as_stored(value) for value in equals.values() if value is not None]
        for given in (at_least, below, at_most):
            params += [as_stored(value) for value in (given or {}).values()]
        if after is not None:
            params += [as_stored(value) for value in after]
        if limit is not None:
            params.append(limit + 1)  # one more than asked says whether more follow
        records = [_from_row(kind, row) for row in self._rows(sql, tuple(params))]
        if limit is None:
            return records, False
        return records[:limit], len(records) > limit

    def _write(self, *operations: Operation) -> Literal[True] | Refused:
        def write(conn: sqlite3.Connection) -> Any:
            for position, operation in enumerate(operations):
                if not _apply(conn, operation):
                    # Read what holds the key inside the transaction, before it rolls back.
                    refused: list[Any] = [None] * len(operations)
                    refused[position] = _read(conn, operation)
                    raise _Refusal(Refused(tuple(refused)))
            return True

        try:
            return self._transaction(write)
        except _Refusal as refusal:
            return refusal.refused


# --- the layout of each kind ------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # one per kind, compared and cached by identity
class _Table:
    """Where a kind is stored: its table, the columns named otherwise than their field, and
    the map fields kept as a JSON object in their column."""

    name: str
    renamed: Mapping[str, str] = field(default_factory=dict)
    json: frozenset[str] = frozenset()

    def column(self, name: str) -> str:
        return self.renamed.get(name, name)


TABLES = {
    "value": _Table("kept_values"),
    "plan_version": _Table("plan_versions"),
    "change": _Table("changes"),
    "game_over_key": _Table("game_over_keys"),
    "machine": _Table("machines"),
    "link": _Table("payment_links", {"key": "link_key"}),
    "payment": _Table("payments"),
    "intent": _Table("intents"),
    "revenue": _Table("revenue_entries"),
    "machine_state": _Table("machine_states", json=frozenset({"revenue"})),
}


@functools.cache
def _stored_fields(kind: Kind) -> tuple[str, ...]:
    """Return the names a kind's rows hold: its key (a property, for links) and its fields."""
    return tuple(dict.fromkeys((*kind.key, *(f.name for f in fields(kind.record)))))


def _put_values(kind: Kind, record: Any) -> tuple[Any, ...]:
    """Return a record's values in ``_put_columns`` order, instants as their text."""
    held = record.__dict__
    return tuple(
        (as_stored(getattr(record, name)) if how == _PROPERTY else iso_or_none(held[name]))
        if how
        else held[name]
        for name, how in _put_plan(kind)
    )


_PLAIN, _INSTANT, _PROPERTY = 0, 1, 2


@functools.cache
def _put_plan(kind: Kind) -> tuple[tuple[str, int], ...]:
    """Return each stored name of a kind with how its value is read: a plain field, an instant
    field (written as text) or a property of the record (a link's key)."""
    instants = instant_fields(kind.record)
    plain = {f.name for f in fields(kind.record)}
    return tuple(
        (name, _INSTANT if name in instants else _PLAIN if name in plain else _PROPERTY)
        for name in _stored_fields(kind)
    )


@functools.cache
def _put_columns(kind: Kind) -> tuple[str, ...]:
    """Return the columns of the names a kind's rows hold, in ``_stored_fields`` order."""
    table = TABLES[kind.name]
    return tuple(table.column(name) for name in _stored_fields(kind))


@functools.cache
def _row_plan(kind: Kind) -> tuple[tuple[tuple[str, str, bool], ...], frozenset[str]]:
    """Return, once per kind, each field with the column it is read from and whether it holds
    an instant, and its JSON fields (a webhook reads several rows: none of this is worked out
    again for each)."""
    table = TABLES[kind.name]
    instants = instant_fields(kind.record)
    plan = tuple((f.name, table.column(f.name), f.name in instants) for f in fields(kind.record))
    return plan, table.json


def _from_row(kind: Kind, row: sqlite3.Row) -> Any:
    """Return the record a row of ``kind``'s table holds, its instants as aware UTC datetimes.

    A row holds every field, so the record is made as ``changed`` copies one: its fields set
    at once, without the frozen dataclass's ``__init__`` (one guarded ``__setattr__`` a
    field, several rows a webhook). Raises ValueError for an instant ``iso`` did not write.
    """
    plan, json_fields = _row_plan(kind)
    values = {}
    for name, column, instant in plan:
        value = row[column]
        values[name] = parse_iso(value) if instant and value is not None else value
    for name in json_fields:
        values[name] = json.loads(values[name])
    record = object.__new__(kind.record)
    object.__setattr__(record, "__dict__", values)
    return record


@functools.cache
def _select_sql(table: _Table, key: tuple[str, ...]) -> str:
    where = " AND ".join(f"{table.column(name)} = ?" for name in key)
    return f"SELECT * FROM {table.name} WHERE {where}"  # noqa: S608 - our constants


def _update_sql(table: _Table, key: tuple[str, ...], update: Update) -> tuple[str, list[Any]]:
    """Return the UPDATE of one record and its parameters (names are the kind's columns)."""
    adds = tuple(
        (name, tuple(amount) if isinstance(amount, Mapping) else None)
        for name, amount in update.add.items()
    )
    sql = _update_text(table, key, tuple(update.set), adds, tuple(update.fill))
    params: list[Any] = [as_stored(value) for value in update.set.values()]
    for amount in update.add.values():
        if not isinstance(amount, Mapping):
            params.append(amount)
            continue
        for entry, number in amount.items():
            params += [f"$.{entry}", f"$.{entry}", number]
    params += [as_stored(value) for value in update.fill.values()]
    return sql, params


@functools.cache
def _update_text(
    table: _Table,
    key: tuple[str, ...],
    sets: tuple[str, ...],
    adds: tuple[tuple[str, tuple[str, ...] | None], ...],
    fills: tuple[str, ...],
) -> str:
    """Return the text of an UPDATE by its shape: made once per shape, as a webhook makes the
    same two updates every time (its parameters come in the same order, see _update_sql)."""
    clauses = [f"{table.column(name)} = ?" for name in sets]
    for name, entries in adds:
        column = table.column(name)
        if entries is None:
            clauses.append(f"{column} = {column} + ?")
            continue
        # A map field is a JSON object: each entry is added to (0 when absent) in one json_set.
        pairs = ", ".join(f"?, coalesce(json_extract({column}, ?), 0) + ?" for _ in entries)
        clauses.append(f"{column} = json_set({column}, {pairs})")
    clauses += [f"{table.column(name)} = coalesce({table.column(name)}, ?)" for name in fills]
    where = " AND ".join(f"{table.column(name)} = ?" for name in key)
    return f"UPDATE {table.name} SET {', '.join(clauses)} WHERE {where}"  # noqa: S608


@functools.cache
def _query_text(
    table: _Table,
    sort: tuple[str, ...],
    equals: tuple[tuple[str, bool], ...],
    bounds: tuple[tuple[str, str], ...],
    after: bool,
    newest_first: bool,
    limited: bool,
) -> str:
    """Return the text of a query by its shape (``equals``: each name and whether it must be
    NULL; ``bounds``: each operator and name, in the order their parameters come): made once
    per shape, as a webhook runs the same lookups every time."""
    clauses = [
        f"{table.column(name)} IS NULL" if is_null else f"{table.column(name)} = ?"
        for name, is_null in equals
    ]
    clauses += [f"{table.column(name)} {operator} ?" for operator, name in bounds]
    if after:
        columns = ", ".join(table.column(name) for name in sort)
        marks = ", ".join("?" for _ in sort)
        clauses.append(f"({columns}) {'<' if newest_first else '>'} ({marks})")
    sql = f"SELECT * FROM {table.name}"  # noqa: S608 - names are our constants
    if clauses:
        sql += f" WHERE {' AND '.join(clauses)}"
    if sort:
        order = " DESC" if newest_first else ""
        sql += " ORDER BY " + ", ".join(f"{table.column(name)}{order}" for name in sort)
    if limited:
        sql += " LIMIT ?"
    return sql


@functools.cache
def _delete_sql(table: _Table, key: tuple[str, ...]) -> str:
    where = " AND ".join(f"{table.column(name)} = ?" for name in key)
    return f"DELETE FROM {table.name} WHERE {where}"  # noqa: S608 - our constants


def _apply(conn: sqlite3.Connection, operation: Operation) -> bool:
    """Apply one operation; return False when its condition is false (nothing written)."""
    table = TABLES[operation.kind.name]
    key = operation.kind.key
    if isinstance(operation, Put):
        columns = _put_columns(operation.kind)
        values = _put_values(operation.kind, operation.record)
        if operation.condition is None:
            conn.execute(_insert_sql(table.name, columns, "OR REPLACE"), values)
            return True
        if isinstance(operation.condition, Version):
            return _put_versioned(conn, table, key, columns, values, operation.condition.read)
        if isinstance(operation.condition, AbsentOrBelow):
            # A stored record below the bound gives way; then the key is free or refused.
            below = operation.condition
            ids = tuple(as_stored(v) for v in operation.kind.key_of(operation.record))
            delete = _delete_sql(table, key) + f" AND {table.column(below.field)} < ?"
            conn.execute(delete, (*ids, as_stored(below.value)))
            return conn.execute(_insert_sql(table.name, columns, "OR IGNORE"), values).rowcount == 1
        if operation.condition is not ABSENT:
            raise ValueError(f"a Put is written if absent or always, not {operation.condition}")
        if conn.execute(_insert_sql(table.name, columns, "OR IGNORE"), values).rowcount == 1:
            return True
        if _read(conn, operation) is None:  # a unique field is held under another key
            raise held_under_another_key(operation.kind)
        return False
    ids = tuple(as_stored(operation.ids[name]) for name in key)
    version = operation.condition if isinstance(operation.condition, Version) else None
    if isinstance(operation, Update):
        sql, params = _update_sql(table, key, operation)
    else:
        sql, params = _delete_sql(table, key), []
    params += ids
    if version is not None:
        sql += " AND version = ?"
        params.append(version.read)
    cur = conn.execute(sql, params)
    if cur.rowcount == 0 and isinstance(operation, Update) and operation.condition is not EXISTS:
        # Made when absent, as DynamoDB's UpdateItem is: only a record's first update pays
        # for the insert (a machine state is updated on every webhook).
        key_columns = tuple(table.column(name) for name in key)
        conn.execute(_insert_sql(table.name, key_columns, "OR IGNORE"), ids)
        cur = conn.execute(sql, params)
    return (operation.condition is not EXISTS and version is None) or cur.rowcount > 0


def _read(conn: sqlite3.Connection, operation: Operation) -> Any | None:
    """Return the record stored under an operation's key, inside its transaction, or None."""
    kind = operation.kind
    if isinstance(operation, Put):
        key = kind.key_of(operation.record)
    else:
        key = tuple(operation.ids[name] for name in kind.key)
    row = conn.execute(
        _select_sql(TABLES[kind.name], kind.key), tuple(as_stored(v) for v in key)
    ).fetchone()
    return _from_row(kind, row) if row is not None else None


class _Refusal(Exception):
    """A condition was false: nothing of the transaction is kept (``refused`` says what)."""

    def __init__(self, refused: Refused) -> None:
        super().__init__("a condition was false")
        self.refused = refused


# Columns added after the first release, for store files made before them.
ADDED_COLUMNS = {
    ("payments", "phase"): "TEXT",
    ("payments", "reason"): "TEXT",
    ("payments", "disputed_at"): "TEXT",
    ("payments", "version"): "INTEGER NOT NULL DEFAULT 0",
    ("payments", "due_at"): "TEXT",
    ("payments", "delivery_attempts"): "INTEGER NOT NULL DEFAULT 0",
    ("payments", "delivery_alarm_at"): "TEXT",
    ("payments", "credited_at"): "TEXT",
    ("payments", "note"): "TEXT",
    ("machines", "last_seen"): "TEXT",
    ("machines", "mqtt_connected"): "INTEGER",
    ("machines", "credits_reported"): "INTEGER",
    ("machines", "links_active"): "INTEGER",
    ("machines", "credits_per_game"): "INTEGER",
    ("machines", "timezone"): "TEXT",
    ("payments", "bundle"): "TEXT",
    ("payments", "plan_version"): "INTEGER",
    ("revenue_entries", "bundle"): "TEXT",
    ("revenue_entries", "credits"): "INTEGER NOT NULL DEFAULT 0",
    ("payment_links", "retired_at"): "TEXT",
}
# Made after the columns they index, which older files gain only above.
INDEXES = (
    "CREATE INDEX IF NOT EXISTS payments_due ON payments (due_at) WHERE due_at IS NOT NULL",
    # The operator's listings: every payment newest first, and by status.
    "CREATE INDEX IF NOT EXISTS payments_by_time ON payments (created_at, payment_id)",
    "CREATE INDEX IF NOT EXISTS payments_by_status ON payments (status, created_at, payment_id)",
    "CREATE INDEX IF NOT EXISTS intents_unmatched ON intents (updated_at) WHERE payment_id IS NULL",
)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    added = set()
    for (table, column), kind in ADDED_COLUMNS.items():
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            added.add((table, column))
    for index in INDEXES:
        conn.execute(index)
    if ("payments", "due_at") in added:
        # Grants that waited for delivery before the outbox existed join it now.
        conn.execute(
            "UPDATE payments SET due_at = COALESCE(delivery_claimed_until, created_at)"
            " WHERE status = 'pending_delivery' AND due_at IS NULL"
        )
    if ("payments", "version") in added:
        # Files made before the intents table kept the PaymentIntent on the payment only.
        conn.execute(
            "INSERT OR IGNORE INTO intents (payment_intent, payment_id, version)"
            " SELECT payment_intent, payment_id, 1 FROM payments WHERE payment_intent IS NOT NULL"
        )


@functools.cache
def _insert_sql(table: str, columns: tuple[str, ...], verb: str = "") -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT {verb} INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608


def _put_versioned(
    conn: sqlite3.Connection,
    table: _Table,
    key: tuple[str, ...],
    columns: tuple[str, ...],
    values: tuple[Any, ...],
    read: int,
) -> bool:
    """Write a row only if the stored version is ``read`` (0: none stored, or a row written
    before versions existed): one statement that both checks and writes, so a race costs no
    extra read. Return whether it was written."""
    key_columns = tuple(table.column(name) for name in key)
    if read == 0:
        sql = _upsert_first_sql(table.name, key_columns, columns)
        return conn.execute(sql, values).rowcount == 1
    ids = tuple(values[columns.index(column)] for column in key_columns)
    sql = _update_versioned_sql(table.name, key_columns, columns)
    return conn.execute(sql, (*values, *ids, read)).rowcount == 1


# Table and column names in these statements are our own constants, never input; each is
# made once per table (a webhook writes a payment twice).
@functools.cache
def _upsert_first_sql(table: str, key: tuple[str, ...], columns: tuple[str, ...]) -> str:
    assignments = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (
        _insert_sql(table, columns)
        + f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {assignments}"
        + f" WHERE {table}.version = 0"
    )


@functools.cache
def _update_versioned_sql(table: str, key: tuple[str, ...], columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = ?" for c in columns)
    where = " AND ".join(f"{c} = ?" for c in key)
    return f"UPDATE {table} SET {sets} WHERE {where} AND version = ?"  # noqa: S608
