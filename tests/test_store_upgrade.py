"""A store written by the release before the store refactor keeps working, with no migration.

``tests/data/store_before_refactor/`` holds what that release (commit 8c5c6b5) wrote on a
SQLite file and on a DynamoDB table (see its README.md). Each test loads it into a fresh
store, opens it with today's code, and checks, through the store and through the app, that
every record reads back as the old release wrote it (instants as the same UTC instants its
text said) and that the service goes on from there: a new payment on an old link, the old
signing key, the grant left owed, the game-over key, the refund kept for a later session.

The expected values are what the old release was asked to do, written out here; the old text
of each instant is read from the dump itself, never through the code under test.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask

from arcade.store.base import PaymentQuery, Store, link_key
from tests.support.app import ADMIN_KEY, TOPIC_PREFIX, signed_post
from tests.support.stripe_standin import charge, checkout_session, event

DATA = Path(__file__).parent / "data" / "store_before_refactor"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# The tokens the old release issued (make_dumps.py fixed them; the store holds their hash).
TOKENS = {
    "cab001": "mt_upgrade-fixture-cab001-0123456789abcdefghijk",
    "cab002": "mt_upgrade-fixture-cab002-0123456789abcdefghijk",
}
# What GET /pulse-key answered from the old release, on each store.
OLD_PULSE_KEYS = {
    "sqlite": "TPsqKHVM_9_NWoL5v6OUNp4i5hpbNcH5fS7XdWzGfF4",
    "dynamodb": "u-uDft6Wl4H02CfKmIIyxlakMcGLoxkA-0q1EhHCjpo",
}
MANUAL = "manual_0c73fec69eca61945c7fdb93f8fa70f4"  # the grant under Idempotency-Key jam-upgrade-1
# payment id: (status, machine, credits, amount, amount refunded, bundle, plan version)
PAYMENTS = {
    "cs_upgrade_delivered": ("delivered", "cab001", 2, 100, 0, None, None),
    "cs_upgrade_refunded": ("refunded", "cab001", 1, 50, 50, None, None),
    "cs_upgrade_disputed": ("disputed", "cab002", 1, 100, 0, None, None),
    "cs_upgrade_unattributed": ("unattributed", None, 0, 50, 0, None, None),
    "cs_upgrade_bundle": ("delivered", "cab001", 19, 600, 0, "5 games", 1),
    MANUAL: ("delivered", "cab001", 3, 0, 0, None, None),
    "cs_upgrade_pending": ("pending_delivery", "cab002", 2, 100, 0, "2 games", 1),
}
GAME_OVER_KEY = "cab001-upgrade-game-1"
# The day the dumps were written, in UTC, for the revenue report's window.
DAY, NEXT_DAY = "2026-11-30", "2026-12-01"

# paho leaves the socket of a connection to a stopped broker to the collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")


# --- the old data, read without the code under test ----------------------------------------
@dataclass
class OldData:
    """Rows as the old release stored them, by SQLite table name, each a dict of column (or
    DynamoDB attribute) to value, instants as their stored text."""

    backend: str
    tables: dict[str, list[dict[str, Any]]]

    def rows(self, table: str) -> list[dict[str, Any]]:
        return self.tables.get(table, [])

    def row(self, table: str, **match: Any) -> dict[str, Any]:
        (found,) = [r for r in self.rows(table) if all(r.get(k) == v for k, v in match.items())]
        return found


def sqlite_tables(connection: sqlite3.Connection) -> dict[str, list[dict[str, Any]]]:
    connection.row_factory = sqlite3.Row
    names = [
        r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    ]
    return {
        name: [dict(r) for r in connection.execute(f'SELECT * FROM "{name}"')]  # noqa: S608
        for name in names
    }


# DynamoDB item types (their ``entity``; machine states have none) and the SQLite table of each.
ENTITIES = {
    "machine": "machines",
    "link": "payment_links",
    "payment": "payments",
    "intent": "intents",
    "revenue": "revenue_entries",
    "plan_version": "plan_versions",
    "change": "changes",
    "game_over_key": "game_over_keys",
    "value": "kept_values",
}


def dynamodb_tables(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    def plain(attribute: dict[str, Any]) -> Any:
        ((kind, value),) = attribute.items()
        return int(value) if kind == "N" else value

    tables: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        values = {name: plain(attribute) for name, attribute in item.items()}
        if "entity" in values:
            if values["pk"].startswith("LINKID#"):
                continue  # the copy of a link under its Stripe id
            table = ENTITIES[values["entity"]]
            if table == "kept_values":
                values["name"] = values["pk"].removeprefix("VALUE#")
            if table == "payment_links":
                values["link_key"] = values["pk"].removeprefix("LINK#")
        else:
            table = "machine_states"
            revenue = {k.removeprefix("revenue_"): v for k, v in values.items() if "revenue_" in k}
            values["revenue"] = json.dumps(revenue)
        tables.setdefault(table, []).append(values)
    return tables


def instant(text: str) -> datetime:
    """Return the UTC instant an old text says (``2026-11-30T04:57:29.078775Z``)."""
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0), text
    return moment


def assert_reads_as_stored(record: Any, row: dict[str, Any]) -> None:
    """Check that every field of a record is what the old row holds: an instant the same UTC
    instant as its text, a field the row leaves out (DynamoDB stores no None) its default."""
    assert record is not None, row
    for field in fields(record):
        value = getattr(record, field.name)
        stored = row.get(field.name, None if field.default is MISSING else field.default)
        if isinstance(value, datetime):
            assert stored is not None and value == instant(stored), (field.name, value, stored)
            assert value.utcoffset() == timedelta(0), field.name
        else:
            assert value == stored, (type(record).__name__, field.name, value, stored)


# --- an app on the old store ---------------------------------------------------------------
@pytest.fixture(params=["sqlite", "dynamodb"])
def upgraded(
    request: pytest.FixtureRequest,
    make_app: Callable[..., Flask],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Flask, OldData]]:
    """Load the old release's dump into a fresh store of each kind; build today's app on it."""
    if request.param == "sqlite":
        dump = (DATA / "sqlite.sql").read_text()
        # make_app builds on this very file: the old release's tables, rows and indexes.
        with sqlite3.connect(tmp_path / "arcade.db") as connection:
            connection.executescript(dump)
            old = OldData("sqlite", sqlite_tables(connection))
        connection.close()
        yield make_app(), old
        return
    monkeypatch.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("moto_endpoint"))
    table = request.getfixturevalue("dynamodb_table")
    client = request.getfixturevalue("dynamodb_client")
    app = make_app(DATABASE_URL=f"dynamodb://{table}")
    app.extensions["arcade"].store.create_table()
    layout = json.loads((DATA / "dynamodb_table.json").read_text())
    described = client.describe_table(TableName=table)["Table"]
    # Today's table is the old one: same key schema, attributes and indexes.
    assert described["KeySchema"] == layout["KeySchema"]
    assert (
        sorted(described["AttributeDefinitions"], key=lambda a: a["AttributeName"])
        == (layout["AttributeDefinitions"])
    )
    indexes = {
        index["IndexName"]: {k: index[k] for k in ("IndexName", "KeySchema", "Projection")}
        for index in described["GlobalSecondaryIndexes"]
    }
    assert indexes == {index["IndexName"]: index for index in layout["GlobalSecondaryIndexes"]}
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == layout["TimeToLive"]["AttributeName"] == "expires_at_epoch"
    items = json.loads((DATA / "dynamodb_items.json").read_text())
    for item in items:
        client.put_item(TableName=table, Item=item)
    yield app, OldData("dynamodb", dynamodb_tables(items))


def store_of(app: Flask) -> Store:
    return app.extensions["arcade"].store


def cabinet(machine_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[machine_id]}"}


# --- every record reads back ------------------------------------------------------------------
def test_every_record_the_old_release_wrote_reads_back_through_the_store(upgraded):
    """GIVEN a store written by the release before the refactor WHEN today's store reads it
    THEN each machine, link, payment, intent, revenue entry, plan version, change, game-over key,
    kept value and machine state is what was written, instants the same UTC instants."""
    app, old = upgraded
    store = store_of(app)

    assert [m.machine_id for m in store.list_machines()] == ["cab001", "cab002"]
    for row in old.rows("machines"):
        assert_reads_as_stored(store.get_machine(row["machine_id"]), row)
    cab002 = store.get_machine("cab002")
    assert (cab002.credits_per_game, cab002.timezone, cab002.price_id) == (
        2,
        "Europe/Paris",
        "price_back_room",
    )
    assert (cab002.mqtt_connected, cab002.credits_reported) == (1, 2)

    links = old.rows("payment_links")
    assert len(links) == 7
    for row in links:
        by_key = store.get_link(row["link_key"])
        assert_reads_as_stored(by_key, row)
        assert by_key.key == row["link_key"]
        assert_reads_as_stored(store.get_link_by_id(row["link_id"]), row)
    for machine_id in ("cab001", "cab002"):
        listed = {link.link_id for link in store.list_links(machine_id)}
        assert listed == {r["link_id"] for r in links if r["machine_id"] == machine_id}
    retired = {r["link_key"] for r in links if r.get("retired_at")}
    assert "cab002|price_back_room|0" in retired  # cab002's plan does not sell its own price

    assert {r["payment_id"] for r in old.rows("payments")} == set(PAYMENTS)
    for payment_id, expected in PAYMENTS.items():
        payment = store.get_payment(payment_id)
        assert_reads_as_stored(payment, old.row("payments", payment_id=payment_id))
        assert (
            payment.status,
            payment.machine_id,
            payment.credits,
            payment.amount,
            payment.amount_refunded,
            payment.bundle,
            payment.plan_version,
        ) == expected
    assert store.get_payment(MANUAL).note == "coin mech jammed"
    assert store.get_payment("cs_upgrade_unattributed").reason == (
        "machine cab999 is not registered"
    )

    # Listings in the order the old text sorts in: newest first, ties by id descending.
    newest_first = sorted(
        old.rows("payments"), key=lambda r: (r["created_at"], r["payment_id"]), reverse=True
    )
    listed, more = store.query_payments(PaymentQuery(limit=50))
    assert [p.payment_id for p in listed] == [r["payment_id"] for r in newest_first]
    assert not more
    by_cab001, _ = store.query_payments(PaymentQuery(machine_id="cab001"))
    assert [p.payment_id for p in by_cab001] == [
        r["payment_id"] for r in newest_first if r.get("machine_id") == "cab001"
    ]
    delivered, _ = store.query_payments(PaymentQuery(status="delivered"))
    assert {p.payment_id for p in delivered} == {
        "cs_upgrade_delivered",
        "cs_upgrade_bundle",
        MANUAL,
    }
    first = instant(newest_first[-1]["created_at"])
    since, _ = store.query_payments(PaymentQuery(since=first + timedelta(microseconds=1)))
    assert {p.payment_id for p in since} == {
        r["payment_id"] for r in old.rows("payments") if instant(r["created_at"]) > first
    }
    due = store.list_due(datetime.now(UTC))
    assert [p.payment_id for p in due] == ["cs_upgrade_pending"]

    for row in old.rows("intents"):
        assert_reads_as_stored(store.get_intent(row["payment_intent"]), row)
    (early,) = store.list_unmatched_intents()
    assert (early.payment_intent, early.payment_id, early.amount_refunded) == (
        "pi_upgrade_early",
        None,
        50,
    )

    entries = store.list_revenue(instant(f"{DAY}T00:00:00Z"), instant(f"{NEXT_DAY}T00:00:00Z"))
    assert len(entries) == len(old.rows("revenue_entries")) == 6
    for entry in entries:
        assert_reads_as_stored(entry, old.row("revenue_entries", entry_id=entry.entry_id))
    assert sum(e.gross for e in entries) == 950 and sum(e.refunded for e in entries) == 50
    assert [e.at for e in entries] == sorted(e.at for e in entries)

    for row in old.rows("plan_versions"):
        version = store.get_plan_version(row["owner"])
        assert_reads_as_stored(version, row)
        made = instant(row["created_at"])
        assert store.get_plan_version(row["owner"], made) == version
        assert store.get_plan_version(row["owner"], made - timedelta(microseconds=1)) is None
        assert store.list_plan_versions(row["owner"]) == [version]
    assert json.loads(store.get_plan_version("*").plan)["bundles"][1]["name"] == "5 games"

    for subject in ("cab002", "*"):
        rows = sorted(
            (r for r in old.rows("changes") if r["subject"] == subject),
            key=lambda r: (r["at"], r["change_id"]),
            reverse=True,
        )
        changes = store.list_changes(subject)
        assert [c.change_id for c in changes] == [r["change_id"] for r in rows]
        for change, row in zip(changes, rows, strict=True):
            assert_reads_as_stored(change, row)
    assert len(store.list_changes("cab002")) == 2

    key = store.get_game_over_key("cab001", GAME_OVER_KEY)
    assert_reads_as_stored(key, old.row("game_over_keys", key=GAME_OVER_KEY))
    assert key.published == 1 and key.expires_at - key.created_at == timedelta(hours=24)

    seed = old.row("kept_values", name="pulse_signing_key")["value"]
    assert store.get_value("pulse_signing_key") == seed

    states = {r["machine_id"]: r for r in old.rows("machine_states")}
    cab001_state = store.get_machine_state("cab001")
    assert (cab001_state.credits_granted, cab001_state.credits_used) == (25, 1)
    assert cab001_state.revenue == {"usd": 700}
    assert cab001_state.session_id == states["cab001"]["session_id"]
    assert cab001_state.session_started_at == instant(states["cab001"]["session_started_at"])
    cab002_state = store.get_machine_state("cab002")
    assert (cab002_state.credits_granted, cab002_state.credits_used) == (3, 0)
    assert (cab002_state.session_id, cab002_state.session_started_at) == (None, None)
    assert cab002_state.revenue == {"usd": 200}


def test_the_app_answers_the_old_instants_text_and_revenue_as_the_old_release_did(upgraded):
    """GIVEN the old store WHEN operators and cabinets read it through today's app THEN the
    payments, the machines and the revenue report say what the old release said."""
    app, old = upgraded
    client = app.test_client()
    payments = {r["payment_id"]: r for r in old.rows("payments")}

    listed = client.get("/payments?limit=50", headers=ADMIN).json
    assert listed["next_cursor"] is None
    assert {p["id"] for p in listed["payments"]} == set(PAYMENTS)
    for shown in listed["payments"]:
        row = payments[shown["id"]]
        status, machine_id, credits, amount, refunded, *_ = PAYMENTS[shown["id"]]
        assert (shown["status"], shown["machine_id"], shown["credits"]) == (
            status,
            machine_id,
            credits,
        )
        assert (shown["amount"], shown["amount_refunded"]) == (amount, refunded)
        assert shown["created_at"] == row["created_at"]
        assert shown["delivered_at"] == row.get("delivered_at")
    one = client.get("/payments/cs_upgrade_disputed", headers=ADMIN).json
    assert one["status"] == "disputed"
    assert one["created_at"] == payments["cs_upgrade_disputed"]["created_at"]

    # The old token's hash still lets the cabinet in.
    cab001 = client.get("/machines/cab001", headers=cabinet("cab001")).json
    assert cab001["credits"] == {"granted": 25, "used": 1, "left": 24}
    assert cab001["state"] == "playing"
    state = old.row("machine_states", machine_id="cab001")
    assert cab001["session"] == {
        "id": state["session_id"],
        "started_at": state["session_started_at"],
    }
    assert cab001["revenue"] == {"usd": 700}
    assert [(p["id"], p["status"], p["created_at"]) for p in cab001["payments"]] == [
        (r["payment_id"], r["status"], r["created_at"])
        for r in sorted(
            payments.values(), key=lambda r: (r["created_at"], r["payment_id"]), reverse=True
        )
        if r.get("machine_id") == "cab001"
    ]
    cab002 = client.get("/machines/cab002", headers=cabinet("cab002")).json
    assert cab002["credits"] == {"granted": 3, "used": 0, "left": 3}
    assert (cab002["state"], cab002["session"], cab002["credits_per_game"]) == ("idle", None, 2)
    assert cab002["last_seen"] == old.row("machines", machine_id="cab002")["last_seen"]
    assert cab002["presence"] == "offline"  # its one heartbeat is long past
    assert cab002["revenue"] == {"usd": 200}

    unmatched = client.get("/refunds/unmatched", headers=ADMIN)
    assert unmatched.status_code == 200
    assert "pi_upgrade_early" in unmatched.get_data(as_text=True)

    window = f"since={DAY}&until={NEXT_DAY}"
    by_machine = client.get(f"/reports/revenue?group=machine&{window}", headers=ADMIN).json
    assert [
        (r["machine_id"], r["currency"], r["gross"], r["refunded"], r["net"], r["payments"])
        for r in by_machine["rows"]
    ] == [("cab001", "usd", 750, 50, 700, 3), ("cab002", "usd", 200, 0, 200, 2)]
    by_day = client.get(f"/reports/revenue?group=day&{window}", headers=ADMIN).json
    assert [(r["day"], r["gross"], r["refunded"], r["net"]) for r in by_day["rows"]] == [
        (DAY, 950, 50, 900)
    ]


# --- and the service goes on from there -------------------------------------------------------
def verify_signature(message: dict[str, Any], public_key: str) -> None:
    """Check a message's Ed25519 ``sig`` as a cabinet does (SPEC "Delivery")."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    unsigned = {k: v for k, v in message.items() if k != "sig"}
    body = json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    Ed25519PublicKey.from_public_bytes(b64(public_key)).verify(b64(message["sig"]), body)


def b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_payments_relay_game_overs_and_kept_refunds_carry_on_from_the_old_store(
    upgraded, subscribe, monkeypatch
):
    """GIVEN the old store WHEN a player pays on an old link, the relay runs, the cabinet
    repeats its old game over and the session of the kept refund arrives THEN the new grant
    is delivered signed with the kept key (once), the owed grant is delivered, the game over
    counts once, and the refunded session grants nothing."""
    app, old = upgraded
    client = app.test_client()
    store = store_of(app)
    pulses = subscribe(f"{TOPIC_PREFIX}/+/coinpulse")
    pulses.wait_subscribed()

    seed = old.row("kept_values", name="pulse_signing_key")["value"]
    derived = Ed25519PrivateKey.from_private_bytes(b64(seed)).public_key()
    raw = derived.public_bytes(Encoding.Raw, PublicFormat.Raw)
    public_key = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert public_key == OLD_PULSE_KEYS[old.backend]
    assert client.get("/pulse-key").json["public_key"] == public_key

    # A new payment on cab001's old link (the default price, "1 game" in the default plan).
    link = store.get_link(link_key("cab001", "price_default_credit", 0))
    paid = event(
        "checkout.session.completed",
        checkout_session(
            id="cs_after_upgrade",
            payment_link=link.link_id,
            amount_subtotal=100,
            payment_intent="pi_after_upgrade",
        ),
    )
    answer = signed_post(client, paid)
    assert answer.status_code == 200 and answer.json["result"] == "delivered", answer.json
    (pulse,) = pulses.wait_for(1)
    assert {k: pulse.payload[k] for k in ("machineId", "credits", "paymentId", "amount")} == {
        "machineId": "cab001",
        "credits": 2,
        "paymentId": "cs_after_upgrade",
        "amount": 100,
    }
    verify_signature(pulse.payload, public_key)
    payment = store.get_payment("cs_after_upgrade")
    assert (payment.status, payment.bundle, payment.plan_version) == ("delivered", "1 game", 1)
    again = signed_post(client, paid)
    assert again.status_code == 200 and again.json["result"] == "already_delivered"

    # The grant the old release left owed is delivered by the relay, under its own id.
    report = app.extensions["arcade"].ledger.relay()
    assert report.delivered == 1
    owed = [m for m in pulses.wait_for(2) if m.payload["paymentId"] == "cs_upgrade_pending"]
    assert [(m.payload["machineId"], m.payload["credits"]) for m in owed] == [("cab002", 2)]
    verify_signature(owed[0].payload, public_key)
    assert store.get_payment("cs_upgrade_pending").status == "delivered"
    assert store.list_due(datetime.now(UTC)) == []

    # The cabinet repeats its old game over within the key's 24 hours: it counted already.
    key = store.get_game_over_key("cab001", GAME_OVER_KEY)
    monkeypatch.setattr("arcade.ledger.utc_now", lambda: key.created_at + timedelta(hours=1))
    repeated = client.post(
        "/gameover",
        json={"machine_id": "cab001"},
        headers={**cabinet("cab001"), "Idempotency-Key": GAME_OVER_KEY},
    )
    monkeypatch.undo()
    assert repeated.status_code == 200, repeated.json
    state = client.get("/machines/cab001", headers=ADMIN).json
    assert state["credits"] == {"granted": 27, "used": 1, "left": 26}

    # The session of the refund kept on its PaymentIntent grants nothing and stays refunded.
    late = checkout_session(
        id="cs_upgrade_early",
        payment_link=link.link_id,
        amount_subtotal=50,
        payment_intent="pi_upgrade_early",
    )
    assert signed_post(client, event("checkout.session.completed", late)).status_code == 200
    assert store.get_payment("cs_upgrade_early").status == "refunded"
    assert store.list_unmatched_intents() == []
    state = client.get("/machines/cab001", headers=ADMIN).json
    assert state["credits"]["granted"] == 27
    assert state["revenue"] == {"usd": 800}  # 700 + the new 100; the refunded session adds 0
    assert len(pulses.settle()) == 2


def test_old_links_machines_and_payments_take_todays_writes(upgraded):
    """GIVEN the old store WHEN a cabinet asks for its link again, acknowledges an old grant and
    sends a heartbeat, and Stripe refunds an old payment THEN the stored link is answered (no
    new Stripe object), the grant is credited, the machine is online, the refund is booked."""
    app, old = upgraded
    client = app.test_client()
    store = store_of(app)

    stored = old.row("payment_links", link_key="cab001|price_default_credit|0")
    again = client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet("cab001")
    )
    assert again.status_code == 200, again.json
    assert (again.json["payment_link_id"], again.json["url"]) == (stored["link_id"], stored["url"])

    ack = client.post(
        "/machines/cab001/credits/ack",
        json={"payment_id": "cs_upgrade_delivered"},
        headers=cabinet("cab001"),
    )
    assert ack.status_code == 200, ack.json
    assert store.get_payment("cs_upgrade_delivered").status == "credited"

    beat = {"mqtt_connected": True, "credits_left": 3}
    assert (
        client.post("/machines/cab002/heartbeat", json=beat, headers=cabinet("cab002")).status_code
        == 200
    )
    assert client.get("/machines/cab002", headers=ADMIN).json["presence"] == "online"
    assert store.get_machine("cab002").created_at == instant(
        old.row("machines", machine_id="cab002")["created_at"]
    )

    refund = charge(payment_intent="pi_upgrade_bundle", amount=600, amount_refunded=600)
    assert signed_post(client, event("charge.refunded", refund)).status_code == 200
    assert store.get_payment("cs_upgrade_bundle").status == "refunded"
    state = client.get("/machines/cab001", headers=ADMIN).json
    assert state["revenue"] == {"usd": 100}  # 700 - 600
    assert state["credits"]["granted"] == 25  # a refund after delivery leaves the credits

    pages, cursor = [], ""
    while True:
        page = client.get(f"/payments?limit=2{cursor}", headers=ADMIN).json
        pages += [p["id"] for p in page["payments"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert pages == [
        p["id"] for p in client.get("/payments?limit=50", headers=ADMIN).json["payments"]
    ]
    assert len(pages) == len(PAYMENTS)
