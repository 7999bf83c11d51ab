"""Fixtures: a real TLS broker, a loopback Stripe, and apps built on a fresh store per test."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from arcade import create_app
from arcade.config import Settings
from arcade.services import Services
from tests.support.app import (
    AWS_TEST_ENV,
    DEFAULT_PRICE,
    TOPIC_PREFIX,
    Cabinet,
    Shop,
    app_environment,
    signed_post,
)
from tests.support.broker import Subscriber, TlsBroker
from tests.support.browser import Browser, start_browser
from tests.support.stripe_standin import StripeStandIn, event


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
