"""The delivery relay and MQTT 5 refusals, on SQLite and DynamoDB, with real brokers.

A grant the broker did not acknowledge stays in the outbox; the relay publishes it again (same
payload, same ``paymentId``) once its lease or pause has run out. A broker that answers a
publish with an error reason code has not delivered anything.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from arcade.clock import utc_now
from arcade.config import Settings
from arcade.errors import PublishRefused
from arcade.mqtt import Publisher, delivery_lease_seconds, slowest_publish_seconds
from tests.support.api_process import run_lambda_handler
from tests.support.app import TOPIC_PREFIX, app_environment, signed_post
from tests.support.broker import RefusingBroker, TlsBroker

COINPULSE = f"{TOPIC_PREFIX}/cab001/coinpulse"
CABINET_TOPICS = [COINPULSE, f"{TOPIC_PREFIX}/cab001/gameover"]
ROOT = Path(__file__).resolve().parent.parent
# paho leaves the socket of a connection to a frozen or refusing broker to the collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")


def store_of(app):
    return app.extensions["arcade"].store


def ledger_of(app):
    return app.extensions["arcade"].ledger


def outage(shop, broker, session_id: str = "cs_outage"):
    """Pay while the broker is down: 503, the grant is stored and owed."""
    broker.stop()
    answer = shop.pay(session_id, amount_subtotal=100)
    assert answer.status_code == 503
    broker.start()


def make_due(app, session_id: str) -> None:
    """Move a grant's next attempt to now, as if its pause had run out."""
    store = store_of(app)
    payment = store.get_payment(session_id)
    assert store.commit_payment(replace(payment, due_at=utc_now()))


def test_the_relay_publishes_a_grant_the_broker_missed_once(
    build, fresh_broker, open_shop, subscribe
):
    """GIVEN a grant stored during an outage WHEN the relay runs twice after its pause THEN one
    coinpulse with the same paymentId, and the payment is delivered."""
    shop = open_shop(build(on=fresh_broker))
    outage(shop, fresh_broker)
    subscriber = subscribe(COINPULSE, on=fresh_broker)
    ledger = ledger_of(shop.app)

    early = ledger.relay()
    make_due(shop.app, "cs_outage")
    first = ledger.relay()
    second = ledger.relay()

    assert (early.due, first.delivered, second.due) == (0, 1, 0)
    [pulse] = subscriber.settle(0.5)
    assert pulse.payload["paymentId"] == "cs_outage" and pulse.payload["credits"] == 2
    assert shop.state()["payments"][0]["status"] == "delivered"


def test_a_failed_attempt_waits_longer_each_time(build, fresh_broker, open_shop):
    """GIVEN the broker down WHEN the relay keeps failing THEN each pause is longer, to 60 s."""
    shop = open_shop(build(on=fresh_broker))
    outage(shop, fresh_broker)
    fresh_broker.stop()
    store, ledger = store_of(shop.app), ledger_of(shop.app)
    pauses = []

    for _ in range(3):
        make_due(shop.app, "cs_outage")
        started = utc_now()
        report = ledger.relay()
        assert report.failed == 1 and report.stopped
        payment = store.get_payment("cs_outage")
        pauses.append(round((payment.due_at - started).total_seconds()))

    assert pauses == [4, 8, 16]
    assert store.get_payment("cs_outage").status == "pending_delivery"


def test_a_grant_undeliverable_for_an_hour_is_reported_once(build, fresh_broker, open_shop, caplog):
    """GIVEN a grant granted two hours ago and a broker still down WHEN the relay fails on it
    again and again THEN one ERROR line says so, not one per attempt."""
    shop = open_shop(build(on=fresh_broker))
    outage(shop, fresh_broker)
    store = store_of(shop.app)
    old = store.get_payment("cs_outage")
    assert store.commit_payment(replace(old, granted_at=datetime(2026, 1, 1, tzinfo=UTC)))
    fresh_broker.stop()
    caplog.set_level(logging.INFO)

    for _ in range(3):
        make_due(shop.app, "cs_outage")
        ledger_of(shop.app).relay()

    alarms = [r for r in caplog.records if r.getMessage() == "delivery_undeliverable"]
    assert len(alarms) == 1 and alarms[0].levelname == "ERROR"
    assert alarms[0].fields["granted_at"] == "2026-01-01T00:00:00.000000Z"  # as iso() writes


def test_a_relay_run_while_a_webhook_holds_the_lease_publishes_nothing(
    build, broker, fresh_broker, open_shop, subscribe
):
    """GIVEN one instance publishing a grant to a frozen broker WHEN another instance's relay
    and Stripe's retry come meanwhile THEN neither publishes: one holder at a time."""
    frozen_app = build(on=fresh_broker)
    shop = open_shop(frozen_app)
    other = build()
    subscriber = subscribe(COINPULSE)
    fresh_broker.freeze()
    holder = threading.Thread(target=lambda: shop.pay("cs_held", amount_subtotal=100))
    holder.start()
    time.sleep(0.3)

    relayed = ledger_of(other).relay()
    retry = signed_post(other.test_client(), shop.paid_event("cs_held", amount_subtotal=100))
    holder.join()
    fresh_broker.thaw()

    assert relayed.due == 0
    assert retry.json["result"] == "delivery_in_progress"
    assert subscriber.settle(0.3) == []
    gc.collect()


def test_a_publish_the_broker_acl_refuses_is_a_503_not_a_delivery(
    make_app, tmp_path, open_shop, caplog
):
    """GIVEN the API's broker user may read but not write arcade/# WHEN a grant is published
    THEN Mosquitto's MQTT 5 PUBACK says 0x87: 503 mqtt_publish_refused, the grant stays owed."""
    acl = "user api\ntopic read arcade/#\n"
    with TlsBroker(tmp_path / "acl-broker", username="api", acl=acl) as refusing:
        shop = open_shop(make_app(on=refusing))

        answer = shop.pay("cs_acl", amount_subtotal=100)

    assert answer.status_code == 503
    assert answer.json == {
        "error": "the broker refused the message: Not authorized (0x87)",
        "code": "mqtt_publish_refused",
    }
    assert store_of(shop.app).get_payment("cs_acl").status == "pending_delivery"
    refusals = [r for r in caplog.records if r.getMessage() == "mqtt_publish_refused"]
    assert refusals and refusals[0].fields["reason_code"] == 0x87


def test_a_broker_over_its_quota_is_a_503_naming_0x97(make_app, tmp_path, open_shop):
    """GIVEN a broker answering every publish with 0x97 WHEN a grant is published THEN 503
    naming the quota, and the relay does not count it delivered either."""
    with RefusingBroker(tmp_path / "quota", reason_code=0x97) as refusing:
        app = make_app(**refusing.env())
        shop = open_shop(app)

        answer = shop.pay("cs_quota", amount_subtotal=100)
        make_due(app, "cs_quota")
        relayed = ledger_of(app).relay()

    assert (answer.status_code, answer.json["code"]) == (503, "mqtt_publish_refused")
    assert "Quota exceeded (0x97)" in answer.json["error"]
    assert (relayed.delivered, relayed.failed, relayed.stopped) == (0, 1, None)
    assert store_of(app).get_payment("cs_quota").status == "pending_delivery"
    assert refusing.publishes == [COINPULSE, COINPULSE]


def test_the_documented_acl_lets_the_api_publish_and_each_cabinet_read_only_its_own(
    make_app, tmp_path, open_shop
):
    """GIVEN the Mosquitto ACL the README gives WHEN the API publishes for cab001 THEN cab001's
    user receives it, cab002's does not, and a cabinet's own publish is refused."""
    acl = readme_block("acl")
    users = {"cab001": "pw-cab001", "cab002": "pw-cab002"}
    with TlsBroker(
        tmp_path / "documented", username="arcade-api", users=users, acl=acl
    ) as documented:
        shop = open_shop(make_app(on=documented))
        own = documented.subscriber(CABINET_TOPICS, username="cab001")
        # Mosquitto grants the subscription and checks the read rule on each message.
        other = documented.subscriber(CABINET_TOPICS, username="cab002")

        answer = shop.pay("cs_documented", amount_subtotal=100)
        own_messages = own.wait_for(1)
        other_messages = other.settle(0.3)
        own.close()
        other.close()
        publisher = Publisher(Settings.from_env(documented.env("cab001")))
        with pytest.raises(PublishRefused, match="0x87"):
            publisher.publish(COINPULSE, {"credits": 50}, log_ids={})
        publisher.close()

    assert answer.status_code == 200
    assert own_messages[0].payload["paymentId"] == "cs_documented"
    assert other_messages == []


def test_deliveries_retry_publishes_what_is_due(build, fresh_broker, open_shop, subscribe):
    shop = open_shop(build(on=fresh_broker))
    outage(shop, fresh_broker)
    make_due(shop.app, "cs_outage")
    subscriber = subscribe(COINPULSE, on=fresh_broker)

    answer = shop.app.test_cli_runner().invoke(args=["deliveries", "retry"])

    assert answer.exit_code == 0, answer.output
    assert answer.output.strip() == "deliveries: 1 due, 1 delivered, 0 failed"
    assert subscriber.wait_for(1)[0].payload["paymentId"] == "cs_outage"


def test_the_minute_schedule_runs_the_relay_through_lambda_handler(
    make_app,
    fresh_broker,
    stripe_standin,
    subscribe,
    moto_endpoint,
    dynamodb_table,
    tmp_path,
    monkeypatch,
    open_shop,
):
    """GIVEN a grant owed on the DynamoDB store WHEN EventBridge's scheduled event invokes
    lambda_handler in a fresh interpreter THEN the relay publishes it, and no HTTP is answered."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    app = make_app(
        on=fresh_broker,
        AWS_LAMBDA_FUNCTION_NAME="arcade-pay",
        DATABASE_URL=f"dynamodb://{dynamodb_table}",
    )
    store_of(app).create_table()
    shop = open_shop(app)
    outage(shop, fresh_broker)
    make_due(app, "cs_outage")
    subscriber = subscribe(COINPULSE, on=fresh_broker)
    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}

    answer = run_lambda_handler(
        scheduled,
        app_environment(fresh_broker, stripe_standin, tmp_path / "unused.db"),
        endpoint=moto_endpoint,
        table=dynamodb_table,
    )

    assert answer == {
        "relay": {
            "due": 1,
            "delivered": 1,
            "refunded": 0,
            "failed": 0,
            "stopped": None,
            "links_switched": 0,
        }
    }
    assert subscriber.wait_for(1)[0].payload["paymentId"] == "cs_outage"


# --- the lease and the settings that would break it -----------------------------------------
@pytest.mark.parametrize("puback", [0.1, 0.5, 1, 2, 5])
def test_the_lease_outlasts_the_slowest_publish(puback):
    assert delivery_lease_seconds(puback) > slowest_publish_seconds(puback)


def test_the_default_lease_is_at_most_30_seconds():
    assert delivery_lease_seconds(Settings().puback_timeout) <= 30


@pytest.mark.parametrize(
    ("name", "value"),
    [("MQTT_PUBACK_TIMEOUT", "30"), ("MQTT_PUBACK_TIMEOUT", "6"), ("DELIVERY_RETRY_SECONDS", "0")],
)
def test_settings_that_would_break_delivery_are_refused_by_name(name, value):
    settings = Settings.from_env({name: value})

    assert any(problem.startswith(f"{name} must be") for problem in settings.problems)


def readme_block(language: str) -> str:
    """Return the README's first fenced block in ``language``."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"```{language}\n") + len(f"```{language}\n")
    return text[start : text.index("```", start)]
