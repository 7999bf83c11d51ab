"""The least work SPEC's webhook allows, served like the product: a yardstick for the budgets.

    python bench/floor_webhook.py PORT DATABASE_FILE

Settings come from the environment as the product's do: ``STRIPE_WEBHOOK_SECRET``,
``EMQX_BROKER_URL`` (``mqtts://host:port``), ``MQTT_USERNAME``, ``MQTT_PASSWORD`` and
``MQTT_CA_CERT``. ``POST /webhook`` does only what SPEC "POST /webhook" and "Delivery lasts until
the cabinet confirms" cannot do without, with the same libraries as the product:

1. check ``Stripe-Signature`` over the raw body (``stripe.WebhookSignature``, 300 s tolerance)
   and parse the event;
2. store the grant in one SQLite transaction (WAL, ``synchronous=NORMAL``), keyed by the
   Checkout Session id so a session grants once;
3. sign the coinpulse with Ed25519 (``cryptography``), publish it at QoS 1 over MQTT 5 and TLS
   (paho) and wait for the PUBACK;
4. mark the grant delivered, then answer 200.

It reads nothing (every session buys 2 credits for machine ``cab001``), logs nothing, keeps no
revenue, PaymentIntent, lease or play session, and checks no plan, link or mode. It is not a
product and not a floor of SPEC "Budgets": ``bench/bench.py`` measures it beside the budgets, in
the same run and the same way as the product, to show what the budgets leave for everything a
real grant does beyond this.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt  # noqa: E402
import stripe  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from flask import Flask, request  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from arcade.serve import SWITCH_INTERVAL_SECONDS, make_server, run_until_signalled  # noqa: E402

MACHINE = "cab001"
CREDITS = 2
PUBACK_SECONDS = 5.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    payment_id TEXT PRIMARY KEY,
    machine_id TEXT NOT NULL,
    credits INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    delivered_at TEXT
)
"""


class Grants:
    """The grants, one row per Checkout Session, behind one connection and one lock."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(SCHEMA)
        self._lock = threading.Lock()

    def grant(self, payment_id: str, amount: int, currency: str, at: str) -> bool:
        """Store a grant; return False when this session already has one."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                inserted = self._conn.execute(
                    "INSERT OR IGNORE INTO payments VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (payment_id, MACHINE, CREDITS, amount, currency, at),
                ).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return inserted == 1

    def delivered(self, payment_id: str, at: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE payments SET delivered_at = ? WHERE payment_id = ?", (at, payment_id)
            )


def connect_broker() -> mqtt.Client:
    """Return a paho client (MQTT 5, TLS) connected to the broker the environment names."""
    host, port = os.environ["EMQX_BROKER_URL"].split("://", 1)[1].rsplit(":", 1)
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"floor-webhook-{os.getpid()}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(os.environ["MQTT_USERNAME"], os.environ["MQTT_PASSWORD"])
    client.tls_set_context(ssl.create_default_context(cafile=os.environ["MQTT_CA_CERT"]))
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect(host, int(port))
    client.loop_start()
    if not connected.wait(5):
        raise SystemExit("bench/floor_webhook.py: the broker did not accept the connection")
    return client


def make_app(grants: Grants, client: mqtt.Client, secret: str) -> Flask:
    key = Ed25519PrivateKey.generate()
    app = Flask(__name__)

    @app.post("/webhook")
    def webhook() -> tuple[dict[str, Any], int]:
        payload = request.get_data()
        try:
            stripe.WebhookSignature.verify_header(
                payload, request.headers.get("Stripe-Signature", ""), secret, tolerance=300
            )
            session = json.loads(payload)["data"]["object"]
        except (stripe.SignatureVerificationError, ValueError, KeyError, TypeError):
            return {"error": "not a signed event"}, 400
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if not grants.grant(session["id"], session["amount_total"], session["currency"], at):
            return {"result": "already_granted"}, 200
        pulse = {
            "machineId": MACHINE,
            "credits": CREDITS,
            "timestamp": at,
            "paymentId": session["id"],
            "amount": session["amount_total"],
            "currency": session["currency"],
        }
        signed = json.dumps(pulse, sort_keys=True, separators=(",", ":")).encode()
        pulse["sig"] = base64.urlsafe_b64encode(key.sign(signed)).rstrip(b"=").decode()
        info = client.publish(
            f"arcade/machine/{MACHINE}/coinpulse", json.dumps(pulse, separators=(",", ":")), qos=1
        )
        info.wait_for_publish(PUBACK_SECONDS)
        if not info.is_published():
            return {"error": "no PUBACK"}, 503
        grants.delivered(session["id"], at)
        return {"result": "delivered", "payment_id": session["id"]}, 200

    @app.get("/status")
    def status() -> dict[str, str]:
        return {"status": "up"}

    return app


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    app = make_app(Grants(path), connect_broker(), os.environ["STRIPE_WEBHOOK_SECRET"])
    # As arcade.serve.serve does.
    logging.getLogger("waitress").setLevel(logging.WARNING)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    run_until_signalled(make_server(app, "127.0.0.1", port))


if __name__ == "__main__":
    main()
