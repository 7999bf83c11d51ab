"""The cabinet's settings: its flags, and the broker read from the API's own variable names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arcade import wire
from arcade.cabinet.api import RetryPolicy
from arcade.cabinet.errors import CabinetSettingsError
from arcade.common.broker import (
    DEFAULT_BROKER_PORT,
    DEFAULT_CA_CERT,
    plaintext_refusal,
    read_broker,
)
from arcade.common.env import EnvReader

DEFAULT_API_URL = "http://127.0.0.1:5000"
DEFAULT_HTTP_PORT = 8765
DEFAULT_HEARTBEAT_SECONDS = 30.0
MAX_HEARTBEAT_SECONDS = 3600.0
HEARTBEAT_RULE = f"a number of seconds above 0, at most {MAX_HEARTBEAT_SECONDS:g}"
MAX_RETRY_DELAY_SECONDS = 3600.0


def heartbeat_ok(seconds: float) -> bool:
    """Tell whether ``seconds`` may pass between two heartbeats (HEARTBEAT_RULE; never NaN)."""
    return 0 < seconds <= MAX_HEARTBEAT_SECONDS


@dataclass(frozen=True)
class CabinetSettings:
    """Everything one cabinet needs to know."""

    machine_id: str
    token: str | None = field(default=None, repr=False)
    api_url: str = DEFAULT_API_URL
    state_file: Path | None = None  # default: cabinet-<machine_id>.db in the working directory
    broker_host: str | None = None
    broker_port: int = DEFAULT_BROKER_PORT
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
        reader = EnvReader(env)
        broker = read_broker(reader)
        values: dict[str, Any] = {
            "machine_id": machine_id,
            "token": reader.text("CABINET_TOKEN"),
            "broker_host": broker.host,
            "broker_port": broker.port,
            "broker_tls": broker.tls,
            "allow_plaintext": reader.flag("MQTT_ALLOW_PLAINTEXT", default=False),
            "mqtt_username": broker.username,
            "mqtt_password": broker.password,
            "mqtt_ca_cert": broker.ca_cert,
            "topic_prefix": broker.topic_prefix,
            "pulse_key": reader.text("PULSE_PUBLIC_KEY"),
            "heartbeat_seconds": reader.checked(
                "CABINET_HEARTBEAT_SECONDS",
                parse=float,
                accept=heartbeat_ok,
                rule=HEARTBEAT_RULE,
                default=DEFAULT_HEARTBEAT_SECONDS,
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
        else:
            refused = plaintext_refusal(
                self.broker_host, tls=self.broker_tls, allowed=self.allow_plaintext
            )
            if refused:
                found.append(refused)
        if self.broker_tls and self.mqtt_ca_cert:
            problem = wire.ca_problem(self.mqtt_ca_cert)
            if problem:
                found.append(problem)
        if self.pulse_key is not None:
            try:
                wire.load_public_key(self.pulse_key)
            except wire.WireError:
                found.append("--pulse-key / PULSE_PUBLIC_KEY must be base64url of 32 bytes")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            found.append(
                "--http-port / CABINET_HTTP_PORT must be a whole number from 0 to 65535"
                " (-1 turns the local door off)"
            )
        if not heartbeat_ok(self.heartbeat_seconds):
            found.append(
                f"--heartbeat-seconds / CABINET_HEARTBEAT_SECONDS must be {HEARTBEAT_RULE}"
            )
        # A wait of 0 or less (or NaN) between API attempts retried at once, thousands of
        # times a second, each a warning line, while the API was down.
        if not 0 < self.retry.max_delay <= MAX_RETRY_DELAY_SECONDS:
            found.append(
                "--retry-max-delay must be a number of seconds above 0, at most"
                f" {MAX_RETRY_DELAY_SECONDS:g}"
            )
        give_up = self.retry.give_up_after
        if give_up is not None and not give_up > 0:
            found.append("--retry-give-up must be a number of seconds above 0")
        if found:
            raise CabinetSettingsError("; ".join(found))
