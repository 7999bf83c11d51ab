"""A real ``python -m arcade.cabinet`` process for tests: on the test TLS broker, its door on a
free loopback port, its log lines readable, signed pulses published as the API would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion

from arcade import wire
from tests.support.broker import TlsBroker, free_loopback_port
from tests.support.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent.parent
MACHINE = "cab-door"
NOBODY = "http://127.0.0.1:9"  # nothing listens there
TOKEN = "mt_door_token_not_for_anyone_else"


class RunningCabinet:
    """``python -m arcade.cabinet`` for MACHINE: its door's port, its log, signed pulses in."""

    def __init__(
        self,
        broker: TlsBroker,
        folder: Path,
        *,
        api_url: str = NOBODY,
        pin_key: bool = True,
        ready: bool = True,
    ):
        """Start it; with ``ready`` wait until its door says it is connected.

        ``pin_key`` False: no PULSE_PUBLIC_KEY, so it fetches the key from ``api_url``.
        """
        self.key = Ed25519PrivateKey.generate()
        self.port = free_loopback_port()
        self.log_path = folder / "cabinet.log"
        public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            **broker.env(),
            "CABINET_TOKEN": TOKEN,
        }
        if pin_key:
            env["PULSE_PUBLIC_KEY"] = wire.b64url(public)
        command = [sys.executable, "-m", "arcade.cabinet", "--machine", MACHINE]
        command += ["--api-url", api_url, "--http-port", str(self.port)]
        command += ["--qr-url", "https://buy.stripe.com/test_door"]
        command += ["--state-file", str(folder / "cabinet.db"), "--retry-max-delay", "0.5"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.publisher = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"door-{uuid.uuid4()}"
        )
        self.publisher.username_pw_set(broker.username, broker.password)
        self.publisher.tls_set_context(broker.ssl_context())
        self.publisher.connect(broker.host, broker.port)
        self.publisher.loop_start()
        wait_until(lambda: self._answers(ready), timeout=20)

    def _answers(self, connected: bool) -> bool:
        try:
            status = self.status()
        except (OSError, ValueError, KeyError, AssertionError):
            return False
        return status["connected"] or not connected

    def status(self) -> dict[str, Any]:
        """Return the door's GET /credits answer."""
        status, body = request(self.port, b"GET /credits HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status == 200, body
        return json.loads(body)

    @property
    def credits(self) -> int:
        return int(self.status()["credits"])

    def publish(self, payload: bytes, kind: str = wire.COINPULSE) -> None:
        info = self.publisher.publish(f"{wire.DEFAULT_TOPIC_PREFIX}/{MACHINE}/{kind}", payload, 1)
        info.wait_for_publish(timeout=5)
        assert info.is_published()

    def pay(self, credits: int = 1) -> None:
        """Publish a signed coinpulse as the API would and wait until it counts."""
        before = self.credits
        message = wire.coinpulse(
            machine_id=MACHINE,
            credits=credits,
            timestamp="2026-11-30T10:00:00Z",
            payment_id=f"cs_{uuid.uuid4().hex}",
            amount=50 * credits,
            currency="usd",
        )
        self.publish(json.dumps(wire.sign(message, self.key)).encode())
        wait_until(lambda: self.credits == before + credits)

    def lines(self) -> list[dict[str, Any]]:
        """Return its JSON log lines so far."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def events(self, name: str) -> list[dict[str, Any]]:
        """Return its log lines of event ``name``."""
        return [line for line in self.lines() if line.get("event") == name]

    def close(self) -> None:
        self.publisher.disconnect()
        self.publisher.loop_stop()
        stop_process(self.process)


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Return once ``check()`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.05)


def request(port: int, raw: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send ``raw`` as it is; return the answer's status and body (the status is 0 when the
    answer has no status line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") else 0
    return status, body
