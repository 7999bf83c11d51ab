"""Write the store dumps of tests/data/store_before_refactor/ with the release before the
store refactor (commit 8c5c6b5).

Run it with that release's code and virtual environment, from any directory:

    cd /path/to/checkout-of-8c5c6b5 && .venv/bin/python /path/to/make_dumps.py . OUT_DIR

It drives that release's app (its own ``create_app``, signed webhooks through the Flask test
client, a real TLS Mosquitto from its ``tests/support/broker.py``, its Stripe stand-in, and
moto's ThreadedMotoServer for DynamoDB) once on a SQLite file and once on a DynamoDB table,
then writes what the store holds: ``sqlite.sql`` (``iterdump``), ``dynamodb_items.json``
(every item of a Scan, in DynamoDB JSON, ordered by key) and ``dynamodb_table.json`` (the
table's key schema, attribute definitions, indexes and Time to Live). Not run by the suite.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TABLE = "arcade-before-refactor"
# Fixed tokens, so that the test can call the API as each cabinet with the token whose hash
# the old release stored (the release makes random ones; only their hash is stored).
TOKENS = {
    "cab001": "mt_upgrade-fixture-cab001-0123456789abcdefghijk",
    "cab002": "mt_upgrade-fixture-cab002-0123456789abcdefghijk",
}
DEFAULT_PLAN = {
    "bundles": [
        {"name": "1 game", "credits": 1, "price_id": "price_default_credit"},
        {"name": "5 games", "credits": 6, "amount": 200, "currency": "usd"},
    ],
    "bonuses": [{"min_units": 3, "credits": 1}],
}
MACHINE_PLAN = {
    "bundles": [{"name": "2 games", "credits": 2, "amount": 100, "currency": "usd"}],
    "happy_hours": [{"days": ["sat", "sun"], "start": "17:00", "end": "19:00", "factor": 2}],
}


def main(release: Path, out: Path) -> None:
    sys.path.insert(0, str(release.resolve()))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="store-before-refactor-"))
    summary: dict[str, Any] = {}

    database = work / "arcade.db"
    summary["sqlite"] = drive(work / "sqlite", database=database)
    dump_sqlite(database, out / "sqlite.sql")

    from moto.server import ThreadedMotoServer

    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    os.environ.update(aws)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
        summary["dynamodb"] = drive(work / "dynamodb", table=TABLE)
        dump_dynamodb(out)
    finally:
        server.stop()
    print(json.dumps(summary, indent=2, sort_keys=True))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def next_second() -> None:
    """Stripe's ``created`` is whole seconds: a session begun after a plan version is saved
    must carry a later second to be credited by it."""
    time.sleep(1.01 - time.time() % 1)


def drive(
    workdir: Path, *, database: Path | None = None, table: str | None = None
) -> dict[str, Any]:
    """Drive the old app through every kind of record its store keeps."""
    import arcade.machines
    from arcade import create_app
    from arcade.config import Settings
    from arcade.store.base import link_key
    from tests.support.app import ADMIN_KEY, DEFAULT_PRICE, app_environment, signed_post
    from tests.support.broker import TlsBroker
    from tests.support.stripe_standin import (
        StripeStandIn,
        charge,
        checkout_session,
        dispute,
        event,
    )

    tokens = iter(TOKENS.values())
    arcade.machines.new_token = lambda: next(tokens)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    cab = {m: {"Authorization": f"Bearer {t}"} for m, t in TOKENS.items()}
    seen: dict[str, Any] = {}

    workdir.mkdir(parents=True)
    with TlsBroker(workdir / "broker") as broker, StripeStandIn() as standin:
        standin.add_price(DEFAULT_PRICE, 50)
        standin.add_price("price_back_room", 100)
        overrides = {} if table is None else {"DATABASE_URL": f"dynamodb://{table}"}
        env = app_environment(broker, standin, database or workdir / "unused.db", **overrides)
        app = create_app(Settings.from_env(env))
        app.config["TESTING"] = True
        svc = app.extensions["arcade"]
        if table is not None:
            svc.store.create_table()
        client = app.test_client()
        pulses = broker.subscriber("arcade/machine/#")
        pulses.wait_subscribed()

        def ok(answer: Any, status: int = 200) -> Any:
            assert answer.status_code == status, (answer.status_code, answer.get_data(True))
            return answer.json

        def pay(link_id: str | None, session_id: str, subtotal: int, **fields: Any) -> Any:
            session = checkout_session(
                id=session_id,
                payment_link=link_id,
                amount_subtotal=subtotal,
                payment_intent=f"pi_{session_id.removeprefix('cs_')}",
                **fields,
            )
            return signed_post(client, event("checkout.session.completed", session))

        # Two machines: one plain, one with its own price, credits per unit and settings.
        svc.registry.register("cab001", name="Front door")
        svc.registry.register("cab002", name="Back room", price_id="price_back_room")
        settings = {"credits_per_game": 2, "timezone": "Europe/Paris"}
        ok(client.patch("/machines/cab002", json=settings, headers=admin))

        # Payment links at a single price: the player chooses 1..10 units, or 2 units fixed.
        link = "/create-payment-link"
        one = ok(client.post(link, json={"machine_id": "cab001"}, headers=cab["cab001"]))
        two = {"machine_id": "cab001", "quantity": 2}
        ok(client.post(link, json=two, headers=cab["cab001"]))
        back = ok(client.post(link, json={"machine_id": "cab002"}, headers=cab["cab002"]))
        seen["pulse_key"] = ok(client.get("/pulse-key"))["public_key"]

        # Single-price payments: delivered, refunded after delivery, disputed, unattributed.
        seen["delivered"] = ok(pay(one["payment_link_id"], "cs_upgrade_delivered", 100))
        seen["refunded"] = ok(pay(one["payment_link_id"], "cs_upgrade_refunded", 50))
        refund = charge(payment_intent="pi_upgrade_refunded", amount=50, amount_refunded=50)
        ok(signed_post(client, event("charge.refunded", refund)))
        seen["disputed"] = ok(pay(back["payment_link_id"], "cs_upgrade_disputed", 100))
        claim = dispute(
            charge="ch_upgrade_disputed", payment_intent="pi_upgrade_disputed", amount=100
        )
        ok(signed_post(client, event("charge.dispute.created", claim)))
        seen["unattributed"] = ok(
            pay(None, "cs_upgrade_unattributed", 50, client_reference_id="cab999")
        )
        # A refund whose Checkout Session never came: kept on its PaymentIntent.
        early = charge(payment_intent="pi_upgrade_early", amount=50, amount_refunded=50)
        ok(signed_post(client, event("charge.refunded", early)))

        # Presence: cab002's cabinet says it is connected with 2 credits left.
        beat = {"mqtt_connected": True, "credits_left": 2}
        ok(client.post("/machines/cab002/heartbeat", json=beat, headers=cab["cab002"]))

        # Pricing plans: the default plan (two bundles and a bonus) and cab002's own plan.
        seen["default_plan"] = ok(
            client.put("/plans/default", json=DEFAULT_PLAN, headers=admin), 201
        )
        seen["machine_plan"] = ok(
            client.put("/machines/cab002/plan", json=MACHINE_PLAN, headers=admin), 201
        )
        next_second()
        store = svc.store
        five = store.get_link(
            link_key("cab001", seen["default_plan"]["plan"]["bundles"][1]["price_id"], 0)
        )
        two_games = store.get_link(
            link_key("cab002", seen["machine_plan"]["plan"]["bundles"][0]["price_id"], 0)
        )
        seen["bundle"] = ok(pay(five.link_id, "cs_upgrade_bundle", 600))  # 3 x "5 games"

        # A manual grant, and a game over counted once under its Idempotency-Key.
        grant = {"credits": 3, "reason": "coin mech jammed"}
        keyed = {**admin, "Idempotency-Key": "jam-upgrade-1"}
        seen["manual"] = ok(client.post("/machines/cab001/credits", json=grant, headers=keyed), 201)
        game_over = {**cab["cab001"], "Idempotency-Key": "cab001-upgrade-game-1"}
        ok(client.post("/gameover", json={"machine_id": "cab001"}, headers=game_over))
        ok(client.post("/gameover", json={"machine_id": "cab001"}, headers=game_over))

        seen["pulses"] = [m.payload for m in pulses.wait_for(6)]
        pulses.close()
        # A grant left owed: the broker is down when its webhook comes (503, kept pending).
        broker.stop()
        answer = pay(two_games.link_id, "cs_upgrade_pending", 100)
        seen["pending"] = (answer.status_code, answer.json)

        seen["cab001"] = ok(client.get("/machines/cab001", headers=admin))
        seen["cab002"] = ok(client.get("/machines/cab002", headers=admin))
        seen["payments"] = ok(client.get("/payments", headers=admin))
        seen["revenue"] = ok(client.get("/reports/revenue?group=machine", headers=admin))
        svc.publisher.close()
        store.close()
    return seen


def dump_sqlite(database: Path, path: Path) -> None:
    with sqlite3.connect(database) as conn:
        path.write_text("".join(f"{line}\n" for line in conn.iterdump()))


def dump_dynamodb(out: Path) -> None:
    import boto3

    client = boto3.client("dynamodb")
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"TableName": TABLE}
    while True:
        page = client.scan(**params)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    items.sort(key=lambda item: (item["pk"]["S"], item["sk"]["S"]))
    (out / "dynamodb_items.json").write_text(json.dumps(items, indent=1, sort_keys=True) + "\n")
    table = client.describe_table(TableName=TABLE)["Table"]
    ttl = client.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    layout = {
        "TableName": TABLE,
        "KeySchema": table["KeySchema"],
        "AttributeDefinitions": sorted(
            table["AttributeDefinitions"], key=lambda a: a["AttributeName"]
        ),
        "GlobalSecondaryIndexes": sorted(
            (
                {k: index[k] for k in ("IndexName", "KeySchema", "Projection")}
                for index in table.get("GlobalSecondaryIndexes", [])
            ),
            key=lambda index: index["IndexName"],
        ),
        "TimeToLive": {k: ttl.get(k) for k in ("AttributeName", "TimeToLiveStatus")},
    }
    (out / "dynamodb_table.json").write_text(json.dumps(layout, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
