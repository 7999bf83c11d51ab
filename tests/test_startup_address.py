"""Where `python app.py` listens (HOST, PORT), tried against the real process.

A start-up problem is one sentence naming the setting and exit status 1, never a traceback
(SPEC "Serving locally"); an address waitress turns into several sockets is served on each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.support.api_process import ROOT
from tests.support.broker import free_loopback_port
from tests.support.processes import stop_process


def _env(tmp_path, **settings: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'arcade.db'}",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }


def _failed_start(tmp_path, **settings: str) -> str:
    """Run `python app.py` expecting it to stop at once; return its startup_failed sentence."""
    done = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=_env(tmp_path, **settings),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [failed] = [
        json.loads(line)
        for line in done.stderr.splitlines()
        if line.startswith("{") and '"startup_failed"' in line
    ]
    return failed["error"]


@pytest.mark.parametrize("port", ["abc", "0", "70000", "-1", "50 00"])
def test_a_malformed_port_is_one_sentence_and_exit_1_not_a_server_on_5000(tmp_path, port):
    assert _failed_start(tmp_path, PORT=port).startswith("PORT must be")


@pytest.mark.parametrize("host", ["no-such-host.invalid", "127.0.0.1:8080", "256.1.1.1", "a b"])
def test_a_host_that_cannot_be_listened_on_is_one_sentence_naming_host(tmp_path, host):
    error = _failed_start(tmp_path, HOST=host, PORT=str(free_loopback_port()))

    assert error.startswith("HOST must be")
    assert repr(host) in error


def _read_and_close(process: subprocess.Popen) -> str:
    assert process.stderr is not None
    with process.stderr:
        return process.stderr.read()


def _status(url: str, deadline: float) -> int:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return reply.status
        except OSError:
            assert time.monotonic() < deadline, f"nothing answered {url}"
            time.sleep(0.05)


@pytest.mark.parametrize("host", ["", "   "])
def test_an_empty_host_is_this_machine_only(tmp_path, host):
    """GIVEN HOST= (as a copied .env.local.example may leave it) THEN 127.0.0.1, as unset."""
    port = free_loopback_port()
    process = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=_env(tmp_path, HOST=host, PORT=str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _status(f"http://127.0.0.1:{port}/status", time.monotonic() + 20) == 200
    finally:
        stop_process(process)
        stderr = _read_and_close(process)
    serving = [json.loads(line) for line in stderr.splitlines() if '"serving"' in line]
    assert serving[0]["host"] == "127.0.0.1"
    assert "Traceback" not in stderr


def test_a_host_of_several_addresses_serves_each_and_stops_on_sigterm(tmp_path):
    """GIVEN HOST=* (waitress listens on every address, IPv4 and IPv6) THEN both answer and
    SIGTERM exits 0 (it used to end in AttributeError once serving began)."""
    port = free_loopback_port()
    process = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=_env(tmp_path, HOST="*", PORT=str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        assert _status(f"http://127.0.0.1:{port}/status", deadline) == 200
        assert _status(f"http://[::1]:{port}/status", deadline) == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        stop_process(process)
        stderr = _read_and_close(process)
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("command", "content", "sentence"),
    [
        (["app.py"], b"PORT=5000\nSTRIPE_PRICE_ID=price_caf\xe9\n", ".env.local is not UTF-8 text"),
        (
            ["-m", "flask", "--app", "app", "machines", "list"],
            b"PORT=5000\nSTRIPE_PRICE_ID=price_caf\xe9\n",
            ".env.local is not UTF-8 text",
        ),
        # No environment variable can hold a NUL: os.environ's ValueError was a traceback.
        (["app.py"], b"PORT=59\x0006\n", ".env.local holds a NUL character"),
        (
            ["-m", "flask", "--app", "app", "machines", "list"],
            b"ADMIN_API_KEY=abc\x00def\n",
            ".env.local holds a NUL character",
        ),
    ],
    ids=["app_not_utf8", "flask_not_utf8", "app_nul", "flask_nul"],
)
def test_an_env_local_that_is_not_text_stops_the_start_in_one_sentence(
    tmp_path, command, content, sentence
):
    """GIVEN a .env.local saved in another encoding, or holding a NUL WHEN `python app.py` or a
    `flask` command starts THEN one sentence names the file and the process exits 1 (going on
    without its settings, a DATABASE_URL say, would quietly use others)."""
    shutil.copy(ROOT / "app.py", tmp_path / "app.py")
    (tmp_path / ".env.local").write_bytes(content)
    env = {**_env(tmp_path), "PYTHONPATH": str(ROOT)}

    done = subprocess.run(
        [sys.executable, *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [failed] = [json.loads(line) for line in done.stderr.splitlines() if "startup_failed" in line]
    assert failed["error"].startswith(sentence)


def test_an_argument_to_app_py_is_refused_rather_than_serving_elsewhere(tmp_path):
    """GIVEN `python app.py --port 8080` (PORT is the setting) THEN one sentence, exit 1, and
    nothing serves on 5000; --help prints the usage."""
    run = [sys.executable, "app.py"]
    done = subprocess.run(
        [*run, "--port", "8080"],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    helped = subprocess.run(
        [*run, "--help"], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 1 and "Traceback" not in done.stderr
    [failed] = [json.loads(line) for line in done.stderr.splitlines() if "startup_failed" in line]
    assert "takes no arguments" in failed["error"]
    assert helped.returncode == 0 and helped.stdout.startswith("usage: python app.py")


def test_arguments_refused_by_app_py_are_not_written_to_the_log(tmp_path):
    """GIVEN a setting passed as an argument, the way `make` takes them (`python app.py
    ADMIN_API_KEY=…`) THEN exit 1 with a sentence that names the option words but never the
    values: stderr goes to journald or a log file, and the value may be a secret."""
    secret = "s3cret-admin-key-from-a-password-manager-0123456789"
    done = subprocess.run(
        [sys.executable, "app.py", f"ADMIN_API_KEY={secret}", "--admin-key", secret],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert secret not in done.stderr + done.stdout
    [failed] = [json.loads(line) for line in done.stderr.splitlines() if "startup_failed" in line]
    assert "takes no arguments" in failed["error"] and "--admin-key" in failed["error"]


# AWS settings boto3 cannot make a DynamoDB client from, each with the name the sentence gives.
UNUSABLE_AWS_SETTINGS = [
    ({"AWS_ENDPOINT_URL": "localhost:8000"}, "AWS_ENDPOINT_URL"),
    ({"AWS_ENDPOINT_URL_DYNAMODB": "http://[::1"}, "AWS_ENDPOINT_URL_DYNAMODB"),
    ({"AWS_MAX_ATTEMPTS": "three"}, "AWS_MAX_ATTEMPTS"),
    ({"AWS_PROFILE": "no-such-profile"}, "AWS_PROFILE"),
    ({"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}, "AWS_SECRET_ACCESS_KEY"),
    ({"AWS_REGION": "", "AWS_DEFAULT_REGION": ""}, "AWS_REGION"),
]


@pytest.mark.parametrize(("settings", "named"), UNUSABLE_AWS_SETTINGS, ids=lambda v: str(v)[:40])
def test_aws_settings_the_store_cannot_use_stop_every_start_in_one_sentence(
    tmp_path, settings, named
):
    """GIVEN DATABASE_URL=dynamodb://… and an AWS setting boto3 cannot make a client from (an
    endpoint that is no URL, a number that is none, a profile that does not exist, half a
    key) WHEN `python app.py` or a flask command starts THEN one sentence naming the setting
    and exit 1 (a malformed AWS_ENDPOINT_URL ended both in botocore's ValueError traceback,
    after botocore's own INFO line, and a missing profile was reported as a missing
    AWS_REGION)."""
    aws = {
        "DATABASE_URL": "dynamodb://arcade-pay",
        "AWS_REGION": "eu-west-3",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        **settings,
    }
    assert named in _failed_start(tmp_path, **aws)

    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "machines", "list"],
        cwd=ROOT,
        env=_env(tmp_path, **aws),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    [sentence] = done.stderr.strip().splitlines()  # botocore's INFO lines came first
    assert named in sentence
