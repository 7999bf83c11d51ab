"""Only the API can sign: every coinpulse and gameover carries an Ed25519 ``sig`` that verifies
with the key GET /pulse-key gives, and no one holding broker credentials can forge one."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import pytest

from arcade import wire
from arcade.config import Settings
from tests.support.app import TOPIC_PREFIX

# paho leaves the socket of a connection to a stopped or refusing broker to the collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")

SEED = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()


def public_key_of(app):
    answer = app.test_client().get("/pulse-key")
    assert answer.status_code == 200
    assert answer.json["alg"] == "Ed25519"
    return wire.load_public_key(answer.json["public_key"])


def test_coinpulse_and_gameover_are_signed_with_the_published_key(build, open_shop, subscribe):
    """GIVEN a paid link WHEN the coinpulse and the gameover reach a subscriber THEN each
    verifies against GET /pulse-key, over exactly the canonical JSON of the rest."""
    app = build()
    shop = open_shop(app)
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/#")

    shop.pay("cs_signed")
    shop.client.post("/gameover", json={"machine_id": "cab001"}, headers=shop.auth)
    pulse, over = (m.payload for m in subscriber.wait_for(2))

    key = public_key_of(app)
    wire.verify(pulse, key)
    wire.verify(over, key)
    assert set(pulse) == {
        "machineId",
        "credits",
        "timestamp",
        "paymentId",
        "amount",
        "currency",
        "sig",
    }
    with pytest.raises(wire.WireError, match="does not match"):
        wire.verify(pulse | {"credits": 50}, key)


def test_a_forged_pulse_with_broker_credentials_does_not_verify(build, open_shop, broker):
    """GIVEN someone with broker credentials and their own key WHEN they sign a pulse THEN it
    does not verify against the API's key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    app = build()
    forged = wire.sign(
        wire.coinpulse(
            machine_id="cab001",
            credits=50,
            timestamp="2026-11-29T10:00:00Z",
            payment_id="cs_forged",
            amount=0,
            currency="usd",
        ),
        Ed25519PrivateKey.generate(),
    )

    with pytest.raises(wire.WireError):
        wire.verify(forged, public_key_of(app))


def test_two_instances_racing_to_make_the_key_agree_on_one(build):
    """GIVEN no PULSE_SIGNING_KEY and an empty store WHEN eight instances ask for the key at
    once THEN all publish the same one, kept in the store."""
    apps = [build() for _ in range(8)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda app: app.extensions["arcade"].signer.public_key(), apps))

    assert len(set(keys)) == 1
    assert build().test_client().get("/pulse-key").json["public_key"] == keys[0]


def test_pulse_signing_key_from_the_settings_wins(build):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    app = build(PULSE_SIGNING_KEY=SEED)
    expected = (
        Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )

    assert app.test_client().get("/pulse-key").json["public_key"] == wire.b64url(expected)


@pytest.mark.parametrize("value", ["short", "not base64!", SEED + "AAAA"])
def test_a_malformed_pulse_signing_key_is_named(value):
    settings = Settings.from_env({"PULSE_SIGNING_KEY": value})

    assert "PULSE_SIGNING_KEY must be base64url of 32 bytes" in settings.problems
    assert value not in repr(settings)


def test_a_republished_grant_carries_the_same_signature(
    make_app, fresh_broker, open_shop, subscribe
):
    """GIVEN a grant published, then published again by Stripe's retry after an outage THEN
    both copies are byte for byte the same message."""
    shop = open_shop(make_app(on=fresh_broker))
    fresh_broker.stop()
    shop.pay("cs_again")
    fresh_broker.start()
    subscriber = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse", on=fresh_broker)
    shop.pay("cs_again")
    store = shop.app.extensions["arcade"].store
    payment = store.get_payment("cs_again")
    ledger = shop.app.extensions["arcade"].ledger

    ledger._publish(payment, {"source": "test"})

    first, second = subscriber.wait_for(2)
    assert first.raw == second.raw
