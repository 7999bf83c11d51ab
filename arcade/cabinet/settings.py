"""The cabinet's settings: its flags, and the broker read from the API's own variable names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from arcade import wire
from arcade.cabinet.api import RetryPolicy
from arcade.cabinet.errors import CabinetSettingsError

DEFAULT_API_URL = "http://127.0.0.1:5000"
DEFAULT_HTTP_PORT = 8765
DEFAULT_HEARTBEAT_SECONDS = 30.0
# The folder that holds arcade/: the repo's root, or the folder copied onto the cabinet.
DEFAULT_CA_CERT = Path(__file__).resolve().parent.parent.parent / "ca.crt"
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class CabinetSettings:
    """Everything one cabinet needs to know."""

    machine_id: str
    token: str | None = field(default=None, repr=False)
    api_url: str = DEFAULT_API_URL
    state_file: Path | None = None  # default: cabinet-<machine_id>.db in the working directory
    broker_host: str | None = None
    broker_port: int = 8883
    broker_tls: bool = True
    # mqtt:// to a host other than loopback sends the broker password in clear: refused unless
    # MQTT_ALLOW_PLAINTEXT=true.
    allow_plaintext: bool = False
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    mqtt_ca_cert: str = str(DEFAULT_CA_CERT)
    topic_prefix: str = wire.DEFAULT_TOPIC_PREFIX
    # Seconds between MQTT pings: paho pings after this long without traffic and gives up one
    # more of these later, so a link that died silently (a frozen broker, a Wi-Fi drop) is
    # noticed within two of them (12 s), and the QR code hidden.
    keepalive: int = 6
    # Local HTTP endpoint for the game (127.0.0.1 only); 0 picks a free port, None turns it off.
    http_port: int | None = DEFAULT_HTTP_PORT
    qr_url: str | None = None
    qr_invert: bool = False
    api_timeout: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    reconnect_max_delay: int = 30
    # The API's Ed25519 public key (base64url of 32 bytes); None: the one kept in the state
    # file, else fetched once from GET /pulse-key.
    pulse_key: str | None = None
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS

    @classmethod
    def from_env(
        cls, machine_id: str, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> CabinetSettings:
        """Read the broker, token and key from ``environ`` as the API names them; overrides win.

        Raises CabinetSettingsError naming every variable that is malformed.
        """
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        broker_url = reader.text("EMQX_BROKER_URL", "MQTT_BROKER")
        broker_tls = reader.flag("MQTT_TLS", default=True)
        broker_port = reader.port("EMQX_PORT", "MQTT_PORT", default=8883)
        broker_host = broker_url
        if broker_url and "://" in broker_url:
            parts = urlsplit(broker_url)
            try:
                url_port = parts.port
            except ValueError:
                url_port = -1
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or url_port == -1:
                reader.problems.append(
                    "EMQX_BROKER_URL must be a host name, mqtts://host:port or mqtt://host:port"
                )
                broker_host = None
            else:
                broker_host = parts.hostname
                broker_tls = parts.scheme == "mqtts"
                broker_port = url_port or broker_port
        values: dict[str, Any] = {
            "machine_id": machine_id,
            "token": reader.text("CABINET_TOKEN"),
            "broker_host": broker_host,
            "broker_port": broker_port,
            "broker_tls": broker_tls,
            "allow_plaintext": reader.flag("MQTT_ALLOW_PLAINTEXT", default=False),
            "mqtt_username": reader.text("MQTT_USERNAME"),
            "mqtt_password": reader.text("MQTT_PASSWORD"),
            "mqtt_ca_cert": reader.text("MQTT_CA_CERT") or str(DEFAULT_CA_CERT),
            "topic_prefix": (reader.text("MQTT_TOPIC_PREFIX") or wire.DEFAULT_TOPIC_PREFIX).strip(
                "/"
            ),
            "pulse_key": reader.text("PULSE_PUBLIC_KEY"),
            "heartbeat_seconds": reader.seconds(
                "CABINET_HEARTBEAT_SECONDS", default=DEFAULT_HEARTBEAT_SECONDS
            ),
        }
        if reader.problems:
            raise CabinetSettingsError("; ".join(reader.problems))
        values.update(overrides)
        return cls(**values)

    @property
    def coinpulse_topic(self) -> str:
        return wire.topic(self.topic_prefix, self.machine_id, wire.COINPULSE)

    @property
    def gameover_topic(self) -> str:
        return wire.topic(self.topic_prefix, self.machine_id, wire.GAMEOVER)

    @property
    def state_path(self) -> Path:
        return self.state_file or Path(f"cabinet-{self.machine_id}.db")

    def check(self) -> None:
        """Raise CabinetSettingsError naming every setting that stops the cabinet."""
        found = []
        if not wire.is_valid_machine_id(self.machine_id):
            found.append(f"--machine must be {wire.MACHINE_ID_RULE}")
        if not self.token:
            found.append("--token / CABINET_TOKEN not set (the token printed by 'machines add')")
        if not self.broker_host:
            found.append(wire.BROKER_NOT_SET)
        elif (
            not self.broker_tls
            and not self.allow_plaintext
            and not wire.is_loopback(self.broker_host)
        ):
            found.append(
                f"EMQX_BROKER_URL is plain mqtt:// to {self.broker_host}, which would send the"
                " broker password in clear: use mqtts://, or set MQTT_ALLOW_PLAINTEXT=true"
            )
        if self.broker_tls and self.mqtt_ca_cert:
            problem = wire.ca_problem(self.mqtt_ca_cert)
            if problem:
                found.append(problem)
        if self.pulse_key is not None:
            try:
                wire.load_public_key(self.pulse_key)
            except wire.WireError:
                found.append("--pulse-key / PULSE_PUBLIC_KEY must be base64url of 32 bytes")
        if not 0 < self.heartbeat_seconds <= 3600:
            found.append(
                "--heartbeat-seconds / CABINET_HEARTBEAT_SECONDS must be above 0 and at most 3600"
            )
        if found:
            raise CabinetSettingsError("; ".join(found))


class _Reader:
    """Read typed values, collecting a sentence for each bad one instead of raising."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str, *aliases: str) -> str | None:
        for key in (name, *aliases):
            value = self.env.get(key, "").strip()
            if value:
                return value
        return None

    def flag(self, name: str, *, default: bool) -> bool:
        value = self.text(name)
        if value is None:
            return default
        if value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        self.problems.append(f"{name} must be true or false")
        return default

    def port(self, name: str, *aliases: str, default: int) -> int:
        value = self.text(name, *aliases)
        if value is None:
            return default
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            self.problems.append(f"{name} must be a whole number from 1 to 65535")
            return default
        return int(value)

    def seconds(self, name: str, *, default: float) -> float:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not 0 < number <= 3600:
            self.problems.append(f"{name} must be a number of seconds above 0, at most 3600")
            return default
        return number
