"""The cabinet's settings: its flags, and the broker read from the API's own variable names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arcade.cabinet.api import RetryPolicy
from arcade.cabinet.errors import CabinetSettingsError
from arcade.config import Settings
from arcade.mqtt import ca_problem
from arcade.wire import is_valid_machine_id

DEFAULT_API_URL = "http://127.0.0.1:5000"
DEFAULT_HTTP_PORT = 8765
BROKER_VARIABLES = (
    "EMQX_BROKER_URL",
    "MQTT_BROKER",
    "EMQX_PORT",
    "MQTT_PORT",
    "MQTT_USERNAME",
    "MQTT_PASSWORD",
    "MQTT_CA_CERT",
    "MQTT_TLS",
    "MQTT_TOPIC_PREFIX",
)


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
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    mqtt_ca_cert: str = ""
    topic_prefix: str = "arcade/machine"
    keepalive: int = 30
    # Local HTTP endpoint for the game (127.0.0.1 only); 0 picks a free port, None turns it off.
    http_port: int | None = DEFAULT_HTTP_PORT
    qr_url: str | None = None
    qr_invert: bool = False
    api_timeout: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    reconnect_max_delay: int = 30

    @classmethod
    def from_env(
        cls, machine_id: str, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> CabinetSettings:
        """Read the broker and token from ``environ`` the way the API does; ``overrides`` win."""
        env = os.environ if environ is None else environ
        broker_env = {name: env[name] for name in BROKER_VARIABLES if name in env}
        broker = Settings.from_env(broker_env)
        if broker.problems:
            raise CabinetSettingsError("; ".join(broker.problems))
        values: dict[str, Any] = {
            "machine_id": machine_id,
            "token": env.get("CABINET_TOKEN") or None,
            "broker_host": broker.broker_host,
            "broker_port": broker.broker_port,
            "broker_tls": broker.broker_tls,
            "mqtt_username": broker.mqtt_username,
            "mqtt_password": broker.mqtt_password,
            "mqtt_ca_cert": broker.mqtt_ca_cert,
            "topic_prefix": broker.topic_prefix,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def client_id(self) -> str:
        """Return the fixed MQTT client id the broker keeps this cabinet's session under."""
        return f"cabinet-{self.machine_id}"

    @property
    def coinpulse_topic(self) -> str:
        return f"{self.topic_prefix}/{self.machine_id}/coinpulse"

    @property
    def state_path(self) -> Path:
        return self.state_file or Path(f"cabinet-{self.machine_id}.db")

    def check(self) -> None:
        """Raise CabinetSettingsError naming every setting that stops the cabinet."""
        found = []
        if not is_valid_machine_id(self.machine_id):
            found.append("--machine must be 1 to 64 letters, digits, '_' or '-'")
        if not self.token:
            found.append("--token / CABINET_TOKEN not set (the token printed by 'machines add')")
        if not self.broker_host:
            found.append("EMQX_BROKER_URL not set")
        if self.broker_tls and self.mqtt_ca_cert:
            problem = ca_problem(self.mqtt_ca_cert)
            if problem:
                found.append(problem)
        if found:
            raise CabinetSettingsError("; ".join(found))
