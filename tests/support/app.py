"""What an app under test is wired with, and the small helpers that talk to it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.support.broker import TlsBroker
from tests.support.stripe_standin import StripeStandIn, checkout_session, event, sign_payload

WEBHOOK_SECRET = "whsec_test_arcade_secret"
ADMIN_KEY = "admin-key-for-tests-0123456789abcdef"  # 32+ characters, as SPEC asks
DEFAULT_PRICE = "price_default_credit"
TOPIC_PREFIX = "arcade/machine"
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def app_environment(
    broker: TlsBroker, standin: StripeStandIn, database: Path, **overrides: str
) -> dict[str, str]:
    """Return the settings of an app wired to these test services."""
    env = {
        **broker.env(),
        "STRIPE_API_KEY": standin.api_key,
        "STRIPE_API_BASE": standin.url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_PRICE_ID": DEFAULT_PRICE,
        "DATABASE_URL": f"sqlite:///{database}",
        "ADMIN_API_KEY": ADMIN_KEY,
        "MQTT_PUBACK_TIMEOUT": "1",
    }
    env.update(overrides)
    return env


def signed_post(
    client: FlaskClient,
    payload: dict[str, Any] | bytes,
    *,
    secret: str = WEBHOOK_SECRET,
    path: str = "/webhook",
    timestamp: int | None = None,
):
    """POST a webhook body signed the way Stripe signs it."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    header = sign_payload(body, secret, timestamp)
    return client.post(
        path, data=body, headers={"Stripe-Signature": header, "Content-Type": "application/json"}
    )


@dataclass(frozen=True)
class Cabinet:
    """A registered machine and the bearer token it calls the API with."""

    machine_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Shop:
    """A registered machine with its payment link, in one app: ready to be paid."""

    app: Flask
    client: FlaskClient
    machine_id: str
    auth: dict[str, str]
    link_id: str

    def paid_event(self, session_id: str, *, amount_subtotal: int = 50) -> dict[str, Any]:
        """Return the completed, paid Checkout Session event Stripe sends for this link."""
        return event(
            "checkout.session.completed",
            checkout_session(
                id=session_id,
                payment_link=self.link_id,
                amount_subtotal=amount_subtotal,
                payment_intent=f"pi_{session_id}",
            ),
        )

    def pay(self, session_id: str, *, amount_subtotal: int = 50):
        """Deliver that event to the webhook, signed."""
        return signed_post(
            self.client, self.paid_event(session_id, amount_subtotal=amount_subtotal)
        )

    def state(self) -> dict[str, Any]:
        return self.client.get(f"/machines/{self.machine_id}", headers=self.auth).json
