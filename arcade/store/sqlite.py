"""SQLite back end: one file, one shared connection, unique keys and transactions."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields

from arcade.errors import MachineExists, StoreError, UnknownMachine
from arcade.store.base import (
    GRANTED_STATUSES,
    PENDING_DELIVERY,
    PRE_GRANT_STATUSES,
    Machine,
    MachineState,
    Payment,
    PaymentLink,
    Store,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS machines (
    machine_id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    name TEXT,
    price_id TEXT,
    credits_per_unit INTEGER
);
CREATE TABLE IF NOT EXISTS machine_states (
    machine_id TEXT PRIMARY KEY,
    credits_granted INTEGER NOT NULL DEFAULT 0,
    credits_used INTEGER NOT NULL DEFAULT 0,
    games_without_credit INTEGER NOT NULL DEFAULT 0,
    session_id TEXT,
    session_started_at TEXT,
    last_game_over_key TEXT,
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
    created_at TEXT NOT NULL
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
    updated_at TEXT
);
CREATE INDEX IF NOT EXISTS payments_by_machine ON payments (machine_id, created_at);
CREATE INDEX IF NOT EXISTS payments_by_intent ON payments (payment_intent);
"""

PAYMENT_COLUMNS = tuple(f.name for f in fields(Payment))
MACHINE_COLUMNS = tuple(f.name for f in fields(Machine))
LINK_COLUMNS = tuple(f.name for f in fields(PaymentLink))


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
                conn.execute("PRAGMA busy_timeout=10000")
                conn.executescript(SCHEMA)
                _add_missing_columns(conn)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the SQLite store at {self.path}") from exc
            self._conn = conn
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError("the SQLite store refused the write") from exc

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError("the SQLite store could not be read") from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- machines -------------------------------------------------------------------------
    def add_machine(self, machine: Machine) -> None:
        try:
            with self._transaction() as conn:
                conn.execute(_insert_sql("machines", MACHINE_COLUMNS), _values(machine))
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise MachineExists(machine.machine_id) from exc
            raise

    def get_machine(self, machine_id: str) -> Machine | None:
        rows = self._query("SELECT * FROM machines WHERE machine_id = ?", (machine_id,))
        return Machine(**dict(rows[0])) if rows else None

    def list_machines(self) -> list[Machine]:
        return [Machine(**dict(r)) for r in self._query("SELECT * FROM machines ORDER BY 1")]

    def set_token_hash(self, machine_id: str, token_hash: str) -> None:
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE machines SET token_hash = ? WHERE machine_id = ?", (token_hash, machine_id)
            )
            if cur.rowcount == 0:
                raise UnknownMachine(machine_id)

    def remove_machine(self, machine_id: str) -> None:
        with self._transaction() as conn:
            cur = conn.execute("DELETE FROM machines WHERE machine_id = ?", (machine_id,))
            if cur.rowcount == 0:
                raise UnknownMachine(machine_id)

    # --- payment links --------------------------------------------------------------------
    def get_link(self, key: str) -> PaymentLink | None:
        rows = self._query("SELECT * FROM payment_links WHERE link_key = ?", (key,))
        return _link(rows[0]) if rows else None

    def get_link_by_id(self, link_id: str) -> PaymentLink | None:
        rows = self._query("SELECT * FROM payment_links WHERE link_id = ?", (link_id,))
        return _link(rows[0]) if rows else None

    def put_link(self, link: PaymentLink) -> PaymentLink:
        with self._transaction() as conn:
            conn.execute(
                _insert_sql("payment_links", ("link_key", *LINK_COLUMNS), "OR IGNORE"),
                (link.key, *_values(link)),
            )
            row = conn.execute(
                "SELECT * FROM payment_links WHERE link_key = ?", (link.key,)
            ).fetchone()
            if row is None:  # the Stripe link id is already stored under another key
                raise StoreError("that payment link is already stored for another machine")
        return _link(row)

    # --- payments -------------------------------------------------------------------------
    def get_payment(self, payment_id: str) -> Payment | None:
        rows = self._query("SELECT * FROM payments WHERE payment_id = ?", (payment_id,))
        return Payment(**dict(rows[0])) if rows else None

    def get_payment_by_intent(self, payment_intent: str) -> Payment | None:
        rows = self._query(
            "SELECT * FROM payments WHERE payment_intent = ? LIMIT 1", (payment_intent,)
        )
        return Payment(**dict(rows[0])) if rows else None

    def record_payment(self, payment: Payment) -> Payment:
        with self._transaction() as conn:
            stored = _payment_in(conn, payment.payment_id)
            if stored is None:
                conn.execute(_insert_sql("payments", PAYMENT_COLUMNS), _values(payment))
            elif stored.status not in GRANTED_STATUSES:
                conn.execute(_replace_payment_sql(), (*_values(payment), payment.payment_id))
            return _payment_in(conn, payment.payment_id)  # type: ignore[return-value]

    def grant_payment(self, payment: Payment) -> tuple[Payment, bool]:
        with self._transaction() as conn:
            stored = _payment_in(conn, payment.payment_id)
            if stored is not None and stored.status not in PRE_GRANT_STATUSES:
                return stored, False
            if stored is None:
                conn.execute(_insert_sql("payments", PAYMENT_COLUMNS), _values(payment))
            else:
                conn.execute(_replace_payment_sql(), (*_values(payment), payment.payment_id))
            _ensure_state(conn, payment.machine_id)
            revenue = _revenue_in(conn, payment.machine_id)
            revenue[payment.currency] = revenue.get(payment.currency, 0) + payment.amount
            conn.execute(
                "UPDATE machine_states SET credits_granted = credits_granted + ?, revenue = ?,"
                " version = version + 1 WHERE machine_id = ?",
                (payment.credits, json.dumps(revenue), payment.machine_id),
            )
            return payment, True

    def claim_delivery(self, payment_id: str, now: str, until: str) -> bool:
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE payments SET delivery_claimed_until = ? WHERE payment_id = ?"
                " AND status = ? AND (delivery_claimed_until IS NULL"
                " OR delivery_claimed_until < ?)",
                (until, payment_id, PENDING_DELIVERY, now),
            )
            return cur.rowcount == 1

    def release_delivery(self, payment_id: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE payments SET delivery_claimed_until = NULL WHERE payment_id = ?",
                (payment_id,),
            )

    def mark_delivered(self, payment_id: str, now: str) -> bool:
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE payments SET status = 'delivered', delivered_at = ?, updated_at = ?,"
                " delivery_claimed_until = NULL WHERE payment_id = ? AND status = ?",
                (now, now, payment_id, PENDING_DELIVERY),
            )
            return cur.rowcount == 1

    def record_refund(self, payment_id: str, amount_refunded: int, status: str, now: str) -> int:
        with self._transaction() as conn:
            stored = _payment_in(conn, payment_id)
            if stored is None or not stored.granted or amount_refunded <= stored.amount_refunded:
                return 0
            increase = amount_refunded - stored.amount_refunded
            conn.execute(
                "UPDATE payments SET amount_refunded = ?, status = ?, updated_at = ?"
                " WHERE payment_id = ?",
                (amount_refunded, status, now, payment_id),
            )
            if stored.machine_id is not None:
                _ensure_state(conn, stored.machine_id)
                revenue = _revenue_in(conn, stored.machine_id)
                revenue[stored.currency] = revenue.get(stored.currency, 0) - increase
                conn.execute(
                    "UPDATE machine_states SET revenue = ?, version = version + 1"
                    " WHERE machine_id = ?",
                    (json.dumps(revenue), stored.machine_id),
                )
            return increase

    def list_payments(self, machine_id: str, limit: int = 20) -> list[Payment]:
        rows = self._query(
            "SELECT * FROM payments WHERE machine_id = ?"
            " ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (machine_id, limit),
        )
        return [Payment(**dict(r)) for r in rows]

    # --- machine state --------------------------------------------------------------------
    def get_machine_state(self, machine_id: str) -> MachineState:
        rows = self._query("SELECT * FROM machine_states WHERE machine_id = ?", (machine_id,))
        if not rows:
            return MachineState(machine_id=machine_id)
        row = dict(rows[0])
        row["revenue"] = json.loads(row["revenue"])
        return MachineState(**row)

    def update_machine_state(self, state: MachineState) -> bool:
        with self._transaction() as conn:
            _ensure_state(conn, state.machine_id)
            cur = conn.execute(
                "UPDATE machine_states SET credits_used = ?, games_without_credit = ?,"
                " session_id = ?, session_started_at = ?, last_game_over_key = ?,"
                " version = version + 1 WHERE machine_id = ? AND version = ?",
                (
                    state.credits_used,
                    state.games_without_credit,
                    state.session_id,
                    state.session_started_at,
                    state.last_game_over_key,
                    state.machine_id,
                    state.version,
                ),
            )
            return cur.rowcount == 1


# Columns added after the first release, for store files made before them.
ADDED_COLUMNS = {("machine_states", "last_game_over_key"): "TEXT"}


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for (table, column), kind in ADDED_COLUMNS.items():
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _insert_sql(table: str, columns: tuple[str, ...], verb: str = "") -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT {verb} INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608


def _replace_payment_sql() -> str:
    assignments = ", ".join(f"{c} = ?" for c in PAYMENT_COLUMNS)
    return f"UPDATE payments SET {assignments} WHERE payment_id = ?"  # noqa: S608


def _values(record: object) -> tuple:
    return tuple(getattr(record, f.name) for f in fields(record))  # type: ignore[arg-type]


def _link(row: sqlite3.Row) -> PaymentLink:
    return PaymentLink(**{c: row[c] for c in LINK_COLUMNS})


def _payment_in(conn: sqlite3.Connection, payment_id: str) -> Payment | None:
    row = conn.execute("SELECT * FROM payments WHERE payment_id = ?", (payment_id,)).fetchone()
    return Payment(**dict(row)) if row else None


def _ensure_state(conn: sqlite3.Connection, machine_id: str | None) -> None:
    conn.execute("INSERT OR IGNORE INTO machine_states (machine_id) VALUES (?)", (machine_id,))


def _revenue_in(conn: sqlite3.Connection, machine_id: str | None) -> dict[str, int]:
    row = conn.execute(
        "SELECT revenue FROM machine_states WHERE machine_id = ?", (machine_id,)
    ).fetchone()
    return json.loads(row["revenue"]) if row else {}
