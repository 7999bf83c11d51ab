"""The cabinet's own record in one SQLite file: payments seen, credits left, coins, game overs,
confirmations owed to the API, and the API's pinned public key.

A coinpulse is recorded and its credits added in one transaction keyed on ``paymentId``, so a
redelivered pulse (the broker resending after a lost PUBACK, the API publishing a grant again)
can never add credits twice, across restarts too. Coins are fired from the ``payments`` rows,
game overs are sent from the ``game_overs`` rows and confirmations from the ``confirmations``
rows, so a restart finishes what a crash left.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CLIENT_ID = "mqtt_client_id"
# What one game uses, as the API last said in answer to a heartbeat or a game over (1 until
# it says).
CREDITS_PER_GAME = "credits_per_game"
PULSE_KEY = "pulse_public_key"

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    payment_id  TEXT PRIMARY KEY,
    credits     INTEGER NOT NULL CHECK (credits > 0),
    coins_fired INTEGER NOT NULL DEFAULT 0,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counter (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    credits INTEGER NOT NULL CHECK (credits >= 0)
);
INSERT OR IGNORE INTO counter (id, credits) VALUES (1, 0);
-- credits_per_game: what the game cost when it ended, told to the API with it (NULL in rows
-- of a file older than the column: the API then counts with the machine's value).
CREATE TABLE IF NOT EXISTS game_overs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    ended_at         TEXT NOT NULL,
    source           TEXT NOT NULL,
    used_credit      INTEGER NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    sent_at          TEXT,
    credits_per_game INTEGER
);
-- One row per payment whose coins were all fired: POST .../credits/ack until answered.
CREATE TABLE IF NOT EXISTS confirmations (
    payment_id  TEXT PRIMARY KEY,
    status      TEXT NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    queued_at   TEXT NOT NULL,
    answered_at TEXT
);
-- What the cabinet keeps between runs, such as the API's public key once it is pinned.
CREATE TABLE IF NOT EXISTS kept (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Grant:
    """Credits added by one newly seen payment."""

    payment_id: str
    credits: int
    credits_left: int


@dataclass(frozen=True)
class Coin:
    """One coin still to fire: the ``number``-th of a payment's ``of`` credits."""

    payment_id: str
    number: int
    of: int


@dataclass(frozen=True)
class GameOver:
    """A game over recorded locally, to be sent to the API."""

    id: int
    ended_at: str
    source: str
    used_credit: bool
    credits_left: int
    credits_per_game: int | None = None  # what it cost here; None: not recorded (older file)


class CabinetLedger:
    """Own the SQLite file; every method is one short transaction, safe from any thread."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        # isolation_level=None: transactions are opened and closed here, explicitly.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            # WAL + synchronous=FULL: a committed payment survives a power cut.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(game_overs)")}
            if "credits_per_game" not in columns:  # a file from before the column
                self._db.execute("ALTER TABLE game_overs ADD COLUMN credits_per_game INTEGER")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Hold the lock and one write transaction: committed when the block ends (also by a
        return), rolled back and raised again when anything in it raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    # --- credits ------------------------------------------------------------------------------
    @property
    def credits(self) -> int:
        """Return the credits left on this cabinet."""
        with self._lock:
            (credits,) = self._db.execute("SELECT credits FROM counter WHERE id = 1").fetchone()
        return int(credits)

    def add_payment(self, payment_id: str, credits: int) -> Grant | None:
        """Record ``payment_id`` and add its credits; return None when it was already seen."""
        with self._transaction():
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO payments (payment_id, credits, received_at)"
                " VALUES (?, ?, ?)",
                (payment_id, credits, _now()),
            ).rowcount
            if not inserted:
                return None  # already seen: the transaction changed nothing
            self._db.execute("UPDATE counter SET credits = credits + ? WHERE id = 1", (credits,))
            (left,) = self._db.execute("SELECT credits FROM counter WHERE id = 1").fetchone()
        return Grant(payment_id, credits, int(left))

    def payment_count(self) -> int:
        """Return how many distinct payments were recorded."""
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM payments").fetchone()
        return int(count)

    # --- coins --------------------------------------------------------------------------------
    def next_coin(self) -> Coin | None:
        """Return the oldest coin not fired yet, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT payment_id, coins_fired, credits FROM payments"
                " WHERE coins_fired < credits ORDER BY rowid LIMIT 1"
            ).fetchone()
        return None if row is None else Coin(row[0], int(row[1]) + 1, int(row[2]))

    def coin_fired(self, coin: Coin) -> None:
        """Record that ``coin`` was fired; after a payment's last coin, owe the API its ack."""
        with self._transaction():
            self._db.execute(
                "UPDATE payments SET coins_fired = ? WHERE payment_id = ? AND coins_fired = ?",
                (coin.number, coin.payment_id, coin.number - 1),
            )
            if coin.number == coin.of:
                self._db.execute(
                    "INSERT OR IGNORE INTO confirmations (payment_id, queued_at) VALUES (?, ?)",
                    (coin.payment_id, _now()),
                )

    # --- confirmations ------------------------------------------------------------------------
    def next_confirmation(self) -> str | None:
        """Return the payment id of the oldest confirmation not answered yet, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT payment_id FROM confirmations WHERE status = 'pending'"
                " ORDER BY rowid LIMIT 1"
            ).fetchone()
        return None if row is None else str(row[0])

    def finish_confirmation(self, payment_id: str, *, status: str, attempts: int) -> None:
        """Mark a confirmation ``confirmed`` or ``dropped``, or add attempts to a pending one."""
        answered_at = None if status == "pending" else _now()
        with self._lock:
            self._db.execute(
                "UPDATE confirmations SET status = ?, attempts = attempts + ?, answered_at = ?"
                " WHERE payment_id = ?",
                (status, attempts, answered_at, payment_id),
            )

    def confirmations(self) -> dict[str, str]:
        """Return every confirmation's status by payment id."""
        with self._lock:
            rows = self._db.execute("SELECT payment_id, status FROM confirmations").fetchall()
        return {str(payment_id): str(status) for payment_id, status in rows}

    # --- the API's public key -----------------------------------------------------------------
    def pulse_key(self) -> str | None:
        """Return the API's public key pinned in this file, or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM kept WHERE name = ?", (PULSE_KEY,)).fetchone()
        return None if row is None else str(row[0])

    def keep_pulse_key(self, key: str) -> None:
        """Pin ``key`` as the API's public key, replacing any kept before."""
        with self._lock:
            self._db.execute(
                "INSERT INTO kept (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (PULSE_KEY, key),
            )

    # --- the MQTT client id ---------------------------------------------------------------------
    def client_id(self, machine_id: str) -> str:
        """Return this cabinet's MQTT client id, made once at random and kept in this file.

        The broker keeps the cabinet's session (its queued coinpulses) under this id. An id
        anyone could guess (``cabinet-<machine>``) would let any other broker login connect
        under it and throw that queue away; a kept random one also survives a change of the
        broker password, which an id derived from the password would not.
        """
        made = f"cabinet-{machine_id}-{secrets.token_hex(8)}"
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO kept (name, value) VALUES (?, ?)", (CLIENT_ID, made)
            )
            row = self._db.execute("SELECT value FROM kept WHERE name = ?", (CLIENT_ID,)).fetchone()
        return str(row[0])

    # --- game overs ---------------------------------------------------------------------------
    def credits_per_game(self) -> int:
        """Return the credits one game uses on this machine (the API's credits_per_game)."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM kept WHERE name = ?", (CREDITS_PER_GAME,)
            ).fetchone()
        return 1 if row is None else int(row[0])

    def keep_credits_per_game(self, credits: int) -> None:
        """Keep the credits one game uses, as the API last said it in answer to a heartbeat or
        a game over (survives a restart)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO kept (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (CREDITS_PER_GAME, str(credits)),
            )

    def add_game_over(self, source: str) -> GameOver:
        """Use one game's credits when that many are left (else the game used none, as the
        API counts it), and queue the game over for the API with what the game cost."""
        ended_at = _now()
        per_game = self.credits_per_game()
        with self._transaction():
            used = self._db.execute(
                "UPDATE counter SET credits = credits - ? WHERE id = 1 AND credits >= ?",
                (per_game, per_game),
            ).rowcount
            cursor = self._db.execute(
                "INSERT INTO game_overs (ended_at, source, used_credit, credits_per_game)"
                " VALUES (?, ?, ?, ?)",
                (ended_at, source, used, per_game),
            )
            (left,) = self._db.execute("SELECT credits FROM counter WHERE id = 1").fetchone()
        return GameOver(
            int(cursor.lastrowid or 0), ended_at, source, bool(used), int(left), per_game
        )

    def next_game_over(self) -> GameOver | None:
        """Return the oldest game over not yet sent (nor refused by the API), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, ended_at, source, used_credit, credits_per_game FROM game_overs"
                " WHERE status = 'pending' ORDER BY id LIMIT 1"
            ).fetchone()
            (left,) = self._db.execute("SELECT credits FROM counter WHERE id = 1").fetchone()
        if row is None:
            return None
        per_game = None if row[4] is None else int(row[4])
        return GameOver(int(row[0]), row[1], row[2], bool(row[3]), int(left), per_game)

    def finish_game_over(self, game_over_id: int, *, status: str, attempts: int) -> None:
        """Mark a game over ``sent`` or ``rejected``, or add attempts to a ``pending`` one."""
        sent_at = _now() if status == "sent" else None
        with self._lock:
            self._db.execute(
                "UPDATE game_overs SET status = ?, attempts = attempts + ?, sent_at = ?"
                " WHERE id = ?",
                (status, attempts, sent_at, game_over_id),
            )


def _now() -> str:
    """Return the time now as ``2026-11-22T10:00:00.123456Z`` (fixed width, so it sorts)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
