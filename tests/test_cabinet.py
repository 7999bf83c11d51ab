"""The cabinet client against the real TLS broker and the real API over HTTP."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from flask import Flask
from paho.mqtt.enums import CallbackAPIVersion
from werkzeug.serving import make_server

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
from tests.broker import TlsBroker, free_loopback_port
from tests.conftest import TOPIC_PREFIX
from tests.conftest import Cabinet as Machine
from tests.stripe_standin import checkout_session

FAST_RETRY = RetryPolicy(first_delay=0.05, max_delay=0.2)
QR_BLOCKS = set("█▀▄")


class RecordingAction:
    """A coin action that remembers every coin it was asked to insert."""

    def __init__(self) -> None:
        self.coins: list[Coin] = []

    def __call__(self, coin: Coin) -> None:
        self.coins.append(coin)


@pytest.fixture
def machine(register: Callable[..., Machine]) -> Machine:
    """Register a machine with an id of its own, so no broker session is shared."""
    return register(f"cab-{uuid.uuid4().hex[:10]}")


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
def make_cabinet(
    broker: TlsBroker, machine: Machine, tmp_path: Path
) -> Iterator[Callable[..., Cabinet]]:
    """Start cabinets for the test machine on the shared broker, stopped after the test."""
    started: list[Cabinet] = []

    def start(*, action: Any = None, out: io.StringIO | None = None, **changes: Any) -> Cabinet:
        settings = CabinetSettings.from_env(
            machine.machine_id,
            broker.env(),
            token=machine.token,
            api_url="http://127.0.0.1:9",  # nothing listens: tests that need the API say so
            state_file=tmp_path / "cabinet.db",
            http_port=0,
            qr_url="https://buy.stripe.com/test_fixed",
            retry=FAST_RETRY,
        )
        cabinet = Cabinet(
            replace(settings, **changes), coin_action=action or RecordingAction(), out=out
        )
        cabinet.start()
        started.append(cabinet)
        assert cabinet.wait_ready(), "the cabinet did not connect and subscribe"
        return cabinet

    yield start
    for cabinet in started:
        cabinet.stop()


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
def publish(broker: TlsBroker) -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """Publish JSON at QoS 1 with our own paho TLS client, waiting for each PUBACK."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4()}"
    )
    client.username_pw_set(broker.username, broker.password)
    client.tls_set_context(broker.ssl_context())
    client.connect(broker.host, broker.port)
    client.loop_start()

    def send(topic: str, payload: dict[str, Any]) -> None:
        info = client.publish(topic, json.dumps(payload), qos=1)
        info.wait_for_publish(timeout=5)
        assert info.is_published()

    yield send
    client.disconnect()
    client.loop_stop()


def pulse(machine: Machine, payment_id: str, credits: int) -> dict[str, Any]:
    return {
        "machineId": machine.machine_id,
        "credits": credits,
        "timestamp": "2026-11-22T10:00:00Z",
        "paymentId": payment_id,
        "amount": credits * 50,
        "currency": "usd",
    }


def post_local(port: int, path: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


# --- credits in ------------------------------------------------------------------------------


def test_pulses_published_while_offline_arrive_on_reconnect(make_cabinet, pay, machine):
    """GIVEN a cabinet that connected once WHEN a player pays while it is off THEN it gets them."""
    make_cabinet().stop()

    answer = pay("cs_offline", cents=150)
    cabinet = make_cabinet()

    assert answer.status_code == 200
    assert cabinet.wait_credits(3)
    assert cabinet.credits == 3


def test_a_repeated_pulse_adds_credits_once_also_after_a_restart(make_cabinet, publish, machine):
    """GIVEN a pulse already counted WHEN the same pulse comes again THEN no credit is added."""
    topic = f"{TOPIC_PREFIX}/{machine.machine_id}/coinpulse"
    cabinet = make_cabinet()

    publish(topic, pulse(machine, "cs_same", 3))
    publish(topic, pulse(machine, "cs_same", 3))
    publish(topic, pulse(machine, "cs_marker", 1))  # in order: when it lands, both came
    assert cabinet.wait_credits(4)
    assert cabinet.wait_coins(4)
    cabinet.stop()
    restarted = make_cabinet()
    publish(topic, pulse(machine, "cs_same", 3))
    publish(topic, pulse(machine, "cs_after", 2))

    assert restarted.wait_credits(6)
    assert restarted.wait_coins(2)
    assert restarted.credits == 6
    assert [coin.payment_id for coin in restarted.coin_action.coins] == ["cs_after"] * 2


def test_pulses_for_another_machine_or_malformed_are_ignored(make_cabinet, publish, machine):
    """GIVEN a running cabinet WHEN junk arrives on its topic THEN it adds nothing and goes on."""
    topic = f"{TOPIC_PREFIX}/{machine.machine_id}/coinpulse"
    cabinet = make_cabinet()

    publish(topic, {**pulse(machine, "cs_other", 5), "machineId": "someone-else"})
    publish(topic, {**pulse(machine, "cs_zero", 0)})
    publish(topic, {"not": "a pulse"})
    publish(topic, pulse(machine, "cs_good", 1))

    assert cabinet.wait_credits(1)
    assert cabinet.credits == 1


def test_the_coin_action_runs_once_per_credit(make_cabinet, pay, machine, tmp_path):
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


# --- game over -------------------------------------------------------------------------------


def test_a_game_over_from_the_game_reaches_the_api_and_the_broker(
    make_cabinet, serve_api, pay, subscribe, client, machine
):
    """GIVEN 2 credits WHEN the game posts /game-over locally THEN the API and MQTT see it."""
    cabinet = make_cabinet(api_url=serve_api())
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
    cabinet = make_cabinet(api_url=f"http://127.0.0.1:{port}")
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


def test_sigusr1_means_a_game_ended(make_cabinet, publish, machine):
    """GIVEN the CLI's signal handlers WHEN SIGUSR1 arrives THEN one credit is used."""
    cabinet = make_cabinet()
    publish(f"{TOPIC_PREFIX}/{machine.machine_id}/coinpulse", pulse(machine, "cs_sig", 2))
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


# --- display and actions ---------------------------------------------------------------------


def test_the_idle_screen_shows_the_qr_code_of_the_machines_link(
    make_cabinet, serve_api, client, machine
):
    """GIVEN no credits WHEN the cabinet starts THEN it draws the QR code of the API's link."""
    link = client.post(
        "/create-payment-link", json={"machine_id": machine.machine_id}, headers=machine.auth
    ).json["url"]
    screen = io.StringIO()

    cabinet = make_cabinet(api_url=serve_api(), qr_url=None, out=screen)

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
