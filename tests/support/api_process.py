"""`python app.py` as a real process for tests of faults that live in a process.

Kill it with SIGKILL, stop it with SIGTERM, restart it on the same port and store, and talk to
it over real sockets: the Flask test client cannot show what a dead process leaves behind.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.broker import held_loopback_port
from tests.support.stripe_standin import event, sign_payload

ROOT = Path(__file__).resolve().parents[2]


class ApiProcess:
    """One `python app.py` with the given settings, on a port of its own."""

    def __init__(self, env: dict[str, str], log_path: Path, *, port: int | None = None):
        # A port of its own is held from now until close(): between choosing it and the
        # server binding it (or while the process is killed and restarted on it), no other
        # program's connection can take it.
        self._port_hold = None
        if port is None:
            port, self._port_hold = held_loopback_port()
        self.port = port
        self.env = {**os.environ, **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    # life cycle
    def start(self, timeout: float = 20.0) -> ApiProcess:
        """Start the process and wait until /status answers."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited early:\n{self.log_text()}")
            try:
                if self.request("GET", "/status", timeout=1)[0] == 200:
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"app.py did not answer /status:\n{self.log_text()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a machine loses power."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        self.kill()
        if self._port_hold is not None:
            self._port_hold.close()
            self._port_hold = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_events(self, name: str) -> list[dict[str, Any]]:
        """Return the JSON log lines whose event is ``name``."""
        found = []
        for line in self.log_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == name:
                found.append(record)
        return found

    # HTTP
    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        timeout: float = 30.0,
    ) -> tuple[int, dict[str, Any]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {"raw": raw.decode(errors="replace")}
        return response.status, answer

    def webhook(
        self, event_type: str, data_object: dict[str, Any], secret: str, *, timeout: float = 30.0
    ) -> tuple[int, dict[str, Any]]:
        """POST one event, signed the way Stripe signs it."""
        body = json.dumps(event(event_type, data_object)).encode()
        headers = {
            "Stripe-Signature": sign_payload(body, secret),
            "Content-Type": "application/json",
        }
        return self.request("POST", "/webhook", body, headers, timeout=timeout)

    def payment_link(self, machine_id: str, token: str) -> dict[str, Any]:
        """Ask for the machine's payment link as its cabinet does; return the 200 answer."""
        status, answer = self.request(
            "POST",
            "/create-payment-link",
            json.dumps({"machine_id": machine_id}).encode(),
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert status == 200, answer
        return answer

    def get_json(self, path: str, token: str) -> dict[str, Any]:
        status, answer = self.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        assert status == 200, answer
        return answer


def flask_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``flask --app app ARGS`` with these settings."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_lambda_handler(
    event_: dict[str, Any], env: dict[str, str], *, endpoint: str, table: str
) -> dict[str, Any]:
    """Invoke ``app.lambda_handler(event_)`` in a fresh interpreter, as Lambda would, on the
    DynamoDB table ``table`` behind ``endpoint`` (moto), and return what it answered."""
    lambda_env = {
        **env,
        "PATH": "/usr/bin:/bin",
        "AWS_LAMBDA_FUNCTION_NAME": "arcade-pay",
        "DATABASE_URL": f"dynamodb://{table}",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    code = (
        "import json, sys, app; "
        "print(json.dumps(app.lambda_handler(json.loads(sys.argv[1]), None)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(event_)],
        cwd=ROOT,
        env=lambda_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])
