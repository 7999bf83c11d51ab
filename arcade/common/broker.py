"""Where the MQTT broker is, read from the same variables by the API and the cabinet.

``EMQX_BROKER_URL`` (alias ``MQTT_BROKER``) is a host name, ``mqtts://host:port`` or
``mqtt://host:port``; ``MQTT_TLS`` and ``EMQX_PORT`` (alias ``MQTT_PORT``) apply to a bare host.
Plain-text MQTT goes to this machine only unless ``MQTT_ALLOW_PLAINTEXT=true`` (SPEC "Serving
locally"): the broker password must never cross a network in clear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from arcade.common.env import EnvReader
from arcade.wire import DEFAULT_TOPIC_PREFIX, is_loopback

# The folder that holds arcade/: the repo's root, or the folder copied onto a cabinet.
DEFAULT_CA_CERT = Path(__file__).resolve().parent.parent.parent / "ca.crt"
DEFAULT_BROKER_PORT = 8883
BROKER_URL_RULE = "EMQX_BROKER_URL must be a host name, mqtts://host:port or mqtt://host:port"


@dataclass(frozen=True)
class Broker:
    """The broker's address, TLS, login, CA file and topic prefix, as the environment says.

    ``host`` is None when ``EMQX_BROKER_URL`` is unset or malformed (the reader then holds the
    problem); ``url`` is the variable as given.
    """

    host: str | None
    port: int
    tls: bool
    url: str | None
    username: str | None
    password: str | None = field(repr=False)
    ca_cert: str
    topic_prefix: str


def read_broker(reader: EnvReader) -> Broker:
    """Return the broker settings in ``reader``'s environment; each problem goes to ``reader``."""
    url = reader.text("EMQX_BROKER_URL", "MQTT_BROKER")
    tls = reader.flag("MQTT_TLS", default=True)
    port = reader.integer("EMQX_PORT", "MQTT_PORT", default=DEFAULT_BROKER_PORT, low=1, high=65535)
    host = url
    if url and "@" in url:
        # mqtts://user:password@host: the login belongs in MQTT_USERNAME and MQTT_PASSWORD,
        # and the password must not show wherever the host is shown (/status, logs).
        reader.problem(
            "EMQX_BROKER_URL must not carry a login: set MQTT_USERNAME and MQTT_PASSWORD"
        )
        host = None
    elif url and "://" in url:
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
        except ValueError:  # a bracket left open, an IPv6 address that is not one
            parts, hostname = None, None
        if parts is None or parts.scheme not in ("mqtt", "mqtts") or not hostname:
            reader.problem(BROKER_URL_RULE)
            host = None
        else:
            host = hostname
            tls = parts.scheme == "mqtts"
            try:
                port = parts.port or port
            except ValueError:  # not a number, or above 65535
                reader.problem(f"{BROKER_URL_RULE} (its port is not a number from 1 to 65535)")
                host = None
    return Broker(
        host=host,
        port=port,
        tls=tls,
        url=url,
        username=reader.text("MQTT_USERNAME"),
        password=reader.text("MQTT_PASSWORD"),
        ca_cert=reader.text("MQTT_CA_CERT") or str(DEFAULT_CA_CERT),
        topic_prefix=(reader.text("MQTT_TOPIC_PREFIX") or DEFAULT_TOPIC_PREFIX).strip("/"),
    )


def plaintext_refusal(host: str, *, tls: bool, allowed: bool) -> str | None:
    """Return why plain-text MQTT must not go to ``host``, or None when it may (or is TLS).

    ``allowed`` is ``MQTT_ALLOW_PLAINTEXT``; loopback is judged by the name, with no lookup.
    """
    if tls or allowed or is_loopback(host):
        return None
    return (
        f"EMQX_BROKER_URL sends plain-text MQTT to {host}, another machine: the broker"
        " password would cross the network in clear (use mqtts://, or set"
        " MQTT_ALLOW_PLAINTEXT=true on a network you trust)"
    )
