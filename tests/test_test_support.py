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

from tests.support.broker import Subscriber, TlsBroker, client_ssl_context, make_certificates
from tests.support.stripe_standin import (
    StripeStandIn,
    charge,
    checkout_session,
    decode_form,
    dispute,
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


def test_a_first_start_on_a_taken_port_moves_to_a_free_one(
    tmp_path: Path, paho_client: Connect
) -> None:
    """GIVEN another program listening on the port a new broker picked WHEN the broker starts
    THEN it serves on another port, and its URL and settings name that one."""
    broker = TlsBroker(tmp_path / "broker", start=False)
    taken = broker.port
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()

        with broker:
            publisher = paho_client(broker)
            publisher.publish("arcade/moved", b"{}", qos=1).wait_for_publish(5)

            assert broker.port != taken
            assert broker.env()["EMQX_BROKER_URL"] == f"mqtts://localhost:{broker.port}"


def test_a_broker_holds_its_port_before_it_starts(tmp_path: Path) -> None:
    """GIVEN a broker made but not started WHEN another program binds its port, or asks for a
    free one, THEN that program is not given the port, and the broker then starts on it."""
    broker = TlsBroker(tmp_path / "broker", start=False)
    port = broker.port
    try:
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", port))
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            assert other.getsockname()[1] != port
        broker.start()

        assert broker.port == port
        assert broker.running
    finally:
        broker.close()


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


def test_a_refund_key_replays_its_refund_and_refuses_other_params(standin: StripeStandIn) -> None:
    """GIVEN a refund made with key k WHEN k comes again THEN the same refund; with another
    amount or PaymentIntent THEN Stripe's idempotency error, and no second refund."""
    from tests.support.stripe_standin import checkout_session

    standin.add_session(checkout_session(id="cs_1", payment_intent="pi_1", amount_subtotal=300))
    client = standin.client()
    first = client.v1.refunds.create(
        {"payment_intent": "pi_1", "amount": 100}, options={"idempotency_key": "k"}
    )
    again = client.v1.refunds.create(
        {"payment_intent": "pi_1", "amount": 100}, options={"idempotency_key": "k"}
    )

    with pytest.raises(stripe.IdempotencyError):
        client.v1.refunds.create(
            {"payment_intent": "pi_1", "amount": 50}, options={"idempotency_key": "k"}
        )
    assert again.id == first.id
    assert [r["amount"] for r in standin.refunds] == [100]


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


# --- Stripe stand-in: listing Checkout Sessions -------------------------------------------------

BASE_TIME = 1_760_000_000


def add_sessions(standin: StripeStandIn, count: int, **fields: object) -> list[str]:
    """Register count sessions a minute apart, oldest first, and return their ids."""
    return [
        standin.add_checkout_session(
            f"cs_test_{n}", [("price_credit", n + 1)], created=BASE_TIME + 60 * n, **fields
        )["id"]
        for n in range(count)
    ]


def test_auto_paging_walks_every_page_newest_first(standin: StripeStandIn) -> None:
    """GIVEN five sessions, two of them created in the same second
    WHEN the real library pages through them two at a time
    THEN it gets all five newest first (the later registration first on a tie) in three requests
    """
    ids = add_sessions(standin, 4)
    tied = standin.add_checkout_session("cs_test_tied", created=BASE_TIME + 60 * 3)["id"]

    listed = standin.client().v1.checkout.sessions.list({"limit": 2})
    walked = [session.id for session in listed.auto_paging_iter()]

    assert walked == [tied, ids[3], ids[2], ids[1], ids[0]]
    assert (listed.object, listed.url, listed.has_more) == ("list", "/v1/checkout/sessions", True)
    sent = standin.requests_to("GET", "/v1/checkout/sessions")
    assert [r.params for r in sent] == [
        {"limit": "2"},
        {"limit": "2", "starting_after": ids[3]},
        {"limit": "2", "starting_after": ids[1]},
    ]


def test_ending_before_pages_back_towards_the_newest(standin: StripeStandIn) -> None:
    """GIVEN five sessions
    WHEN the library lists two ending before the oldest and pages on from there
    THEN the first page is the two just newer than it and paging walks back to the newest
    """
    ids = add_sessions(standin, 5)

    listed = standin.client().v1.checkout.sessions.list({"limit": 2, "ending_before": ids[0]})

    assert [s.id for s in listed.data] == [ids[2], ids[1]]
    assert listed.has_more is True
    assert [s.id for s in listed.auto_paging_iter()] == [ids[1], ids[2], ids[3], ids[4]]


def test_created_and_status_filter_the_list(standin: StripeStandIn) -> None:
    """GIVEN complete, open and expired sessions created a minute apart
    WHEN the list asks for created[gte] or for a status, or both
    THEN only the sessions that pass every filter come back
    """
    done = add_sessions(standin, 3)
    still_open = standin.add_checkout_session(
        "cs_test_open", status="open", payment_status="unpaid", created=BASE_TIME + 600
    )["id"]
    expired = standin.add_checkout_session(
        "cs_test_expired", status="expired", payment_status="unpaid", created=BASE_TIME + 10
    )["id"]
    sessions = standin.client().v1.checkout.sessions

    def ids(params: dict[str, object]) -> list[str]:
        return [s.id for s in sessions.list(params).auto_paging_iter()]

    assert ids({"created": {"gte": BASE_TIME + 60}}) == [still_open, done[2], done[1]]
    assert ids({"created": {"gt": BASE_TIME, "lt": BASE_TIME + 120}}) == [done[1], expired]
    assert ids({"created": {"lte": BASE_TIME + 10}}) == [expired, done[0]]
    assert ids({"status": "complete"}) == [done[2], done[1], done[0]]
    assert ids({"status": "open"}) == [still_open]
    assert ids({"created": {"gte": BASE_TIME + 5}, "status": "expired"}) == [expired]
    assert ids({"created": {"gte": BASE_TIME + 601}}) == []


def test_payment_intent_and_payment_link_filter_the_list(standin: StripeStandIn) -> None:
    """GIVEN sessions with their own payment intents, two from one payment link
    WHEN the list asks for a payment_intent or a payment_link
    THEN only the matching sessions come back
    """
    standin.add_checkout_session("cs_test_a", payment_intent="pi_a", payment_link="plink_1")
    standin.add_checkout_session("cs_test_b", payment_intent="pi_b", payment_link="plink_1")
    standin.add_checkout_session("cs_test_c", payment_intent="pi_c", created=BASE_TIME)
    sessions = standin.client().v1.checkout.sessions

    assert [s.id for s in sessions.list({"payment_intent": "pi_b"})] == ["cs_test_b"]
    assert {s.id for s in sessions.list({"payment_link": "plink_1"})} == {"cs_test_a", "cs_test_b"}


def test_expand_puts_line_items_on_each_listed_session(standin: StripeStandIn) -> None:
    """GIVEN sessions with line items
    WHEN the list is asked to expand data.line_items
    THEN each session carries its items as the line_items route answers them
    """
    standin.add_price("price_big", 250)
    standin.add_checkout_session("cs_test_two", [("price_credit", 3), ("price_big", 1)])
    standin.add_checkout_session("cs_test_none", created=BASE_TIME)
    client = standin.client()

    listed = client.v1.checkout.sessions.list({"expand": ["data.line_items"]})
    plain = client.v1.checkout.sessions.list()

    two, none = listed.data
    assert two.line_items.to_dict() == (
        client.v1.checkout.sessions.line_items.list("cs_test_two").to_dict()
    )
    assert [(i.price.id, i.quantity) for i in two.line_items.data] == [
        ("price_credit", 3),
        ("price_big", 1),
    ]
    assert two.line_items.url == "/v1/checkout/sessions/cs_test_two/line_items"
    assert (none.line_items.object, none.line_items.data) == ("list", [])
    assert all("line_items" not in session for session in plain.data)


def test_list_errors_look_like_stripe(standin: StripeStandIn) -> None:
    """GIVEN a stand-in with one session
    WHEN the list is given an unknown cursor, an unknown parameter or bad values
    THEN each answer is Stripe's error for it, raised as stripe.InvalidRequestError
    """
    add_sessions(standin, 1)
    sessions = standin.client().v1.checkout.sessions
    bad: list[tuple[dict[str, object], int, str, str]] = [
        ({"starting_after": "cs_test_unknown"}, 404, "resource_missing", "starting_after"),
        ({"ending_before": "cs_test_unknown"}, 404, "resource_missing", "ending_before"),
        ({"colour": "red"}, 400, "parameter_unknown", "colour"),
        ({"created": {"since": 1}}, 400, "parameter_unknown", "created[since]"),
        ({"created": {"gte": "yesterday"}}, 400, "parameter_invalid_integer", "created[gte]"),
        ({"status": "paid"}, 400, "parameter_invalid", "status"),
        ({"limit": 101}, 400, "parameter_invalid", "limit"),
    ]

    for params, status, code, param in bad:
        with pytest.raises(stripe.InvalidRequestError) as raised:
            sessions.list(params)
        error = raised.value
        assert (error.http_status, error.code, error.param) == (status, code, param), params
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        sessions.list({"starting_after": "cs_test_unknown"})
    assert unknown.value.user_message == "No such checkout.session: 'cs_test_unknown'"


def test_fail_next_after_lets_the_first_page_through(standin: StripeStandIn) -> None:
    """GIVEN five sessions and one 500 queued for the session list after one success
    WHEN a client without retries fetches a price and pages through the list two at a time
    THEN the price and the first page arrive, the second page fails, and the next list succeeds
    """
    ids = add_sessions(standin, 5)
    client = standin.client(max_network_retries=0)
    standin.fail_next(500, path="GET /v1/checkout/sessions", after=1)

    assert client.v1.prices.retrieve("price_credit").id == "price_credit"
    walked: list[str] = []
    with pytest.raises(stripe.APIError):
        for session in client.v1.checkout.sessions.list({"limit": 2}).auto_paging_iter():
            walked.append(session.id)

    assert walked == [ids[4], ids[3]]
    failed = standin.requests_to("GET", "/v1/checkout/sessions")[-1]
    assert failed.params == {"limit": "2", "starting_after": ids[3]}
    assert len(client.v1.checkout.sessions.list({"limit": 2}).data) == 2


def test_path_scoped_failures_count_only_their_requests(standin: StripeStandIn) -> None:
    """GIVEN a dropped connection scoped to a path prefix and two 503s after two successes
    WHEN requests to other paths and then to those paths arrive
    THEN the other paths pass untouched and the scoped failures hit their requests in turn
    """
    add_sessions(standin, 1)
    client = standin.client(max_network_retries=0)
    standin.drop_next(path="/v1/checkout/sessions/cs_test_0/line_items")
    standin.fail_next(503, count=2, path="GET /v1/prices", after=2)

    assert client.v1.checkout.sessions.retrieve("cs_test_0").id == "cs_test_0"
    with pytest.raises(stripe.APIConnectionError):
        client.v1.checkout.sessions.line_items.list("cs_test_0")
    assert client.v1.checkout.sessions.line_items.list("cs_test_0").data
    outcomes = []
    for _ in range(5):
        try:
            outcomes.append(client.v1.prices.retrieve("price_credit").id)
        except stripe.APIError as error:
            outcomes.append(error.http_status)
    assert outcomes == ["price_credit", "price_credit", 503, 503, "price_credit"]


# --- Stripe stand-in: registering sessions and webhook builders ----------------------------------


def test_session_modes_carry_their_own_intent() -> None:
    """GIVEN the checkout_session builder
    WHEN it builds payment, subscription and setup sessions, and a live one
    THEN each carries the intent or subscription its mode makes, and livemode a cs_live_ id
    """
    payment = checkout_session(amount_subtotal=100)
    subscription = checkout_session(amount_subtotal=100, mode="subscription")
    setup = checkout_session(amount_subtotal=0, mode="setup")
    live = checkout_session(amount_subtotal=100, livemode=True)

    assert payment["payment_intent"].startswith("pi_")
    assert (payment["subscription"], payment["setup_intent"]) == (None, None)
    assert subscription["subscription"].startswith("sub_")
    assert (subscription["mode"], subscription["payment_intent"]) == ("subscription", None)
    assert setup["setup_intent"].startswith("seti_")
    assert (setup["mode"], setup["payment_intent"]) == ("setup", None)
    assert live["livemode"] is True
    assert live["id"].startswith("cs_live_")
    with pytest.raises(ValueError):
        checkout_session(amount_subtotal=100, mode="donation")


def test_add_session_stores_a_built_session_as_is(standin: StripeStandIn) -> None:
    """GIVEN a session the test built and changed itself
    WHEN it is registered with add_session and line items
    THEN retrieving, listing and its line items answer exactly what was registered
    """
    built = checkout_session(
        id="cs_test_built", amount_subtotal=300, mode="subscription", created=BASE_TIME
    )
    built["customer"] = "cus_1"
    client = standin.client()

    stored = standin.add_session(built, [("price_credit", 3)])

    assert stored == built
    assert client.v1.checkout.sessions.retrieve("cs_test_built").to_dict() == built
    assert [s.id for s in client.v1.checkout.sessions.list({"customer": "cus_1"})] == [
        "cs_test_built"
    ]
    assert [s.id for s in client.v1.checkout.sessions.list({"subscription": "sub_none"})] == []
    items = client.v1.checkout.sessions.line_items.list("cs_test_built")
    assert [(i.price.id, i.quantity) for i in items.data] == [("price_credit", 3)]
    with pytest.raises(ValueError):
        standin.add_session({"object": "checkout.session"})


def test_add_checkout_session_passes_its_fields_through(standin: StripeStandIn) -> None:
    """GIVEN add_checkout_session with an intent, time, status, total and mode
    WHEN the session is registered
    THEN the session carries them, and a live one is hidden from the test key as Stripe hides it
    """
    open_one = standin.add_checkout_session(
        "cs_test_open",
        [("price_credit", 2)],
        payment_intent="pi_given",
        created=BASE_TIME,
        status="open",
        amount_total=150,
    )
    subscription = standin.add_checkout_session("cs_test_sub", mode="subscription")
    standin.add_checkout_session("cs_live_1", livemode=True)
    client = standin.client()

    assert (open_one["payment_intent"], open_one["created"]) == ("pi_given", BASE_TIME)
    assert (open_one["status"], open_one["amount_subtotal"], open_one["amount_total"]) == (
        "open",
        200,
        150,
    )
    assert subscription["payment_intent"] is None
    assert subscription["subscription"].startswith("sub_")
    assert [s.id for s in client.v1.checkout.sessions.list()] == ["cs_test_sub", "cs_test_open"]
    with pytest.raises(stripe.InvalidRequestError, match="exists in live mode"):
        client.v1.checkout.sessions.retrieve("cs_live_1")


def test_connected_account_event_carries_account_and_livemode() -> None:
    """GIVEN a live charge
    WHEN it is wrapped in an event from a connected account, and in a plain one
    THEN the first carries account and livemode, and the plain one has no account key
    """
    live = charge(payment_intent="pi_1", amount=300, amount_refunded=300, livemode=True)

    connected = event("charge.refunded", live, account="acct_1", livemode=True)
    plain = event("charge.refunded", live)

    assert (connected["account"], connected["livemode"]) == ("acct_1", True)
    assert connected["data"]["object"]["livemode"] is True
    assert "account" not in plain
    assert plain["livemode"] is False
    payload = json.dumps(connected)
    parsed = stripe.Webhook.construct_event(payload, sign_payload(payload, "whsec_t"), "whsec_t")
    assert parsed.account == "acct_1"


def test_dispute_is_shaped_like_stripe() -> None:
    """GIVEN a disputed charge
    WHEN the dispute builder makes its dispute and an event wraps it
    THEN the dispute names the payment intent and charge as charge.dispute.created carries it
    """
    disputed = dispute(charge="ch_1", payment_intent="pi_1", amount=500)

    wrapped = event("charge.dispute.created", disputed)

    assert disputed["id"].startswith("dp_")
    assert disputed["object"] == "dispute"
    assert (disputed["payment_intent"], disputed["charge"], disputed["amount"]) == (
        "pi_1",
        "ch_1",
        500,
    )
    assert (disputed["reason"], disputed["status"], disputed["currency"]) == (
        "fraudulent",
        "needs_response",
        "usd",
    )
    assert disputed["is_charge_refundable"] is False
    assert disputed["balance_transactions"] == []
    assert disputed["evidence_details"]["has_evidence"] is False
    assert disputed["livemode"] is False
    assert wrapped["data"]["object"]["payment_intent"] == "pi_1"


def test_a_missing_chromium_fails_a_browser_test_rather_than_skipping_it(monkeypatch, tmp_path):
    """GIVEN no Chromium where the browser tests look WHEN one starts THEN it fails, naming the
    file and how to install it (a skipped security test would look like a passed one)."""
    import tests.support.browser as browser_module

    monkeypatch.setattr(browser_module, "CHROMIUM", tmp_path / "chromium")

    with pytest.raises(
        pytest.fail.Exception, match="apt-get install chromium chromium-driver"
    ) as failed:
        browser_module.start_browser(tmp_path)

    assert str(tmp_path / "chromium") in str(failed.value)
