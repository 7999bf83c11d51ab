"""Fixtures: a real TLS broker, a loopback Stripe, and apps built on a fresh store per test."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from arcade import create_app
from arcade.config import Settings
from arcade.services import Services
from tests.support.broker import Subscriber, TlsBroker
from tests.support.browser import Browser, start_browser
from tests.support.stripe_standin import StripeStandIn, event, sign_payload

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


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """Share one TLS Mosquitto across the tests that leave it running."""
    with TlsBroker(tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    """Give a test its own TLS Mosquitto to stop, restart or freeze."""
    with TlsBroker(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def stripe_standin() -> Iterator[StripeStandIn]:
    """Serve a loopback imitation of Stripe's API, with a 50-cent default price."""
    with StripeStandIn() as standin:
        standin.add_price(DEFAULT_PRICE, 50)
        yield standin


@pytest.fixture
def fast_stripe_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorten the stripe library's waits between retries (0.5 s and more by default)."""
    import stripe._http_client as http_client

    monkeypatch.setattr(http_client.HTTPClient, "INITIAL_DELAY", 0.001)
    monkeypatch.setattr(http_client.HTTPClient, "MAX_DELAY", 0.002)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Drive a headless Chromium (Debian's, 1280x900); screenshots go under the test's
    tmp_path. Fails, never skips, when Chromium or its driver is missing."""
    running = start_browser(tmp_path / "screenshots")
    yield running
    running.close()


@pytest.fixture
def subscribe(broker: TlsBroker) -> Iterator[Callable[..., Subscriber]]:
    """Connect real subscribers to the shared broker, closed after the test."""
    opened: list[Subscriber] = []

    def open_subscriber(topic: str = f"{TOPIC_PREFIX}/#", *, on: TlsBroker | None = None):
        subscriber = (on or broker).subscriber(topic)
        opened.append(subscriber)
        return subscriber

    yield open_subscriber
    for subscriber in opened:
        subscriber.close()


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


@pytest.fixture
def make_app(
    broker: TlsBroker, stripe_standin: StripeStandIn, tmp_path: Path
) -> Iterator[Callable[..., Flask]]:
    """Build apps on one SQLite file per test; ``on=`` picks another broker."""
    built: list[Flask] = []

    def build(*, on: TlsBroker | None = None, **overrides: str) -> Flask:
        env = app_environment(on or broker, stripe_standin, tmp_path / "arcade.db", **overrides)
        app = create_app(Settings.from_env(env))
        app.config["TESTING"] = True
        built.append(app)
        return app

    yield build
    for app in built:
        services: Services = app.extensions["arcade"]
        services.publisher.close()
        services.store.close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture(params=["sqlite", "dynamodb"])
def build(
    request: pytest.FixtureRequest,
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Flask]:
    """Return a builder of apps that all share one fresh store, SQLite or DynamoDB (moto)."""
    if request.param == "sqlite":
        return make_app
    monkeypatch.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("moto_endpoint"))
    table = request.getfixturevalue("dynamodb_table")
    made: list[Flask] = []

    def build_on_dynamodb(**overrides: str) -> Flask:
        built = make_app(DATABASE_URL=f"dynamodb://{table}", **overrides)
        if not made:
            built.extensions["arcade"].store.create_table()
        made.append(built)
        return built

    return build_on_dynamodb


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()


@dataclass(frozen=True)
class Cabinet:
    machine_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def register(app: Flask) -> Callable[..., Cabinet]:
    """Register machines in the test app's store."""

    def add(machine_id: str = "cab001", **options: Any) -> Cabinet:
        _, token = app.extensions["arcade"].registry.register(machine_id, **options)
        return Cabinet(machine_id, token)

    return add


@pytest.fixture
def cabinet(register: Callable[..., Cabinet]) -> Cabinet:
    return register("cab001")


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


@pytest.fixture
def deliver(client: FlaskClient) -> Callable[..., Any]:
    """Deliver a Stripe event (type, object) to the app's webhook, signed."""

    def send(
        event_type: str,
        data_object: dict[str, Any],
        *,
        event_id: str | None = None,
        via: FlaskClient | None = None,
    ):
        return signed_post(via or client, event(event_type, data_object, id=event_id))

    return send


# --- DynamoDB through moto's server ------------------------------------------------------
@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Serve moto's DynamoDB on a free loopback port for the session, one request at a time.

    DynamoDB makes each write and each transaction atomic. moto, serving threads, does not: a
    cancelled transaction restores a copy of the whole table taken before it began, undoing
    writes that committed meanwhile. Serving one request at a time gives back DynamoDB's
    guarantee while the store's calls still interleave as they would in production. (This is
    moto's ThreadedMotoServer with a lock around its application.)
    """
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    moto_app = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()

    def serial_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        with one_at_a_time:
            return moto_app(environ, start_response)

    with pytest.MonkeyPatch.context() as env:
        for name, value in AWS_TEST_ENV.items():
            env.setenv(name, value)
        env.delenv("AWS_PROFILE", raising=False)
        env.delenv("AWS_ENDPOINT_URL", raising=False)
        server = make_server(
            "127.0.0.1", 0, serial_app, threaded=True, request_handler=MotoRequestHandler
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_port}"
        server.shutdown()
        thread.join()


@pytest.fixture(scope="session")
def dynamodb_client(moto_endpoint: str) -> Any:
    """Return one boto3 DynamoDB client for the session (boto3 clients are thread-safe)."""
    import boto3

    return boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def dynamodb_table(dynamodb_client: Any) -> Iterator[str]:
    """Name a fresh table for one test and delete it afterwards."""
    name = f"arcade-test-{uuid.uuid4().hex[:12]}"
    yield name
    dynamodb_client.delete_table(TableName=name)


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
        from tests.support.stripe_standin import checkout_session

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


@pytest.fixture
def open_shop() -> Callable[..., Shop]:
    """Register a machine in an app and make its payment link."""

    def open_(app: Flask, machine_id: str = "cab001") -> Shop:
        _, token = app.extensions["arcade"].registry.register(machine_id)
        auth = {"Authorization": f"Bearer {token}"}
        client = app.test_client()
        answer = client.post("/create-payment-link", json={"machine_id": machine_id}, headers=auth)
        return Shop(app, client, machine_id, auth, answer.json["payment_link_id"])

    return open_
