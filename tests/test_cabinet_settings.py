"""The cabinet's settings: read as the API names them, every problem named in plain words."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from arcade.cabinet import CabinetSettings, CabinetSettingsError

ROOT = Path(__file__).resolve().parent.parent
A_KEY = "A" * 43  # base64url of 32 zero bytes


def settings(tmp_path: Path, **env: str) -> CabinetSettings:
    """Read settings for cab001 from ``env`` with a token, a broker and a CA that all work."""
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    base = {
        "CABINET_TOKEN": "mt_token",
        "EMQX_BROKER_URL": "mqtts://broker.example.com:8883",
        "MQTT_CA_CERT": str(ca),
    }
    return CabinetSettings.from_env("cab001", {**base, **env})


def test_the_broker_key_and_heartbeat_come_from_the_environment(tmp_path):
    """GIVEN the variables the API and docs name WHEN read THEN each lands in its setting."""
    read = settings(
        tmp_path,
        EMQX_BROKER_URL="mqtts://b.example.com:9883",
        MQTT_USERNAME="cab001",
        MQTT_PASSWORD="secret",
        MQTT_TOPIC_PREFIX="/arcade/test/",
        PULSE_PUBLIC_KEY=A_KEY,
        CABINET_HEARTBEAT_SECONDS="12.5",
    )
    read.check()

    assert (read.broker_host, read.broker_port, read.broker_tls) == ("b.example.com", 9883, True)
    assert (read.mqtt_username, read.mqtt_password) == ("cab001", "secret")
    assert read.coinpulse_topic == "arcade/test/cab001/coinpulse"
    assert read.gameover_topic == "arcade/test/cab001/gameover"
    assert read.pulse_key == A_KEY
    assert read.heartbeat_seconds == 12.5
    assert "secret" not in repr(read) and "mt_token" not in repr(read)


def test_without_settings_the_heartbeat_is_every_30_s_and_the_key_is_fetched(tmp_path):
    read = settings(tmp_path)

    assert read.heartbeat_seconds == 30
    assert read.pulse_key is None
    assert CabinetSettings("cab001").mqtt_ca_cert == str(ROOT / "ca.crt")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"EMQX_BROKER_URL": "http://b.example.com"}, "EMQX_BROKER_URL must be a host name"),
        ({"EMQX_BROKER_URL": "mqtts://b.example.com:port"}, "EMQX_BROKER_URL must be"),
        ({"EMQX_PORT": "88830"}, "EMQX_PORT must be a whole number from 1 to 65535"),
        ({"MQTT_TLS": "perhaps"}, "MQTT_TLS must be true or false"),
        ({"CABINET_HEARTBEAT_SECONDS": "0"}, "CABINET_HEARTBEAT_SECONDS must be a number"),
        ({"CABINET_HEARTBEAT_SECONDS": "soon"}, "CABINET_HEARTBEAT_SECONDS must be a number"),
        ({"CABINET_HEARTBEAT_SECONDS": "nan"}, "CABINET_HEARTBEAT_SECONDS must be a number"),
    ],
)
def test_a_malformed_variable_is_named(tmp_path, env, named):
    with pytest.raises(CabinetSettingsError, match=named):
        settings(tmp_path, **env)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PULSE_PUBLIC_KEY": "not-a-key"}, "PULSE_PUBLIC_KEY must be base64url of 32 bytes"),
        ({"PULSE_PUBLIC_KEY": "A" * 40}, "PULSE_PUBLIC_KEY must be base64url of 32 bytes"),
        ({"CABINET_TOKEN": ""}, "CABINET_TOKEN not set"),
        ({"EMQX_BROKER_URL": ""}, "EMQX_BROKER_URL not set"),
        ({"MQTT_CA_CERT": "/nowhere/ca.crt"}, "ca.crt not found"),
    ],
)
def test_a_setting_that_stops_the_cabinet_is_named_at_start(tmp_path, env, named):
    read = settings(tmp_path, **env)

    with pytest.raises(CabinetSettingsError, match=named):
        read.check()


def test_a_plain_broker_elsewhere_is_refused_unless_allowed(tmp_path):
    """GIVEN mqtt:// WHEN the broker is another computer THEN refused by name, unless
    MQTT_ALLOW_PLAINTEXT=true; on this computer it is fine."""
    remote = settings(tmp_path, EMQX_BROKER_URL="mqtt://b.example.com:1883")
    allowed = settings(
        tmp_path, EMQX_BROKER_URL="mqtt://b.example.com:1883", MQTT_ALLOW_PLAINTEXT="true"
    )
    local = settings(tmp_path, EMQX_BROKER_URL="mqtt://127.0.0.1:1883")

    with pytest.raises(CabinetSettingsError, match="MQTT_ALLOW_PLAINTEXT"):
        remote.check()
    allowed.check()
    local.check()
    assert not local.broker_tls and local.broker_port == 1883


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"EMQX_BROKER_URL": "mqtt://127.0.0.1:1883", "MQTT_TLS": "true"},
            "EMQX_BROKER_URL is mqtt:// (plain text) but MQTT_TLS=true",
        ),
        (
            {
                "EMQX_BROKER_URL": "MQTT://b.example.com:1883",
                "MQTT_TLS": "yes",
                "MQTT_ALLOW_PLAINTEXT": "true",
            },
            "EMQX_BROKER_URL is mqtt:// (plain text) but MQTT_TLS=true",
        ),
        (
            {"EMQX_BROKER_URL": "mqtts://127.0.0.1:8883", "MQTT_TLS": "false"},
            "EMQX_BROKER_URL is mqtts:// (TLS) but MQTT_TLS=false",
        ),
        (
            {"EMQX_BROKER_URL": "mqtts://user:hunter2@b.example.com:8883"},
            "EMQX_BROKER_URL must not hold a login",
        ),
        ({"EMQX_BROKER_URL": "b.example.com:1883"}, "EMQX_BROKER_URL must be a host name"),
        ({"EMQX_BROKER_URL": "mqtts://b.example.com:0"}, "EMQX_BROKER_URL must be"),
        ({"EMQX_BROKER_URL": "mqtts://b.example.com/topic"}, "EMQX_BROKER_URL must be"),
        ({"MQTT_TOPIC_PREFIX": "arcade/#"}, "MQTT_TOPIC_PREFIX must be"),
        ({"CABINET_HTTP_PORT": "70000"}, "CABINET_HTTP_PORT must be a whole number from 0"),
        ({"CABINET_API_URL": "http://[::1"}, "--api-url must be an http:// or https://"),
        ({"CABINET_API_URL": "https://api.example.com:99999"}, "--api-url must be an http://"),
        ({"CABINET_API_URL": "https://cab:hunter2@api.example.com"}, "--api-url must not hold"),
        ({"CABINET_API_URL": "http://exa mple.com"}, "--api-url must be an http:// or https://"),
        ({"CABINET_API_URL": "http://127.0.0.1:0"}, "--api-url must be an http:// or https://"),
    ],
    ids=[
        "mqtt_tls_true_loopback",
        "mqtt_tls_true_allowed",
        "mqtts_tls_false",
        "login_in_url",
        "port_in_host",
        "port_0",
        "path",
        "wildcard_prefix",
        "http_port",
        "api_url_bracket",
        "api_url_port",
        "api_url_login",
        "api_url_space_in_host",
        "api_url_port_0",
    ],
)
def test_the_cabinet_process_refuses_contradicting_or_malformed_broker_settings_in_a_sentence(
    tmp_path, env, named
):
    """GIVEN a broker URL whose scheme MQTT_TLS contradicts (or one that is malformed), or an
    API address that is malformed or holds a login WHEN `python -m arcade.cabinet` starts THEN
    one sentence names it, as the API does, instead of quietly going plain text (or TLS) and
    connecting (an API address urlsplit cannot read ended in its traceback; one with a login
    or a port out of range was retried forever)."""
    run = run_cabinet(tmp_path, env=env, timeout=60)

    assert run.returncode != 0
    assert named in run.stderr
    assert "Traceback" not in run.stderr
    assert "hunter2" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--retry-max-delay", "-1"], "--retry-max-delay must be"),
        (["--retry-max-delay", "0"], "--retry-max-delay must be"),
        (["--retry-max-delay", "nan"], "--retry-max-delay must be"),
        (["--retry-give-up", "-5"], "--retry-give-up must be"),
    ],
)
def test_the_cabinet_process_refuses_a_retry_wait_that_is_no_wait(tmp_path, args, named):
    """GIVEN --retry-max-delay of 0 or less (or NaN), or a --retry-give-up that is not above 0
    WHEN `python -m arcade.cabinet` starts THEN one sentence names it (with -1 the cabinet
    retried an API that was down thousands of times a second, a warning line each)."""
    run = run_cabinet(tmp_path, args=["--http-port", "-1", *args], timeout=10)

    assert run.returncode != 0
    [sentence] = run.stderr.strip().splitlines()
    assert named in sentence


def run_cabinet(
    tmp_path: Path, *, env: dict[str, str] | None = None, args: Sequence[str] = (), timeout: float
) -> subprocess.CompletedProcess:
    """Run `python -m arcade.cabinet --machine cab001` with settings that would start it (a
    token, a TLS broker address, a CA file, a pinned pulse key) and ``env`` over them, in a
    clean environment; return what it did, stderr as text."""
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    base = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "CABINET_TOKEN": "mt_token",
        "EMQX_BROKER_URL": "mqtts://127.0.0.1:8883",
        "MQTT_CA_CERT": str(ca),
        "PULSE_PUBLIC_KEY": A_KEY,
    }
    return subprocess.run(
        [sys.executable, "-m", "arcade.cabinet", "--machine", "cab001"]
        + ["--state-file", str(tmp_path / "cabinet.db"), *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
