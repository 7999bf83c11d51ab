"""Prove the test support works: the TLS broker, its subscriber and the Stripe stand-in."""

from __future__ import annotations

import gc
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import stripe
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import Subscriber, TlsBroker, client_ssl_context, make_certificates
from tests.stripe_standin import (
    StripeStandIn,
    charge,
    checkout_session,
    decode_form,
    event,
    sign_payload,
)


@pytest.fixture
def standin(stripe_standin: StripeStandIn) -> StripeStandIn:
    stripe_standin.add_price("price_credit", 100)
    return stripe_standin


Connect = Callable[..., mqtt.Client]


@pytest.fixture
def paho_client() -> Iterator[Connect]:
    """Connect separate paho clients over TLS, stopped and disconnected afterwards."""
    clients: list[mqtt.Client] = []

    def connect(
        broker: TlsBroker,
        *,
        context: ssl.SSLContext | None = None,
        host: str | None = None,
        password: str | None = None,
    ) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"test-pub-{time.time_ns()}"
        )
        client.username_pw_set(broker.username, broker.password if password is None else password)
        client.tls_set_context(context or broker.ssl_context())
        clients.append(client)
        client.connect(host or broker.host, broker.port, keepalive=30)
        client.loop_start()
        return client

    yield connect
    for client in clients:
        client.disconnect()
        client.loop_stop()


CREATE_PARAMS = {
    "line_items": [
        {
            "price": "price_credit",
            "quantity": 1,
            "adjustable_quantity": {"enabled": True, "minimum": 1, "maximum": 10},
        }
    ],
    "metadata": {"machine_id": "cab001"},
    "payment_intent_data": {"metadata": {"machine_id": "cab001"}},
}


# --- broker ---------------------------------------------------------------------------------


def test_subscriber_receives_what_another_tls_client_publishes(
    broker: TlsBroker, paho_client: Connect
) -> None:
    with broker.subscriber("arcade/machine/+/coinpulse") as subscriber:
        publisher = paho_client(broker)

        info = publisher.publish(
            "arcade/machine/cab001/coinpulse", json.dumps({"credits": 2}), qos=1
        )
        info.wait_for_publish(timeout=5)

        [message] = subscriber.wait_for(1)
        assert message.topic == "arcade/machine/cab001/coinpulse"
        assert message.payload == {"credits": 2}
        assert (message.qos, message.retain) == (1, False)
        assert info.is_published()
        assert subscriber.settle(0.1) == [message]


def test_wait_for_fails_with_what_arrived(broker: TlsBroker) -> None:
    with (
        broker.subscriber("nothing/here") as subscriber,
        pytest.raises(AssertionError, match="got 0"),
    ):
        subscriber.wait_for(1, timeout=0.1)


def test_wrong_password_is_refused(broker: TlsBroker) -> None:
    with pytest.raises(ConnectionError, match="refused"):
        broker.subscriber("arcade/#", password="not-the-password")


# paho 2.2 leaves its TLS socket unclosed when connect() fails the handshake.
@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")
def test_client_that_does_not_trust_the_ca_fails_the_handshake(
    broker: TlsBroker, tmp_path: Path, paho_client: Connect
) -> None:
    other_ca = make_certificates(tmp_path / "other").ca_path

    with pytest.raises(ssl.SSLCertVerificationError):
        paho_client(broker, context=client_ssl_context(other_ca))
    gc.collect()
    with (
        socket.create_connection(("127.0.0.1", broker.port), timeout=2) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")


def test_certificate_names_localhost_and_loopback_ip(
    broker: TlsBroker, paho_client: Connect
) -> None:
    for host in ("localhost", "127.0.0.1"):
        with (
            socket.create_connection(("127.0.0.1", broker.port), timeout=2) as raw,
            broker.ssl_context().wrap_socket(raw, server_hostname=host) as tls,
        ):
            assert tls.version() in {"TLSv1.2", "TLSv1.3"}


def test_env_describes_the_broker(broker: TlsBroker) -> None:
    env = broker.env()

    assert env == {
        "EMQX_BROKER_URL": f"mqtts://localhost:{broker.port}",
        "MQTT_USERNAME": "arcade",
        "MQTT_PASSWORD": broker.password,
        "MQTT_CA_CERT": str(broker.ca_path),
        "MQTT_TLS": "true",
    }
    assert Path(env["MQTT_CA_CERT"]).read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_restart_keeps_the_port_and_subscribers_come_back(
    fresh_broker: TlsBroker, paho_client: Connect
) -> None:
    port = fresh_broker.port
    with fresh_broker.subscriber("arcade/#") as subscriber:
        fresh_broker.restart()

        subscriber.wait_subscribed(connections=2)
        publisher = paho_client(fresh_broker)
        publisher.publish("arcade/after", json.dumps({"n": 1}), qos=1).wait_for_publish(5)

        assert fresh_broker.port == port
        assert [m.payload for m in subscriber.wait_for(1)] == [{"n": 1}]


def test_frozen_broker_sends_no_puback_until_thawed(
    fresh_broker: TlsBroker, paho_client: Connect
) -> None:
    publisher = paho_client(fresh_broker)
    publisher.publish("warmup", b"{}", qos=1).wait_for_publish(5)
    fresh_broker.freeze()

    info = publisher.publish("arcade/frozen", b"{}", qos=1)
    time.sleep(0.2)
    assert not info.is_published()

    fresh_broker.thaw()
    info.wait_for_publish(timeout=5)
    assert info.is_published()


def test_close_kills_a_frozen_broker(tmp_path: Path) -> None:
    broker = TlsBroker(tmp_path / "broker")
    broker.freeze()

    broker.close()

    assert not broker.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", broker.port), timeout=1).close()


def test_subscriber_is_a_subscriber(broker: TlsBroker) -> None:
    with broker.subscriber(["a/#", "b/#"]) as subscriber:
        assert isinstance(subscriber, Subscriber)
        assert subscriber.topics == ["a/#", "b/#"]
        assert subscriber.connections == 1


# --- Stripe stand-in ------------------------------------------------------------------------


def test_same_idempotency_key_gives_the_same_payment_link(standin: StripeStandIn) -> None:
    client = standin.client(max_network_retries=2)

    first = client.v1.payment_links.create(CREATE_PARAMS, options={"idempotency_key": "cab001-1"})
    second = client.v1.payment_links.create(CREATE_PARAMS, options={"idempotency_key": "cab001-1"})

    assert first.id == second.id
    assert first.id.startswith("plink_")
    assert first.url.startswith("https://buy.stripe.com/test_")
    assert first.metadata["machine_id"] == "cab001"
    assert first.payment_intent_data.metadata["machine_id"] == "cab001"
    assert second.last_response is not None
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(standin.payment_links) == 1
    sent = standin.requests_to("POST", "/v1/payment_links")[0]
    assert sent.idempotency_key == "cab001-1"
    assert sent.params["line_items"][0] == {
        "price": "price_credit",
        "quantity": "1",
        "adjustable_quantity": {"enabled": "true", "minimum": "1", "maximum": "10"},
    }
    assert sent.params["payment_intent_data"]["metadata"] == {"machine_id": "cab001"}


def test_idempotency_key_reused_with_other_params_is_refused(standin: StripeStandIn) -> None:
    client = standin.client()
    client.v1.payment_links.create(CREATE_PARAMS, options={"idempotency_key": "k"})

    with pytest.raises(stripe.IdempotencyError):
        client.v1.payment_links.create(
            {**CREATE_PARAMS, "metadata": {"machine_id": "cab002"}},
            options={"idempotency_key": "k"},
        )


def test_payment_link_errors_look_like_stripe(standin: StripeStandIn) -> None:
    client = standin.client()

    with pytest.raises(stripe.InvalidRequestError) as unknown_price:
        client.v1.payment_links.create({"line_items": [{"price": "price_nope", "quantity": 1}]})
    with pytest.raises(stripe.InvalidRequestError) as unknown_param:
        client.v1.payment_links.create({**CREATE_PARAMS, "client_reference_id": "cab001"})

    assert (unknown_price.value.code, unknown_price.value.param) == (
        "resource_missing",
        "line_items[0][price]",
    )
    assert unknown_param.value.code == "parameter_unknown"


def test_wrong_api_key_is_an_authentication_error(standin: StripeStandIn) -> None:
    client = stripe.StripeClient("sk_test_wrong", base_addresses={"api": standin.url})

    with pytest.raises(stripe.AuthenticationError):
        client.v1.prices.retrieve("price_credit")


def test_prices_and_line_items_are_served(standin: StripeStandIn) -> None:
    standin.add_price("price_big", 250)
    session = standin.add_checkout_session(
        "cs_test_1", [("price_credit", 3), ("price_big", 1)], discount=50
    )
    client = standin.client()

    price = client.v1.prices.retrieve("price_big")
    items = client.v1.checkout.sessions.line_items.list("cs_test_1", {"limit": 100})
    first_page = client.v1.checkout.sessions.line_items.list("cs_test_1", {"limit": 1})

    assert (price.unit_amount, price.currency) == (250, "usd")
    assert items.object == "list"
    assert [(i.price.id, i.quantity, i.amount_subtotal) for i in items.data] == [
        ("price_credit", 3, 300),
        ("price_big", 1, 250),
    ]
    assert items.data[0].amount_total == 250
    assert first_page.has_more is True
    assert session["amount_subtotal"] == 550
    assert session["amount_total"] == 500
    assert session["total_details"]["amount_discount"] == 50
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.retrieve("price_unknown")


def test_a_500_surfaces_as_api_error(standin: StripeStandIn) -> None:
    standin.fail_next(500)

    with pytest.raises(stripe.APIError):
        standin.client(max_network_retries=0).v1.prices.retrieve("price_credit")

    assert len(standin.requests) == 1


@pytest.mark.usefixtures("fast_stripe_retries")
def test_retries_are_recorded(standin: StripeStandIn) -> None:
    client = standin.client(max_network_retries=2)

    standin.fail_next(500, count=3)
    with pytest.raises(stripe.APIError):
        client.v1.prices.retrieve("price_credit")
    assert len(standin.requests) == 3

    standin.reset_requests()
    standin.fail_next(503, count=1)
    standin.drop_next(1)
    assert client.v1.prices.retrieve("price_credit").id == "price_credit"
    assert len(standin.requests) == 3

    standin.reset_requests()
    standin.fail_next(500, should_retry=False)
    with pytest.raises(stripe.APIError):
        client.v1.prices.retrieve("price_credit")
    assert len(standin.requests) == 1


def test_signature_verifies_like_stripe() -> None:
    session = checkout_session(amount_subtotal=200, payment_link="plink_1")
    payload = json.dumps(event("checkout.session.completed", session)).encode()

    header = sign_payload(payload, "whsec_test")

    assert stripe.WebhookSignature.verify_header(payload.decode(), header, "whsec_test", 300)
    assert stripe.Webhook.construct_event(payload, header, "whsec_test").type == (
        "checkout.session.completed"
    )
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(payload.decode(), header, "whsec_other", 300)
    stale = sign_payload(payload, "whsec_test", timestamp=int(time.time()) - 600)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(payload.decode(), stale, "whsec_test", 300)


def test_builders_are_shaped_like_stripe() -> None:
    session = checkout_session(amount_subtotal=300, metadata={"machine_id": "cab001"})
    refund = charge(payment_intent="pi_1", amount=300, amount_refunded=300)
    wrapped = event("charge.refunded", refund, id="evt_1")

    assert session["object"] == "checkout.session"
    assert session["id"].startswith("cs_test_")
    assert (session["mode"], session["status"], session["payment_status"]) == (
        "payment",
        "complete",
        "paid",
    )
    assert session["amount_total"] == 300
    assert refund["refunded"] is True
    assert wrapped["object"] == "event"
    assert wrapped["data"]["object"]["payment_intent"] == "pi_1"
    assert wrapped["api_version"] == stripe.api_version


def test_decode_form_matches_stripe_encoding() -> None:
    pairs = [
        ("line_items[0][price]", "p"),
        ("line_items[1][price]", "q"),
        ("metadata[machine_id]", "cab001"),
        ("expand[0]", "line_items"),
    ]

    assert decode_form(pairs) == {
        "line_items": [{"price": "p"}, {"price": "q"}],
        "metadata": {"machine_id": "cab001"},
        "expand": ["line_items"],
    }
