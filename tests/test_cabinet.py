"""The cabinet client against the real TLS broker and the real API over HTTP."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask
from paho.mqtt.enums import CallbackAPIVersion
from werkzeug.serving import make_server

from arcade import wire
from arcade.cabinet import (
    Cabinet,
    CabinetSettings,
    Coin,
    CoinActionError,
    GpioCoinAction,
    RetryPolicy,
)
from arcade.cabinet.__main__ import install_signal_handlers
from arcade.cabinet.actions import load_coin_action
from arcade.cabinet.display import qr_text
from arcade.cabinet.ledger import CabinetLedger
from arcade.common.logs import JsonLineFormatter
from tests.support.app import ADMIN_KEY, TOPIC_PREFIX
from tests.support.app import Cabinet as Machine
from tests.support.broker import TlsBroker, free_loopback_port
from tests.support.browser import PageServer
from tests.support.http_server import LoopbackServer
from tests.support.stripe_standin import checkout_session

ROOT = Path(__file__).resolve().parent.parent
FAST_RETRY = RetryPolicy(first_delay=0.05, max_delay=0.2)
QR_BLOCKS = set("█▀▄")
FIXED_LINK = "https://buy.stripe.com/test_fixed"
NOBODY = "http://127.0.0.1:9"  # nothing listens: tests that need the API say so
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


class RecordingAction:
    """A coin action that remembers every coin it was asked to insert."""

    def __init__(self) -> None:
        self.coins: list[Coin] = []

    def __call__(self, coin: Coin) -> None:
        self.coins.append(coin)


# --- the API's signing key ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def api_key() -> Ed25519PrivateKey:
    """The API's private key for this test session (the API is given its seed)."""
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def pulse_key(api_key: Ed25519PrivateKey) -> str:
    """The API's public key as cabinets pin it: base64url of its 32 bytes."""
    return wire.b64url(api_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


@pytest.fixture
def app(make_app: Callable[..., Flask], api_key: Ed25519PrivateKey) -> Flask:
    """The API, signing with the session's key (PULSE_SIGNING_KEY is its 32-byte seed)."""
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    seed = api_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return make_app(PULSE_SIGNING_KEY=wire.b64url(seed))


@pytest.fixture
def sign(api_key: Ed25519PrivateKey) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Sign a message as the API does."""
    return lambda message: wire.sign(message, api_key)


# --- machines, cabinets, the broker ------------------------------------------------------------


@pytest.fixture
def machine_id() -> str:
    """An id of its own for each test, so no broker session is shared."""
    return f"cab-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def machine(register: Callable[..., Machine], machine_id: str) -> Machine:
    """Register the test's machine with the API."""
    return register(machine_id)


@pytest.fixture
def coinpulse_topic(machine_id: str) -> str:
    return f"{TOPIC_PREFIX}/{machine_id}/coinpulse"


@pytest.fixture
def make_cabinet(
    broker: TlsBroker, machine_id: str, pulse_key: str, tmp_path: Path
) -> Iterator[Callable[..., Cabinet]]:
    """Start cabinets for the test machine, stopped after the test.

    By default: the shared broker, the API's key pinned, no API listening, a fixed QR link.
    """
    started: list[Cabinet] = []

    def start(
        *,
        action: Any = None,
        out: io.StringIO | None = None,
        on: TlsBroker | None = None,
        ready: bool = True,
        **changes: Any,
    ) -> Cabinet:
        settings = CabinetSettings.from_env(
            machine_id,
            (on or broker).env(),
            token="mt_not_registered",
            api_url=NOBODY,
            state_file=tmp_path / "cabinet.db",
            http_port=0,
            qr_url=FIXED_LINK,
            retry=FAST_RETRY,
            pulse_key=pulse_key,
            reconnect_max_delay=1,
        )
        cabinet = Cabinet(
            replace(settings, **changes), coin_action=action or RecordingAction(), out=out
        )
        cabinet.start()
        started.append(cabinet)
        if ready:
            assert cabinet.wait_ready(), cabinet.out_of_order_reason()
        return cabinet

    yield start
    for cabinet in started:
        cabinet.stop()


@pytest.fixture
def serve_api(app: Flask) -> Iterator[Callable[..., str]]:
    """Serve the test app over real HTTP on loopback; return its base URL."""
    running: list[tuple[Any, threading.Thread]] = []

    def serve(port: int = 0) -> str:
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def pay(client, machine: Machine, deliver) -> Callable[..., Any]:
    """Pay for credits on the machine's own link (50 cents a credit) through the webhook."""
    link = client.post(
        "/create-payment-link", json={"machine_id": machine.machine_id}, headers=machine.auth
    ).json

    def send(session_id: str, *, cents: int) -> Any:
        session = checkout_session(
            id=session_id, payment_link=link["payment_link_id"], amount_subtotal=cents
        )
        return deliver("checkout.session.completed", session)

    return send


@pytest.fixture
def publish(broker: TlsBroker) -> Iterator[Callable[..., None]]:
    """Publish at QoS 1 with our own paho TLS client, waiting for each PUBACK.

    A dict is sent as JSON, bytes as they are; ``as_user`` publishes on another account.
    """
    clients: dict[str, mqtt.Client] = {}

    def connected(username: str, on: TlsBroker) -> mqtt.Client:
        if (username, on.port) not in clients:
            client = mqtt.Client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id=f"test-pub-{uuid.uuid4()}",
            )
            client.username_pw_set(username, on.users[username])
            client.tls_set_context(on.ssl_context())
            client.connect(on.host, on.port)
            client.loop_start()
            clients[(username, on.port)] = client
        return clients[(username, on.port)]

    def send(
        topic: str,
        payload: dict[str, Any] | bytes,
        *,
        as_user: str | None = None,
        on: TlsBroker | None = None,
    ) -> None:
        target = on or broker
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = connected(as_user or target.username, target).publish(topic, data, qos=1)
        info.wait_for_publish(timeout=5)
        assert info.is_published()

    yield send
    for client in clients.values():
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def send_pulse(
    publish: Callable[..., None], sign: Callable, machine_id: str, coinpulse_topic: str
) -> Callable[..., None]:
    """Publish a coinpulse signed with the API's key, as the API would."""

    def send(payment_id: str, credits: int = 1, **options: Any) -> None:
        publish(coinpulse_topic, sign(pulse(machine_id, payment_id, credits)), **options)

    return send


def pulse(machine_id: str, payment_id: str, credits: int) -> dict[str, Any]:
    """Return an unsigned coinpulse."""
    return wire.coinpulse(
        machine_id=machine_id,
        credits=credits,
        timestamp="2026-11-22T10:00:00Z",
        payment_id=payment_id,
        amount=credits * 50,
        currency="usd",
    )


def keep_a_session(broker: TlsBroker, client_id: str, topic: str) -> None:
    """Have the broker keep a QoS 1 subscription for ``client_id`` while it is away."""
    done = threading.Event()
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=False,
    )
    client.username_pw_set(broker.username, broker.password)
    client.tls_set_context(broker.ssl_context())
    client.on_subscribe = lambda *_args: done.set()
    client.on_connect = lambda c, *_args: c.subscribe(topic, qos=1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert done.wait(5)
    finally:
        client.disconnect()
        client.loop_stop()


def post_local(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    sent = {"Content-Type": "application/json"} | (headers or {})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=b"{}", method="POST", headers=sent
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def get_local(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


# --- a stand-in API that records what the cabinet sends ----------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    authorization: str | None
    body: Any


class ApiStandIn:
    """Answer the cabinet's calls on loopback with the statuses a test sets, recording each."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._statuses: dict[str, list[int]] = {}
        self._condition = threading.Condition()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's naming
                self._answer()

            def do_POST(self) -> None:  # noqa: N802
                self._answer()

            def _answer(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = stand_in._record(
                    Call(
                        self.command,
                        self.path,
                        self.headers.get("Authorization"),
                        json.loads(raw) if raw else None,
                    )
                )
                data = json.dumps({"status": "ok"} if status < 300 else {"code": "no"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = LoopbackServer(Handler, name="fake-api")
        self.url = self._server.url

    def answer(self, path_end: str, *statuses: int) -> None:
        """Answer calls to paths ending in ``path_end`` with these statuses, the last repeated."""
        with self._condition:
            self._statuses[path_end] = list(statuses)

    def _record(self, call: Call) -> int:
        with self._condition:
            self.calls.append(call)
            self._condition.notify_all()
            for path_end, statuses in self._statuses.items():
                if call.path.endswith(path_end):
                    return statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return 200

    def calls_to(self, path_end: str) -> list[Call]:
        with self._condition:
            return [call for call in self.calls if call.path.endswith(path_end)]

    def wait_calls(self, path_end: str, count: int, timeout: float = 5.0) -> list[Call]:
        with self._condition:
            self._condition.wait_for(lambda: len(self.calls_to(path_end)) >= count, timeout)
        calls = self.calls_to(path_end)
        assert len(calls) >= count, f"{len(calls)} call(s) to {path_end}: {calls}"
        return calls

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def api_standin() -> Iterator[ApiStandIn]:
    standin = ApiStandIn()
    yield standin
    standin.close()


# --- credits in --------------------------------------------------------------------------------


def test_pulses_published_while_offline_arrive_on_reconnect(make_cabinet, pay, machine):
    """GIVEN a cabinet that connected once WHEN a player pays while it is off THEN it gets them."""
    make_cabinet().stop()

    answer = pay("cs_offline", cents=150)
    cabinet = make_cabinet()

    assert answer.status_code == 200
    assert cabinet.wait_credits(3)
    assert cabinet.credits == 3


def test_a_replayed_pulse_adds_credits_once_also_after_a_restart(make_cabinet, send_pulse):
    """GIVEN a signed pulse already counted WHEN the same pulse comes again THEN nothing more."""
    cabinet = make_cabinet()

    send_pulse("cs_same", 3)
    send_pulse("cs_same", 3)
    send_pulse("cs_marker", 1)  # in order: when it lands, both came
    assert cabinet.wait_credits(4)
    assert cabinet.wait_coins(4)
    cabinet.stop()
    restarted = make_cabinet()
    send_pulse("cs_same", 3)
    send_pulse("cs_after", 2)

    assert restarted.wait_credits(6)
    assert restarted.wait_coins(2)
    assert restarted.credits == 6
    assert [coin.payment_id for coin in restarted.coin_action.coins] == ["cs_after"] * 2


def test_the_coin_action_runs_once_per_credit(make_cabinet, pay, machine):
    """GIVEN two payments of 2 and 3 credits THEN five coins, in order, and none again later."""
    action = RecordingAction()
    cabinet = make_cabinet(action=action)

    pay("cs_two", cents=100)
    pay("cs_three", cents=150)

    assert cabinet.wait_coins(5)
    assert [(c.payment_id, c.number, c.of) for c in action.coins] == [
        ("cs_two", 1, 2),
        ("cs_two", 2, 2),
        ("cs_three", 1, 3),
        ("cs_three", 2, 3),
        ("cs_three", 3, 3),
    ]
    cabinet.stop()
    again = RecordingAction()
    make_cabinet(action=again)
    assert not cabinet.wait_coins(6, timeout=0.2)
    assert again.coins == []


# --- the API's public key ----------------------------------------------------------------------


def test_the_key_is_fetched_once_from_the_api_and_kept(
    make_cabinet, serve_api, send_pulse, pulse_key
):
    """GIVEN no key in the settings WHEN the cabinet starts THEN it pins GET /pulse-key's key,
    and after a restart with the API gone it still counts signed pulses with the kept key."""
    first = make_cabinet(api_url=serve_api(), pulse_key=None)
    assert first.pulse_key == pulse_key
    first.stop()

    again = make_cabinet(api_url=NOBODY, pulse_key=None)
    send_pulse("cs_kept_key", 2)

    assert again.pulse_key == pulse_key
    assert again.wait_credits(2)


def test_without_a_key_nothing_counts_and_the_cabinet_is_out_of_order(
    make_cabinet, serve_api, send_pulse, tmp_path, broker, machine_id, coinpulse_topic
):
    """GIVEN a cabinet with no key yet and the API down WHEN a signed pulse is published THEN
    it is out of order and counts nothing; once the API answers, the key comes and it counts."""
    state_file = tmp_path / "no-key-yet.db"
    # The broker keeps a session for the client id this state file holds, as it does for a
    # cabinet that ran before; nothing in the file says the API's key yet.
    ledger = CabinetLedger(state_file)
    keep_a_session(broker, ledger.client_id(machine_id), coinpulse_topic)
    ledger.close()
    port = free_loopback_port()
    screen = io.StringIO()
    cabinet = make_cabinet(
        api_url=f"http://127.0.0.1:{port}",
        pulse_key=None,
        state_file=state_file,
        out=screen,
        ready=False,
    )
    send_pulse("cs_waits_for_the_key", 2)

    assert not cabinet.wait_ready(timeout=0.5)
    status = get_local(cabinet.http_port, "/credits")
    assert status["out_of_order"] is True and status["connected"] is False
    assert "out of order" in status["reason"] and "pulse key" in status["reason"]
    assert status["payment_url"] is None and status["credits"] == 0
    assert "OUT OF ORDER" in screen.getvalue() and "Scan to pay" not in screen.getvalue()

    serve_api(port)
    assert cabinet.wait_ready()
    assert cabinet.wait_credits(2)


# --- messages the API did not sign -------------------------------------------------------------


@dataclass(frozen=True)
class Forger:
    """What someone holding broker credentials can put together, but not the API's key."""

    machine_id: str
    sign: Callable[[dict[str, Any]], dict[str, Any]]
    other_key: Ed25519PrivateKey

    def pulse(self, payment_id: str = "cs_bad", credits: int = 5) -> dict[str, Any]:
        return pulse(self.machine_id, payment_id, credits)

    def signed(self, **changes: Any) -> dict[str, Any]:
        return self.sign({**self.pulse(), **changes})

    def random_sig(self, **changes: Any) -> bytes:
        message = {**self.pulse(), **changes, "sig": wire.b64url(os.urandom(64))}
        return json.dumps(message).encode()  # ensure_ascii: a lone surrogate stays escaped


HUGE = 256 * 1024
BAD_MESSAGES: dict[str, Callable[[Forger], dict[str, Any] | bytes]] = {
    "forged_valid_shape_wrong_signature": lambda f: f.random_sig(),
    "unsigned": lambda f: f.pulse(),
    "re_signed_with_another_key": lambda f: wire.sign(f.pulse(), f.other_key),
    "tampered_after_signing": lambda f: {**f.signed(), "credits": 1000},
    "signature_not_base64url": lambda f: {**f.pulse(), "sig": "!!not base64!!"},
    "signature_a_number": lambda f: {**f.pulse(), "sig": 12345},
    "truncated": lambda f: json.dumps(f.signed()).encode()[:-9],
    "credits_as_text": lambda f: f.signed(credits="5"),
    "credits_true": lambda f: f.signed(credits=True),
    "credits_a_fraction": lambda f: f.signed(credits=1.5),
    "credits_zero": lambda f: f.signed(credits=0),
    "credits_2_to_the_64": lambda f: f.signed(credits=2**64),
    "credits_nested_object": lambda f: f.signed(credits={"credits": 5}),
    "payment_id_nested_list": lambda f: f.signed(paymentId=["cs_1", ["cs_2"]]),
    "payment_id_lone_surrogate": lambda f: f.random_sig(paymentId="\ud800"),
    "lone_surrogate_in_another_field": lambda f: f.random_sig(currency="\ud800"),
    "payment_id_with_a_space": lambda f: f.signed(paymentId="cs 1"),
    "another_machines_pulse": lambda f: f.signed(machineId="someone-else"),
    "nested_2000_deep": lambda f: b"[" * 2000 + b"]" * 2000,
    "invalid_utf8": lambda f: b'{"machineId": "\xff\xfe", "credits": 5, "paymentId": "cs_\xc3"}',
    "not_an_object": lambda f: b"[1, 2, 3]",
    "json_null": lambda f: b"null",
    "empty_payload": lambda f: b"",
    "payload_of_256_kib": lambda f: json.dumps({**f.signed(), "pad": "x" * HUGE}).encode(),
}


@pytest.mark.parametrize("make_bad", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_a_message_the_api_did_not_sign_counts_nothing_and_the_next_real_pulse_counts(
    make_bad, make_cabinet, publish, send_pulse, sign, machine_id, coinpulse_topic, caplog
):
    """GIVEN a running cabinet WHEN a message the API did not sign as it is arrives THEN it is
    logged by reason, acknowledged and dropped; the next signed pulse counts; paho's thread is
    the same one; after a restart nothing is delivered again."""
    caplog.set_level("INFO", logger="arcade.cabinet")
    bad = make_bad(Forger(machine_id, sign, Ed25519PrivateKey.generate()))
    cabinet = make_cabinet()
    network_thread = cabinet._client._thread

    publish(coinpulse_topic, bad)
    send_pulse("cs_real", 2)

    assert cabinet.wait_credits(2)
    assert cabinet.credits == 2
    assert cabinet.messages_refused == 1
    assert cabinet._client._thread is network_thread and network_thread.is_alive()
    [refusal] = [r for r in caplog.records if r.getMessage() == "message_refused"]
    assert refusal.fields["reason"] and refusal.fields["kind"] == "coinpulse"
    line = JsonLineFormatter().format(refusal)
    assert len(line) < 1000 and "xxxx" not in line
    cabinet.stop()

    restarted = make_cabinet()
    send_pulse("cs_after_restart", 1)
    assert restarted.wait_credits(3)
    assert restarted.messages_refused == 0


def test_a_failure_inside_message_handling_loses_nothing_but_that_message(
    make_cabinet, send_pulse, monkeypatch, caplog
):
    """GIVEN handling that raises for one message WHEN it arrives THEN it is logged and
    acknowledged, the next pulse counts, and a restart gets nothing again."""
    cabinet = make_cabinet()
    real = cabinet._take_message
    calls = []

    def fails_once(*args: Any, **kwargs: Any) -> bool:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(cabinet, "_take_message", fails_once)
    send_pulse("cs_hits_the_bug", 4)
    send_pulse("cs_fine", 1)

    assert cabinet.wait_credits(1)
    assert cabinet.credits == 1
    assert any(r.getMessage() == "message_failed" for r in caplog.records)
    assert cabinet.connected
    cabinet.stop()
    restarted = make_cabinet()
    send_pulse("cs_marker", 1)
    assert restarted.wait_credits(2)
    assert restarted.credits == 2


def test_a_gameover_counts_only_when_signed(
    make_cabinet, publish, send_pulse, sign, machine_id, caplog
):
    """GIVEN a cabinet with credits WHEN gameovers arrive THEN an unsigned one is refused, a
    signed one is logged, and neither uses a credit (the game told the cabinet already)."""
    caplog.set_level("INFO", logger="arcade.cabinet")
    topic = f"{TOPIC_PREFIX}/{machine_id}/gameover"
    cabinet = make_cabinet()
    over = wire.gameover(machine_id=machine_id, timestamp="2026-11-22T10:05:00Z")

    publish(topic, over)
    publish(topic, sign(over))
    send_pulse("cs_marker", 2)

    assert cabinet.wait_credits(2)
    assert cabinet.messages_refused == 1
    events = [r.getMessage() for r in caplog.records]
    assert "gameover_received" in events and "message_refused" in events
    assert cabinet.credits == 2


# --- an honest MQTT state ----------------------------------------------------------------------


def test_a_refused_login_is_out_of_order_and_never_shows_the_qr_code(
    make_cabinet, fresh_broker, send_pulse
):
    """GIVEN a wrong broker password WHEN the cabinet starts THEN its screen and local status
    say out of order, and the QR code is never drawn."""
    screen = io.StringIO()

    cabinet = make_cabinet(on=fresh_broker, mqtt_password="wrong", out=screen, ready=False)

    assert cabinet.wait_until(lambda: "refused" in (cabinet.out_of_order_reason() or ""))
    status = get_local(cabinet.http_port, "/credits")
    assert status["connected"] is False and status["out_of_order"] is True
    assert "refused the MQTT login" in status["reason"]
    assert status["payment_url"] is None
    assert "OUT OF ORDER" in screen.getvalue()
    assert "Scan to pay" not in screen.getvalue()


def test_an_unreachable_broker_is_out_of_order(make_cabinet, fresh_broker):
    """GIVEN no broker at the address WHEN the cabinet starts THEN out of order, no QR code."""
    screen = io.StringIO()

    cabinet = make_cabinet(
        on=fresh_broker, broker_port=free_loopback_port(), out=screen, ready=False
    )

    assert cabinet.wait_until(lambda: "reached" in (cabinet.out_of_order_reason() or ""))
    assert get_local(cabinet.http_port, "/credits")["out_of_order"] is True
    assert "Scan to pay" not in screen.getvalue()


def test_the_qr_code_goes_while_the_broker_is_down_and_comes_back_with_it(
    make_cabinet, fresh_broker, send_pulse
):
    """GIVEN a cabinet showing its QR code WHEN the broker stops THEN out of order; WHEN it is
    back THEN the QR code again, and pulses count."""
    screen = io.StringIO()
    cabinet = make_cabinet(on=fresh_broker, out=screen)
    assert cabinet.wait_until(lambda: "Scan to pay" in screen.getvalue())

    fresh_broker.stop()
    assert cabinet.wait_until(lambda: not cabinet.connected)
    assert cabinet.wait_until(lambda: screen.getvalue().rstrip().endswith("#"))
    assert get_local(cabinet.http_port, "/credits")["out_of_order"] is True
    fresh_broker.start()

    assert cabinet.wait_ready(timeout=10)
    assert cabinet.wait_until(lambda: screen.getvalue().endswith(qr_text(FIXED_LINK)))
    assert get_local(cabinet.http_port, "/credits")["payment_url"] == FIXED_LINK
    send_pulse("cs_after_outage", 1, on=fresh_broker)
    assert cabinet.wait_credits(1)


def test_a_dead_network_thread_is_out_of_order_until_it_runs_again(make_cabinet, send_pulse):
    """GIVEN a connected cabinet WHEN paho's network thread ends THEN the screen says out of
    order, the thread is started again, the QR code returns and pulses count."""
    screen = io.StringIO()
    cabinet = make_cabinet(out=screen)
    assert cabinet.wait_until(lambda: "Scan to pay" in screen.getvalue())
    drawn_before = len(screen.getvalue())

    cabinet._client.loop_stop()  # the thread ends as if it had died

    assert cabinet.wait_until(lambda: "network thread" in screen.getvalue()[drawn_before:])
    assert cabinet.wait_until(lambda: screen.getvalue().endswith(qr_text(FIXED_LINK)))
    assert cabinet.wait_ready()
    send_pulse("cs_after_thread", 1)
    assert cabinet.wait_credits(1)


def test_the_docs_broker_acl_lets_a_cabinet_read_only_its_own_topics(
    make_cabinet, publish, sign, machine_id, coinpulse_topic, tmp_path
):
    """GIVEN docs/cabinet.md's Mosquitto ACL, cabinets logging in as their machine id WHEN the
    API publishes THEN the cabinet counts it; what its own user publishes reaches no one, and
    another cabinet cannot read its topic."""
    acl = (ROOT / "docs" / "cabinet.md").read_text().split("```acl\n", 1)[1].split("```", 1)[0]
    other = f"cab-{uuid.uuid4().hex[:10]}"
    with TlsBroker(
        tmp_path / "acl-broker",
        username="arcade-api",
        users={machine_id: "own-password", other: "other-password"},
        acl=acl,
    ) as acl_broker:
        cabinet = make_cabinet(
            on=acl_broker, mqtt_username=machine_id, mqtt_password="own-password"
        )
        spy = acl_broker.subscriber(coinpulse_topic, username=other)
        try:
            publish(
                coinpulse_topic,
                sign(pulse(machine_id, "cs_own_user", 5)),
                as_user=machine_id,
                on=acl_broker,
            )
            publish(coinpulse_topic, sign(pulse(machine_id, "cs_from_the_api", 2)), on=acl_broker)

            assert cabinet.wait_credits(2)
            assert cabinet.credits == 2
            assert spy.settle(0.2) == []
        finally:
            spy.close()


# --- confirmation and presence -----------------------------------------------------------------


def test_after_its_coins_the_payment_is_confirmed_and_credited(
    make_cabinet, serve_api, pay, client, machine
):
    """GIVEN a paid credit WHEN its coin fires THEN the cabinet confirms it and the API lists
    the payment as credited."""
    cabinet = make_cabinet(api_url=serve_api(), token=machine.token)

    pay("cs_confirm_me", cents=50)

    assert cabinet.wait_coins(1)
    assert cabinet.wait_confirmations(1)
    state = client.get(f"/machines/{machine.machine_id}", headers=machine.auth).json
    assert state["payments"][0]["id"] == "cs_confirm_me"
    assert state["payments"][0]["status"] == "credited"


def test_a_confirmation_is_kept_across_a_restart_until_the_api_answers(
    make_cabinet, serve_api, pay, client, machine
):
    """GIVEN the API down when the coins fire WHEN the cabinet restarts and the API is back
    THEN the confirmation is sent then, once."""
    port = free_loopback_port()
    cabinet = make_cabinet(api_url=f"http://127.0.0.1:{port}", token=machine.token)
    pay("cs_later", cents=100)
    assert cabinet.wait_coins(2)
    assert not cabinet.wait_confirmations(1, timeout=0.3)
    cabinet.stop()

    serve_api(port)
    restarted = make_cabinet(api_url=f"http://127.0.0.1:{port}", token=machine.token)

    assert restarted.wait_confirmations(1)
    state = client.get(f"/machines/{machine.machine_id}", headers=machine.auth).json
    assert state["payments"][0]["status"] == "credited"
    assert restarted._ledger.confirmations() == {"cs_later": "confirmed"}


def test_a_confirmation_is_posted_with_the_token_and_retried_until_2xx(
    make_cabinet, api_standin, send_pulse
):
    """GIVEN an API answering 503, then 401, then 200 WHEN a payment's coins fire THEN the
    same confirmation is posted until the 200."""
    api_standin.answer("/credits/ack", 503, 401, 200)
    cabinet = make_cabinet(api_url=api_standin.url, token="mt_secret")

    send_pulse("cs_retried", 1)

    assert cabinet.wait_confirmations(1)
    calls = api_standin.calls_to("/credits/ack")
    assert len(calls) == 3
    assert {call.path for call in calls} == {f"/machines/{cabinet.settings.machine_id}/credits/ack"}
    assert all(call.body == {"payment_id": "cs_retried"} for call in calls)
    assert all(call.authorization == "Bearer mt_secret" for call in calls)


@pytest.mark.parametrize("final", [404, 400])
def test_a_confirmation_answered_404_or_400_is_dropped(
    make_cabinet, api_standin, send_pulse, final
):
    """GIVEN an API that does not know the payment WHEN it is confirmed THEN one attempt and the
    confirmation is dropped, also after a restart."""
    api_standin.answer("/credits/ack", final)
    cabinet = make_cabinet(api_url=api_standin.url)

    send_pulse("cs_unknown", 1)

    assert cabinet.wait_until(lambda: cabinet._ledger.confirmations() == {"cs_unknown": "dropped"})
    cabinet.stop()
    restarted = make_cabinet(api_url=api_standin.url)
    send_pulse("cs_next", 1)  # confirmations go oldest first: a kept one would go before it

    assert restarted.wait_until(lambda: "cs_next" in restarted._ledger.confirmations())
    calls = api_standin.wait_calls("/credits/ack", 2)
    assert [call.body["payment_id"] for call in calls] == ["cs_unknown", "cs_next"]


def test_heartbeats_go_at_start_and_every_period(make_cabinet, api_standin, send_pulse):
    """GIVEN a heartbeat period WHEN the cabinet runs THEN it posts its MQTT state and credits
    with its token at start and then every period."""
    cabinet = make_cabinet(api_url=api_standin.url, token="mt_secret", heartbeat_seconds=0.3)
    first = api_standin.wait_calls("/heartbeat", 1)[0]
    send_pulse("cs_beat", 2)
    assert cabinet.wait_credits(2)

    later = api_standin.wait_calls("/heartbeat", 3, timeout=5)

    assert first.path == f"/machines/{cabinet.settings.machine_id}/heartbeat"
    assert first.method == "POST" and first.authorization == "Bearer mt_secret"
    assert first.body == {"mqtt_connected": True, "credits_left": 0}
    assert later[-1].body == {"mqtt_connected": True, "credits_left": 2}


def test_failed_heartbeats_never_hold_coins(make_cabinet, api_standin, send_pulse):
    """GIVEN an API failing every heartbeat WHEN a pulse arrives THEN its coins fire, and the
    heartbeats go on."""
    api_standin.answer("/heartbeat", 500)
    cabinet = make_cabinet(api_url=api_standin.url, heartbeat_seconds=0.2)

    send_pulse("cs_coins_first", 3)

    assert cabinet.wait_coins(3)
    assert len(api_standin.wait_calls("/heartbeat", 3)) >= 3


def test_losing_the_broker_is_told_to_the_api_at_once(make_cabinet, api_standin, fresh_broker):
    """GIVEN a long heartbeat period WHEN the broker goes away THEN a heartbeat saying MQTT is
    down goes out at once, and one saying it is up when it is back."""
    cabinet = make_cabinet(on=fresh_broker, api_url=api_standin.url, heartbeat_seconds=3600)
    api_standin.wait_calls("/heartbeat", 1)

    fresh_broker.stop()
    down = api_standin.wait_calls("/heartbeat", 2)[-1]
    fresh_broker.start()
    assert cabinet.wait_ready(timeout=10)
    up = api_standin.wait_calls("/heartbeat", 3)[-1]

    assert down.body["mqtt_connected"] is False
    assert up.body["mqtt_connected"] is True


def test_the_api_sees_the_cabinet_online(make_cabinet, serve_api, client, machine):
    """GIVEN a cabinet with its token WHEN it has started THEN the API shows it online."""
    cabinet = make_cabinet(api_url=serve_api(), token=machine.token)

    assert cabinet.wait_until(lambda: cabinet.heartbeats_sent >= 1)
    state = client.get(f"/machines/{machine.machine_id}", headers=machine.auth).json
    assert state["presence"] == "online"


# --- game over ---------------------------------------------------------------------------------


def test_a_game_over_from_the_game_reaches_the_api_and_the_broker(
    make_cabinet, serve_api, pay, subscribe, client, machine
):
    """GIVEN 2 credits WHEN the game posts /game-over locally THEN the API and MQTT see it."""
    cabinet = make_cabinet(api_url=serve_api(), token=machine.token)
    pay("cs_game", cents=100)
    assert cabinet.wait_credits(2)
    gameovers = subscribe(f"{TOPIC_PREFIX}/{machine.machine_id}/gameover")

    status, answer = post_local(cabinet.http_port, "/game-over")

    assert status == 202
    assert answer == {"status": "accepted", "used_credit": True, "credits_left": 1}
    assert cabinet.wait_game_overs_sent(1)
    [message] = gameovers.wait_for(1)
    assert message.payload["machineId"] == machine.machine_id
    assert message.payload["status"] == "game_over"
    state = client.get(f"/machines/{machine.machine_id}", headers=machine.auth).json
    assert state["credits"] == {"granted": 2, "used": 1, "left": 1}
    assert cabinet.credits == 1
    assert cabinet.game_over_attempts == 1


def test_a_game_over_is_retried_until_the_api_answers(make_cabinet, serve_api, subscribe, machine):
    """GIVEN the API down WHEN a game ends THEN the cabinet retries until it comes up."""
    port = free_loopback_port()
    cabinet = make_cabinet(api_url=f"http://127.0.0.1:{port}", token=machine.token)
    gameovers = subscribe(f"{TOPIC_PREFIX}/{machine.machine_id}/gameover")

    cabinet.game_over()
    assert not cabinet.wait_game_overs_sent(1, timeout=0.4)
    serve_api(port)

    assert cabinet.wait_game_overs_sent(1, timeout=5)
    assert cabinet.game_over_attempts > 1
    assert gameovers.wait_for(1)[0].payload["status"] == "game_over"


def test_a_game_over_the_api_refuses_is_not_retried(make_cabinet, serve_api, machine):
    """GIVEN a wrong token WHEN a game ends THEN one attempt, kept as rejected."""
    cabinet = make_cabinet(api_url=serve_api(), token="not-the-token")

    cabinet.game_over()

    assert cabinet.wait_until(lambda: cabinet.game_over_attempts == 1)
    assert cabinet.game_overs_sent == 0
    assert not cabinet.wait_until(lambda: cabinet.game_over_attempts > 1, timeout=0.3)


# --- games that cost more than one credit ------------------------------------------------------


@pytest.fixture
def configure(client, machine: Machine) -> Callable[..., None]:
    """Set the machine's credits per game as the operator does."""

    def set_credits_per_game(credits: int) -> None:
        path = f"/machines/{machine.machine_id}"
        answer = client.patch(path, json={"credits_per_game": credits}, headers=ADMIN)
        assert answer.status_code == 200

    return set_credits_per_game


@pytest.fixture
def grant(client, machine: Machine) -> Callable[..., None]:
    """Grant credits by hand, as the operator does: the API publishes their coinpulse."""

    def give(credits: int) -> None:
        path = f"/machines/{machine.machine_id}/credits"
        answer = client.post(path, json={"credits": credits, "reason": "test"}, headers=ADMIN)
        assert answer.status_code == 201

    return give


def test_the_cabinet_counts_a_game_at_the_cost_its_heartbeat_was_told(
    make_cabinet, serve_api, configure, grant, machine
):
    """GIVEN a machine of 2 credits a game WHEN the cabinet's heartbeat was answered and a game
    ends with 3 credits THEN the cabinet uses 2 for it, not 1."""
    configure(2)
    cabinet = make_cabinet(api_url=serve_api(), token=machine.token, heartbeat_seconds=3600)
    assert cabinet.wait_until(lambda: cabinet.heartbeats_sent >= 1)
    grant(3)
    assert cabinet.wait_credits(3)

    status, answer = post_local(cabinet.http_port, "/game-over")

    assert status == 202
    assert answer == {"status": "accepted", "used_credit": True, "credits_left": 1}


def test_a_new_credits_per_game_never_sets_the_cabinet_and_the_api_apart(
    make_cabinet, serve_api, configure, grant, client, machine
):
    """GIVEN 3 credits a game, 5 credits and two games played (2 left, one game without credit)
    WHEN the operator makes it 1 a game and a game ends before the next heartbeat THEN the API
    counts that game as the cabinet did (without credit, 2 left), and the game after it uses 1
    credit on both sides."""
    configure(3)
    cabinet = make_cabinet(api_url=serve_api(), token=machine.token, heartbeat_seconds=3600)
    assert cabinet.wait_until(lambda: cabinet.heartbeats_sent >= 1)
    grant(5)
    assert cabinet.wait_credits(5)

    def game_ends() -> tuple[dict[str, Any], dict[str, Any]]:
        """Return what the cabinet answered and, once the API has it, the API's counts."""
        sent = cabinet.game_overs_sent
        status, answer = post_local(cabinet.http_port, "/game-over")
        assert status == 202 and cabinet.wait_game_overs_sent(sent + 1)
        state = client.get(f"/machines/{machine.machine_id}", headers=machine.auth).json
        counted = {"left": state["credits"]["left"], "without": state["games_without_credit"]}
        return {"used": answer["used_credit"], "left": answer["credits_left"]}, counted

    played = [game_ends(), game_ends()]
    configure(1)
    played += [game_ends(), game_ends()]

    assert played == [
        ({"used": True, "left": 2}, {"left": 2, "without": 0}),
        ({"used": False, "left": 2}, {"left": 2, "without": 1}),
        ({"used": False, "left": 2}, {"left": 2, "without": 2}),
        ({"used": True, "left": 1}, {"left": 1, "without": 2}),
    ]
    assert cabinet.heartbeats_sent == 1
    assert cabinet.credits == 1


def test_a_game_over_tells_the_api_what_the_game_cost(make_cabinet, api_standin):
    """GIVEN a cabinet never told otherwise WHEN a game ends THEN its game over says the game
    cost 1 credit."""
    cabinet = make_cabinet(api_url=api_standin.url)

    cabinet.game_over()

    [call] = api_standin.wait_calls("/gameover", 1)
    assert call.body == {"machine_id": cabinet.settings.machine_id, "credits_per_game": 1}


def test_a_game_over_queued_before_the_cost_was_recorded_is_sent_without_it(tmp_path):
    """GIVEN a state file from before game overs recorded their cost, one game over queued WHEN
    the ledger opens it THEN that game over has no cost (the API counts it with the machine's),
    and the next one records what it cost."""
    path = tmp_path / "cabinet.db"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(
            "CREATE TABLE game_overs (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " ended_at TEXT NOT NULL, source TEXT NOT NULL, used_credit INTEGER NOT NULL,"
            " status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,"
            " sent_at TEXT);"
            "INSERT INTO game_overs (ended_at, source, used_credit)"
            " VALUES ('2026-11-22T10:00:00.000000Z', 'call', 0);"
        )
    ledger = CabinetLedger(path)
    ledger.keep_credits_per_game(2)

    new = ledger.add_game_over("call")
    old = ledger.next_game_over()
    ledger.finish_game_over(old.id, status="sent", attempts=1)

    assert (old.id, old.credits_per_game) == (1, None)
    assert new.credits_per_game == 2
    assert ledger.next_game_over() == new
    ledger.close()


def test_sigusr1_means_a_game_ended(make_cabinet, send_pulse):
    """GIVEN the CLI's signal handlers WHEN SIGUSR1 arrives THEN one credit is used."""
    cabinet = make_cabinet()
    send_pulse("cs_sig", 2)
    assert cabinet.wait_credits(2)
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGINT, signal.SIGTERM)}
    done = threading.Event()
    try:
        install_signal_handlers(cabinet, done)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert cabinet.wait_until(lambda: cabinet.credits == 1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert done.wait(2)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "rebound.example.com:8765"},
        {"Origin": "https://shop.example.com"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
    ids=["dns_rebound_host", "another_origin", "null_origin", "cross_site_fetch"],
)
def test_a_web_page_cannot_spend_the_cabinets_credits(make_cabinet, send_pulse, headers):
    """GIVEN a credit WHEN a web page shown on the cabinet posts /game-over THEN 403 and the
    credit stays."""
    cabinet = make_cabinet()
    send_pulse("cs_keep_it", 1)
    assert cabinet.wait_credits(1)

    status, answer = post_local(cabinet.http_port, "/game-over", headers)

    assert (status, answer["code"]) == (403, "forbidden")
    assert cabinet.credits == 1


def test_programs_on_the_cabinet_may_use_its_door(make_cabinet, send_pulse):
    """GIVEN a credit WHEN a local program posts /game-over by a loopback name, from the door's
    own origin THEN the game over counts."""
    cabinet = make_cabinet()
    send_pulse("cs_local", 1)
    assert cabinet.wait_credits(1)
    port = cabinet.http_port

    status, _ = post_local(
        port, "/game-over", {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
    )

    assert status == 202
    assert cabinet.credits == 0


FETCH_PAGE = """<!doctype html>
<title>A page shown on the cabinet</title>
<h1>Free credits!</h1>
<p id="result">sending…</p>
<script>
  // no-cors: what any page may send to any address without asking; its answer is opaque.
  fetch("http://127.0.0.1:{door}/game-over", {{
    method: "POST", mode: "no-cors", body: "{{}}", headers: {{"Content-Type": "application/json"}}
  }}).then(
    (answer) => {{ document.getElementById("result").textContent = "fetch done: " + answer.type; }},
    (error) => {{ document.getElementById("result").textContent = "fetch done: " + error; }},
  );
</script>
"""
FORM_PAGE = """<!doctype html>
<title>A page shown on the cabinet</title>
<form id="spend" method="post" action="http://127.0.0.1:{door}/game-over" enctype="text/plain">
  <input name='{{"x":"' value='"}}'>
</form>
<script>document.getElementById("spend").submit();</script>
"""


@pytest.mark.parametrize("page_host", ["localhost", "127.0.0.1"], ids=["cross_site", "other_port"])
def test_a_page_in_a_real_browser_cannot_spend_the_cabinets_credits(
    make_cabinet, send_pulse, browser, caplog, page_host
):
    """GIVEN a cabinet with one credit and a web page from another origin WHEN Chromium runs
    the page's no-cors fetch and its auto-submitting form to the door's /game-over THEN the door
    answers 403 to both, the browser shows the 403, and the credit stays."""
    cabinet = make_cabinet()
    send_pulse("cs_browser", 1)
    assert cabinet.wait_credits(1)
    door = cabinet.http_port
    pages = PageServer(
        {"/fetch.html": FETCH_PAGE.format(door=door), "/form.html": FORM_PAGE.format(door=door)}
    )
    try:
        browser.open(pages.url("/fetch.html", host=page_host))
        assert browser.wait_for_text("fetch done")
        fetch_text = browser.text()
        fetched = browser.screenshot(f"fetch-from-{page_host}")
        browser.open(pages.url("/form.html", host=page_host))
        assert browser.wait_for_text("only programs on this cabinet may call it")
        refused = browser.screenshot(f"form-from-{page_host}")
    finally:
        pages.close()

    # An opaque answer: the browser sent the request and let the page read nothing of it.
    assert "fetch done: opaque" in fetch_text
    assert browser.driver.current_url.startswith(f"http://127.0.0.1:{door}/game-over")
    assert '"code": "forbidden"' in browser.text()
    refusals = [r for r in caplog.records if r.getMessage() == "local_http_refused"]
    assert len(refusals) == 2, [r.__dict__.get("fields") for r in refusals]
    assert cabinet.credits == 1
    assert get_local(door, "/credits")["credits"] == 1
    assert fetched.stat().st_size > 0 and refused.stat().st_size > 0


# --- display and actions -----------------------------------------------------------------------


def test_the_idle_screen_shows_the_qr_code_of_the_machines_link(
    make_cabinet, serve_api, client, machine
):
    """GIVEN no credits WHEN the cabinet starts THEN it draws the QR code of the API's link."""
    link = client.post(
        "/create-payment-link", json={"machine_id": machine.machine_id}, headers=machine.auth
    ).json["url"]
    screen = io.StringIO()

    cabinet = make_cabinet(api_url=serve_api(), token=machine.token, qr_url=None, out=screen)

    assert cabinet.wait_payment_url()
    assert cabinet.payment_url == link
    assert cabinet.wait_until(lambda: "Scan to pay" in screen.getvalue())
    drawn = screen.getvalue()
    assert QR_BLOCKS & set(drawn)
    assert qr_text(link) in drawn


def test_the_gpio_action_without_gpiozero_says_what_to_install():
    """GIVEN no gpiozero WHEN the gpio action is chosen THEN a clear error names it."""
    if importlib.util.find_spec("gpiozero") is not None:
        pytest.skip("gpiozero is installed here")

    with pytest.raises(CoinActionError, match="gpiozero"):
        load_coin_action("gpio", pin=17)


def test_the_gpio_action_pulses_the_pin_once_per_coin():
    """GIVEN a pin WHEN a coin fires THEN the line goes on then off, and is released at close."""
    calls: list[str] = []

    class Pin:
        def on(self) -> None:
            calls.append("on")

        def off(self) -> None:
            calls.append("off")

        def close(self) -> None:
            calls.append("close")

    action = GpioCoinAction(17, pulse_ms=1, gap_ms=1, device=Pin())
    action(Coin("cs_x", 1, 2))
    action(Coin("cs_x", 2, 2))
    action.close()

    assert calls == ["on", "off", "on", "off", "close"]


def test_another_login_using_the_cabinets_old_client_id_cannot_wipe_its_session(
    make_cabinet, pay, machine, broker
):
    """GIVEN a cabinet that is off while a player pays WHEN someone connects with the cabinet's
    machine id as client id and a clean session (as any broker login could, when the id was
    just cabinet-<machine id>) THEN the cabinet still gets the queued pulse when it is back:
    its client id is random, made once and kept in its state file."""
    cabinet = make_cabinet()
    own_id = cabinet.client_id
    cabinet.stop()
    answer = pay("cs_while_away", cents=100)
    intruder = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"cabinet-{machine.machine_id}"
    )
    intruder.username_pw_set(broker.username, broker.password)
    intruder.tls_set_context(broker.ssl_context())
    intruder.connect(broker.host, broker.port)
    intruder.loop_start()
    time.sleep(0.3)
    intruder.disconnect()
    intruder.loop_stop()

    back = make_cabinet()

    assert answer.status_code == 200
    assert own_id.startswith(f"cabinet-{machine.machine_id}-") and len(own_id) > len(
        f"cabinet-{machine.machine_id}-"
    )
    assert back.wait_credits(2)
    assert back.client_id == own_id  # kept across restarts (and broker password changes)


@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")
def test_a_link_that_died_silently_is_out_of_order_within_the_keepalive(make_cabinet, fresh_broker):
    """GIVEN a connected cabinet WHEN its broker freezes (no error, no FIN, like a Wi-Fi drop)
    THEN within one and a half keepalives it hides the QR code and says out of order."""
    cabinet = make_cabinet(on=fresh_broker, keepalive=2)
    assert cabinet.out_of_order_reason() is None

    fresh_broker.freeze()
    try:
        deadline = time.monotonic() + 8
        while cabinet.out_of_order_reason() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        reason = cabinet.out_of_order_reason()
    finally:
        fresh_broker.thaw()

    assert reason is not None
    assert get_local(cabinet.http_port, "/credits")["payment_url"] is None


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain", None],
)
def test_a_post_a_plain_html_form_could_send_spends_nothing(make_cabinet, send_pulse, content_type):
    """GIVEN credits WHEN the door gets a POST with a content type an HTML form can send (and
    no Origin, as an old browser or a form on a same-origin page would) THEN 415, no credit."""
    cabinet = make_cabinet()
    send_pulse("cs_form", credits=1)
    assert cabinet.wait_credits(1)
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(
        f"http://127.0.0.1:{cabinet.http_port}/game-over", data=b"x=1", method="POST"
    )
    for name, value in headers.items():
        request.add_header(name, value)
    if content_type is None:
        request.remove_header("Content-type")

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)

    assert refused.value.code == 415
    refused.value.close()
    assert cabinet.credits == 1
