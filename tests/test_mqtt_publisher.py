"""The publisher against a real TLS Mosquitto: verification, credentials, PUBACK, reconnects."""

from __future__ import annotations

import gc
import os
import time

import pytest

from arcade.config import Settings
from arcade.errors import BrokerUnavailable, SettingsError
from arcade.mqtt import Publisher
from tests.support.app import TOPIC_PREFIX
from tests.support.broker import TlsBroker, make_certificates


def publisher_for(broker: TlsBroker, **overrides: str) -> Publisher:
    env = {**broker.env(), "MQTT_PUBACK_TIMEOUT": "1", **overrides}
    return Publisher(Settings.from_env(env))


@pytest.fixture
def publishers():
    made: list[Publisher] = []
    yield made
    for publisher in made:
        publisher.close()


def test_publishes_qos1_over_verified_tls_and_reuses_one_connection(broker, subscribe, publishers):
    """GIVEN a TLS broker WHEN three messages are sent THEN all arrive over one connection."""
    publisher = publisher_for(broker)
    publishers.append(publisher)
    subscriber = subscribe("t/#")

    for n in range(3):
        publisher.publish("t/x", {"n": n}, log_ids={})

    assert [m.payload["n"] for m in subscriber.wait_for(3)] == [0, 1, 2]
    assert all(m.qos == 1 for m in subscriber.messages)
    assert broker.log_text().count(f"as {publisher.client_id}") == 1


def test_nothing_connects_before_the_first_publish(broker, make_app):
    """GIVEN a freshly built app WHEN nothing was published THEN no broker connection exists."""
    app = make_app()

    assert app.extensions["arcade"].publisher._client is None
    assert app.extensions["arcade"].publisher.client_id is None


def test_client_ids_are_made_at_connect_and_unique_per_process_and_object(broker, publishers):
    """GIVEN two publishers WHEN each connects THEN their client ids differ and name the process
    (a worker forked after the app was built connects with an id of its own)."""
    first, second = publisher_for(broker), publisher_for(broker)
    publishers += [first, second]

    for publisher in (first, second):
        publisher.publish("t/id", {}, log_ids={})

    assert first.client_id != second.client_id
    assert all(f"-{os.getpid()}-" in p.client_id for p in (first, second))


def test_wrong_password_is_a_plain_broker_unavailable(broker, publishers):
    """GIVEN a wrong password WHEN publishing THEN BrokerUnavailable naming the credentials."""
    publisher = publisher_for(broker, MQTT_PASSWORD="not-the-password")
    publishers.append(publisher)

    with pytest.raises(BrokerUnavailable, match="MQTT_USERNAME / MQTT_PASSWORD"):
        publisher.publish("t/x", {}, log_ids={})


@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")
def test_a_certificate_from_another_ca_is_refused(broker, tmp_path, publishers):
    """GIVEN a CA that did not sign the broker WHEN publishing THEN refused, not sent."""
    other = make_certificates(tmp_path / "other")
    publisher = publisher_for(broker, MQTT_CA_CERT=str(other.ca_path))
    publishers.append(publisher)

    with pytest.raises(BrokerUnavailable, match="did not verify"):
        publisher.publish("t/x", {}, log_ids={})
    gc.collect()  # paho leaves the failed TLS socket to the collector


@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")
def test_the_host_name_is_checked(broker, publishers):
    """GIVEN the broker reached by a name its certificate lacks WHEN publishing THEN refused."""
    publisher = publisher_for(broker, EMQX_BROKER_URL=f"mqtts://127.0.0.2:{broker.port}")
    publishers.append(publisher)

    with pytest.raises(BrokerUnavailable):
        publisher.publish("t/x", {}, log_ids={})
    gc.collect()


def test_a_ca_file_without_a_certificate_is_named(broker, tmp_path):
    """GIVEN ca.crt holding only comments WHEN publishing THEN the file is named, no SSL text."""
    empty = tmp_path / "ca.crt"
    empty.write_text("# download the CA from the EMQX console\n")
    publisher = publisher_for(broker, MQTT_CA_CERT=str(empty))

    with pytest.raises(SettingsError, match="ca.crt holds no certificate"):
        publisher.publish("t/x", {}, log_ids={})


def test_broker_restarted_between_two_webhooks_reconnects(
    make_app, fresh_broker, subscribe, open_shop
):
    """GIVEN a delivered pulse WHEN the broker restarts THEN the next webhook gets a PUBACK."""
    shop = open_shop(make_app(on=fresh_broker))
    shop.pay("cs_before")

    fresh_broker.restart()
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse", on=fresh_broker)
    answer = shop.pay("cs_after")

    assert answer.status_code == 200
    assert [m.payload["paymentId"] for m in subscriber.settle(0.5)] == ["cs_after"]


# paho leaves the socket of a TLS handshake that timed out to the garbage collector.
@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")
def test_frozen_broker_answers_503_quickly_and_the_retry_delivers_the_same_grant(
    make_app, fresh_broker, subscribe, open_shop
):
    """GIVEN a socket that looks alive WHEN the broker is frozen THEN 503 in seconds.

    After it wakes, Stripe's retry publishes the same grant once more. The frozen broker may
    also deliver the copy stuck in its socket buffer (QoS 1 is at least once): every copy is
    the same grant, with the same paymentId, which is what cabinets de-duplicate on.
    """
    shop = open_shop(make_app(on=fresh_broker))
    shop.pay("cs_warm")
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse", on=fresh_broker)

    fresh_broker.freeze()
    started = time.monotonic()
    during = shop.pay("cs_frozen")
    took = time.monotonic() - started
    fresh_broker.thaw()
    subscriber.wait_subscribed(connections=1)
    retry = shop.pay("cs_frozen")

    assert during.status_code == 503
    assert took < 6
    assert retry.status_code == 200
    pulses = [m.payload for m in subscriber.settle(1.0)]
    assert 1 <= len(pulses) <= 2
    assert all(p == pulses[-1] for p in pulses)
    assert pulses[-1]["paymentId"] == "cs_frozen" and pulses[-1]["credits"] == 1
    assert shop.pay("cs_frozen").json["result"] == "already_delivered"
    assert shop.state()["credits"]["granted"] == 2
    gc.collect()
