"""The cabinet installs and runs on its own: its requirements, and nothing of the server's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion

from arcade import wire
from tests.support.broker import TlsBroker, free_loopback_port

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "arcade" / "cabinet" / "requirements.txt"
SERVER_ONLY = ("flask", "werkzeug", "boto3", "botocore", "stripe")
# The shared layer beside arcade.wire that the cabinet copies (docs/cabinet.md), module by module.
SHARED = ("arcade.common", "arcade.common.broker", "arcade.common.env", "arcade.common.logs")


def pins(path: Path) -> dict[str, str]:
    """Return name → version of every ``name==version`` line in a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==", 1)
            found[name.strip().lower()] = version.strip()
    return found


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding only the cabinet's requirements."""
    folder = tmp_path_factory.mktemp("cabinet-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return python


@pytest.fixture
def copied(tmp_path: Path) -> Path:
    """The files docs/cabinet.md says to copy onto a cabinet, alone in a folder."""
    folder = tmp_path / "arcade-cabinet"
    for package in ("cabinet", "common"):
        shutil.copytree(
            ROOT / "arcade" / package,
            folder / "arcade" / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    for name in ("__init__.py", "wire.py"):
        shutil.copy(ROOT / "arcade" / name, folder / "arcade" / name)
    return folder


@pytest.fixture
def running(venv: Path, copied: Path, broker: TlsBroker, tmp_path: Path) -> Iterator[dict]:
    """``python -m arcade.cabinet`` from the venv and the copied folder, on the test broker."""
    key = Ed25519PrivateKey.generate()
    port = free_loopback_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(copied),
        **broker.env(),
        "CABINET_TOKEN": "mt_not_registered",
        "PULSE_PUBLIC_KEY": wire.b64url(
            key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        ),
    }
    process = subprocess.Popen(
        [
            str(venv),
            "-m",
            "arcade.cabinet",
            "--machine",
            "cab-venv",
            "--api-url",
            "http://127.0.0.1:9",
            "--http-port",
            str(port),
            "--qr-url",
            "https://buy.stripe.com/test_venv",
            "--state-file",
            str(tmp_path / "cabinet.db"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield {"port": port, "key": key, "process": process}
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
        if process.returncode != 0:
            print(output[-3000:])


def local_status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/credits", timeout=2) as response:
        return json.loads(response.read())


def wait_for(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def test_importing_the_cabinet_loads_nothing_of_the_server():
    """GIVEN a fresh interpreter WHEN it imports the cabinet and its command line THEN no
    server module and no server dependency is loaded."""
    code = (
        "import json, sys; import arcade.cabinet, arcade.cabinet.__main__;"
        " print(json.dumps(sorted(sys.modules)))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert run.returncode == 0, run.stderr
    modules = json.loads(run.stdout)
    assert [name for name in modules if name.split(".")[0] in SERVER_ONLY] == []
    ours = [name for name in modules if name.split(".")[0] == "arcade"]
    assert "arcade.cabinet.client" in ours
    assert [
        name
        for name in ours
        if name not in ("arcade", "arcade.wire", *SHARED) and not name.startswith("arcade.cabinet")
    ] == []


def test_the_cabinet_pins_only_what_it_needs_at_the_servers_versions():
    """GIVEN the cabinet's requirements THEN paho-mqtt, cryptography and qrcode, each pinned as
    the top-level requirements.txt pins it."""
    cabinet = pins(REQUIREMENTS)
    server = pins(ROOT / "requirements.txt")

    assert set(cabinet) == {"paho-mqtt", "cryptography", "qrcode"}
    assert {name: server.get(name) for name in cabinet} == cabinet


def test_the_cabinet_installs_alone_and_its_command_answers(venv: Path, tmp_path: Path):
    """GIVEN a venv with only the cabinet's requirements WHEN the repo is on PYTHONPATH THEN
    --help answers, the client imports, and Flask, boto3 and stripe are not there."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
    probe = (
        "import importlib.util, json; from arcade.cabinet import Cabinet, CabinetSettings;"
        " print(json.dumps({name: importlib.util.find_spec(name) is not None"
        " for name in ('flask', 'boto3', 'stripe', 'paho', 'cryptography', 'qrcode')}))"
    )

    helped = subprocess.run(
        [str(venv), "-m", "arcade.cabinet", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    imported = subprocess.run(
        [str(venv), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )

    assert helped.returncode == 0, helped.stderr
    assert "--pulse-key" in helped.stdout and "--heartbeat-seconds" in helped.stdout
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout) == {
        "flask": False,
        "boto3": False,
        "stripe": False,
        "paho": True,
        "cryptography": True,
        "qrcode": True,
    }


def test_the_copied_files_run_a_cabinet_that_counts_a_signed_pulse(running, broker):
    """GIVEN arcade/__init__.py, arcade/wire.py and arcade/cabinet/ copied alone and the venv
    WHEN the cabinet runs and the API's signed pulse arrives THEN it counts it."""
    wait_for(lambda: local_status(running["port"])["connected"])
    message = wire.sign(
        wire.coinpulse(
            machine_id="cab-venv",
            credits=2,
            timestamp="2026-11-22T10:00:00Z",
            payment_id="cs_from_the_venv",
            amount=100,
            currency="usd",
        ),
        running["key"],
    )
    publisher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    publisher.username_pw_set(broker.username, broker.password)
    publisher.tls_set_context(broker.ssl_context())
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    try:
        info = publisher.publish(
            wire.topic(wire.DEFAULT_TOPIC_PREFIX, "cab-venv", wire.COINPULSE),
            json.dumps(message),
            qos=1,
        )
        info.wait_for_publish(timeout=5)
    finally:
        publisher.disconnect()
        publisher.loop_stop()

    assert wait_for(lambda: local_status(running["port"])["credits"] == 2)


def test_a_malformed_pulse_key_stops_the_command_with_a_sentence(tmp_path: Path, broker):
    """GIVEN --pulse-key that is not a key WHEN the cabinet starts THEN exit 2 naming it."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "arcade.cabinet",
            "--machine",
            "cab-bad-key",
            "--pulse-key",
            "not-a-key",
            "--http-port",
            "-1",
            "--state-file",
            str(tmp_path / "cabinet.db"),
        ],
        cwd=ROOT,
        env={**os.environ, **broker.env(), "CABINET_TOKEN": "mt_x"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 2
    assert "--pulse-key / PULSE_PUBLIC_KEY must be base64url of 32 bytes" in run.stderr
    assert "Traceback" not in run.stderr
