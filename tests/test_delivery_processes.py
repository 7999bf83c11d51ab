"""Delivery that never waits on Stripe, tried against real processes.

`python app.py` runs as a process beside a real TLS Mosquitto; the faults are real: SIGKILL in
the middle of a publish, SIGTERM with a request in flight, a broker frozen with SIGSTOP, two
API processes on one store, a store file made immutable.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.api_process import ROOT, ApiProcess, flask_command
from tests.support.app import TOPIC_PREFIX, WEBHOOK_SECRET, app_environment
from tests.support.stripe_standin import checkout_session

COINPULSE = f"{TOPIC_PREFIX}/cab001/coinpulse"
# A short PUBACK timeout gives an 8 s lease (2 x (2 x 1 + 0.5) + 3) and a relay every second,
# so a stranded grant is picked up within seconds instead of half a minute.
FAST = {"MQTT_PUBACK_TIMEOUT": "0.5", "DELIVERY_RETRY_SECONDS": "1"}


@pytest.fixture
def env(fresh_broker, stripe_standin, tmp_path) -> dict[str, str]:
    return app_environment(fresh_broker, stripe_standin, tmp_path / "arcade.db", **FAST)


@pytest.fixture
def start_api(env, tmp_path) -> Iterator[Callable[..., ApiProcess]]:
    started: list[ApiProcess] = []

    def start(*, port: int | None = None, **overrides: str) -> ApiProcess:
        log = tmp_path / f"api-{len(started)}.log"
        api = ApiProcess({**env, **overrides}, log, port=port).start()
        started.append(api)
        return api

    yield start
    for api in started:
        api.close()


@pytest.fixture
def machine(env) -> str:
    """Register cab001 with the real CLI and return its token."""
    added = flask_command(env, "machines", "add", "cab001")
    assert added.returncode == 0, added.stderr
    return json.loads(added.stdout.splitlines()[-1])["token"]


def make_link(api: ApiProcess, token: str) -> str:
    return api.payment_link("cab001", token)["payment_link_id"]


def paid(session_id: str, link_id: str) -> dict:
    return checkout_session(
        id=session_id, payment_link=link_id, amount_subtotal=100, payment_intent=f"pi_{session_id}"
    )


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def statuses(api: ApiProcess, token: str) -> dict[str, str]:
    return {p["id"]: p["status"] for p in api.get_json("/machines/cab001", token)["payments"]}


# paho leaves the socket of a connection to a frozen broker to the garbage collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")


def test_a_grant_whose_holder_was_killed_is_delivered_by_the_relay(
    start_api, machine, fresh_broker, subscribe
):
    """GIVEN a frozen broker and a paid webhook in flight WHEN the API is killed -9, broker and
    API restart and Stripe retries at once THEN the retry is 200 and the relay delivers."""
    api = start_api()
    link_id = make_link(api, machine)
    fresh_broker.freeze()
    in_flight = threading.Thread(
        target=lambda: _quietly(
            lambda: api.webhook(
                "checkout.session.completed", paid("cs_killed", link_id), WEBHOOK_SECRET
            )
        ),
        daemon=True,
    )
    in_flight.start()
    time.sleep(0.7)
    api.kill()
    fresh_broker.thaw()
    fresh_broker.restart()
    subscriber = subscribe(COINPULSE, on=fresh_broker)
    again = start_api(port=api.port)

    status, answer = again.webhook(
        "checkout.session.completed", paid("cs_killed", link_id), WEBHOOK_SECRET
    )

    assert status == 200, answer
    assert wait_until(lambda: bool(subscriber.messages))
    assert {m.payload["paymentId"] for m in subscriber.messages} == {"cs_killed"}
    assert wait_until(lambda: statuses(again, machine) == {"cs_killed": "delivered"})


def test_sigterm_answers_the_request_in_flight_then_exits_0(
    start_api, machine, fresh_broker, subscribe
):
    """GIVEN a webhook waiting on a frozen broker WHEN SIGTERM arrives THEN the request still
    gets its answer and the process exits 0; the grant stays stored for the relay."""
    api = start_api()
    link_id = make_link(api, machine)
    fresh_broker.freeze()
    answers: list[int] = []
    in_flight = threading.Thread(
        target=lambda: answers.append(
            api.webhook("checkout.session.completed", paid("cs_sigterm", link_id), WEBHOOK_SECRET)[
                0
            ]
        )
    )
    in_flight.start()
    time.sleep(0.5)

    api.terminate()
    in_flight.join(timeout=30)
    code = api.wait()

    assert answers == [503]
    assert code == 0
    assert api.log_events("stopping")[0]["signal"] == "SIGTERM"
    fresh_broker.thaw()
    subscriber = subscribe(COINPULSE, on=fresh_broker)
    start_api(port=api.port)
    assert wait_until(lambda: bool(subscriber.messages))
    assert subscriber.messages[0].payload["paymentId"] == "cs_sigterm"


def test_a_frozen_broker_strands_no_grant_of_a_burst(start_api, machine, fresh_broker):
    """GIVEN a frozen broker WHEN 12 paid webhooks arrive at once THEN each is answered, and
    once the broker is back the relay delivers all 12 without any Stripe retry."""
    api = start_api()
    link_id = make_link(api, machine)
    fresh_broker.freeze()
    codes: list[int] = []

    def pay(number: int) -> None:
        codes.append(
            api.webhook(
                "checkout.session.completed", paid(f"cs_burst_{number}", link_id), WEBHOOK_SECRET
            )[0]
        )

    threads = [threading.Thread(target=pay, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    fresh_broker.thaw()

    assert len(codes) == 12 and set(codes) <= {200, 503}
    wanted = {f"cs_burst_{n}" for n in range(12)}
    assert wait_until(lambda: set(statuses(api, machine).values()) == {"delivered"}, timeout=40)
    assert set(statuses(api, machine)) == wanted


def test_two_api_processes_on_one_store_deliver_each_grant_once(
    start_api, machine, fresh_broker, subscribe
):
    """GIVEN two API processes on one SQLite file and five grants stored while the broker was
    down WHEN the broker returns THEN both relays run and each grant is published once."""
    first = start_api()
    link_id = make_link(first, machine)
    start_api()
    fresh_broker.stop()
    for number in range(5):
        status, _ = first.webhook(
            "checkout.session.completed", paid(f"cs_shared_{number}", link_id), WEBHOOK_SECRET
        )
        assert status == 503
    fresh_broker.start()
    subscriber = subscribe(COINPULSE, on=fresh_broker)

    assert wait_until(lambda: set(statuses(first, machine).values()) == {"delivered"}, timeout=40)
    time.sleep(1.5)  # both relays have ticked again since
    paid_ids = [m.payload["paymentId"] for m in subscriber.messages]
    assert sorted(paid_ids) == [f"cs_shared_{n}" for n in range(5)]


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr (e2fsprogs)")
def test_a_store_that_failed_works_again_once_the_cause_is_gone(
    start_api, machine, env, tmp_path, subscribe, fresh_broker
):
    """GIVEN the SQLite file made immutable before the API starts WHEN a webhook comes THEN
    503 naming the store; made writable again, the next webhook is served, with no restart."""
    api = start_api()
    link_id = make_link(api, machine)
    api.terminate()
    api.wait()
    database = tmp_path / "arcade.db"
    files = [p for p in tmp_path.glob("arcade.db*") if p.is_file()]
    subprocess.run(["chattr", "+i", *map(str, files)], check=True)
    try:
        api = start_api(port=api.port)
        subscriber = subscribe(COINPULSE, on=fresh_broker)
        refused = api.webhook("checkout.session.completed", paid("cs_ro", link_id), WEBHOOK_SECRET)
    finally:
        subprocess.run(["chattr", "-i", *map(str, files)], check=True)

    served = api.webhook("checkout.session.completed", paid("cs_ro", link_id), WEBHOOK_SECRET)

    assert refused[0] == 503 and refused[1]["code"] == "store_unavailable"
    assert served[0] == 200, served
    assert subscriber.wait_for(1)[0].payload["paymentId"] == "cs_ro"
    assert database.exists()


def _quietly(call: Callable[[], object]) -> None:
    # The process is killed mid-answer: the connection may drop (OSError) or close partway
    # through the body (http.client.IncompleteRead, an HTTPException).
    with contextlib.suppress(OSError, http.client.HTTPException):
        call()


def test_idle_connections_do_not_keep_stripe_out(start_api, machine, subscribe, fresh_broker):
    """GIVEN 40 connections that each sent half a request line and went quiet WHEN Stripe posts
    a paid webhook THEN it is answered 200 and delivered at once."""
    api = start_api()
    link_id = make_link(api, machine)
    subscriber = subscribe(COINPULSE, on=fresh_broker)
    idle = []
    for _ in range(40):
        sock = socket.create_connection(("127.0.0.1", api.port))
        sock.sendall(b"POST /webh")
        idle.append(sock)
    try:
        status, answer = api.webhook(
            "checkout.session.completed", paid("cs_past_idle", link_id), WEBHOOK_SECRET, timeout=10
        )
    finally:
        for sock in idle:
            sock.close()

    assert (status, answer["result"]) == (200, "delivered")
    assert subscriber.wait_for(1)[0].payload["paymentId"] == "cs_past_idle"


def test_a_stalled_client_does_not_keep_sigterm_from_stopping_the_server(start_api):
    """GIVEN a client that sent headers promising 100 bytes and one byte of body WHEN SIGTERM
    arrives THEN the process still exits 0 (the stalled request was never received whole)."""
    api = start_api()
    stalled = socket.create_connection(("127.0.0.1", api.port))
    stalled.sendall(
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    time.sleep(0.2)

    api.terminate()
    try:
        code = api.wait(timeout=20)
    finally:
        stalled.close()

    assert code == 0


def test_a_port_in_use_is_one_sentence_and_exit_1(env, tmp_path):
    """GIVEN the port taken WHEN python app.py starts THEN one line names the address and the
    process exits 1, with no traceback."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        done = subprocess.run(
            [sys.executable, "app.py"],
            cwd=ROOT,
            env={**os.environ, **env, "PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        taken.close()

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [failed] = [
        json.loads(line)
        for line in done.stderr.splitlines()
        if line.startswith("{") and '"startup_failed"' in line
    ]
    assert failed["error"].startswith(f"cannot listen on 127.0.0.1:{port}")


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr (e2fsprogs)")
def test_a_store_whose_log_file_was_made_read_only_works_on_the_first_request_after(
    start_api, machine, tmp_path, subscribe, fresh_broker
):
    """GIVEN a running API whose SQLite write-ahead log is made immutable WHEN a webhook comes
    THEN 503; the first webhook after the file is writable again is served."""
    api = start_api()
    link_id = make_link(api, machine)
    assert (
        api.webhook("checkout.session.completed", paid("cs_before", link_id), WEBHOOK_SECRET)[0]
        == 200
    )
    wal = tmp_path / "arcade.db-wal"
    subscriber = subscribe(COINPULSE, on=fresh_broker)
    subprocess.run(["chattr", "+i", str(wal)], check=True)
    try:
        refused = api.webhook("checkout.session.completed", paid("cs_wal", link_id), WEBHOOK_SECRET)
    finally:
        subprocess.run(["chattr", "-i", str(wal)], check=True)

    served = api.webhook("checkout.session.completed", paid("cs_wal", link_id), WEBHOOK_SECRET)

    assert (refused[0], refused[1]["code"]) == (503, "store_unavailable")
    assert (served[0], served[1]["result"]) == (200, "delivered")
    assert subscriber.wait_for(1)[0].payload["paymentId"] == "cs_wal"


def test_a_kill_the_moment_the_coinpulse_is_out_leaves_one_grant_delivered(
    start_api, machine, fresh_broker
):
    """GIVEN a paid webhook WHEN the API is killed -9 the instant its coinpulse reaches a
    subscriber (between the PUBACK and recording it, or just after) THEN after a restart the
    payment ends delivered, and every copy the cabinet sees is the same grant."""
    api = start_api()
    link_id = make_link(api, machine)
    copies: list[bytes] = []
    arrived = threading.Event()

    def on_message(_client, _userdata, message) -> None:
        if not arrived.is_set():
            api.kill()
            arrived.set()
        copies.append(bytes(message.payload))

    watcher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    watcher.username_pw_set(fresh_broker.username, fresh_broker.password)
    watcher.tls_set_context(fresh_broker.ssl_context())
    watcher.on_message = on_message
    watcher.connect(fresh_broker.host, fresh_broker.port)
    watcher.subscribe(COINPULSE, qos=1)
    watcher.loop_start()
    time.sleep(0.3)
    try:
        threading.Thread(
            target=lambda: _quietly(
                lambda: api.webhook(
                    "checkout.session.completed", paid("cs_cut", link_id), WEBHOOK_SECRET
                )
            ),
            daemon=True,
        ).start()
        assert arrived.wait(10)
        again = start_api(port=api.port)

        assert wait_until(lambda: statuses(again, machine) == {"cs_cut": "delivered"}, timeout=30)
        time.sleep(0.5)
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    assert 1 <= len(copies) <= 2
    assert len(set(copies)) == 1
    assert json.loads(copies[0])["paymentId"] == "cs_cut"


def test_a_body_over_256_kib_is_refused_before_it_is_all_sent(start_api):
    """GIVEN a request announcing 200 MB WHEN only its first kilobytes have been sent THEN the
    server has already answered 413 (nothing is spooled to disk)."""
    api = start_api()
    sock = socket.create_connection(("127.0.0.1", api.port))
    sock.settimeout(10)
    try:
        sock.sendall(
            b"POST /gameover HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000000\r\n\r\n" + b"{" * 4096
        )
        answer = sock.recv(4096)
    finally:
        sock.close()

    assert answer.startswith(b"HTTP/1.1 413")
