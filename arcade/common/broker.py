"""Where the MQTT broker is, read from the same variables by the API and the cabinet.

``EMQX_BROKER_URL`` (alias ``MQTT_BROKER``) is a host name, ``mqtts://host:port`` or
``mqtt://host:port``; ``MQTT_TLS`` and ``EMQX_PORT`` (alias ``MQTT_PORT``) apply to a bare host.
Plain-text MQTT goes to this machine only unless ``MQTT_ALLOW_PLAINTEXT=true`` (SPEC "Serving
locally"): the broker password must never cross a network in clear.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from arcade.common.env import FALSE_WORDS, TRUE_WORDS, EnvReader
from arcade.wire import DEFAULT_TOPIC_PREFIX, is_loopback

# The folder that holds arcade/: the repo's root, or the folder copied onto a cabinet.
DEFAULT_CA_CERT = Path(__file__).resolve().parent.parent.parent / "ca.crt"
DEFAULT_BROKER_PORT = 8883
PLAINTEXT_BROKER_PORT = 1883
BROKER_URL_RULE = "EMQX_BROKER_URL must be a host name, mqtts://host:port or mqtt://host:port"


@dataclass(frozen=True)
class Broker:
    """The broker's address, TLS, login, CA file and topic prefix, as the environment says.

    ``host`` is None when ``EMQX_BROKER_URL`` is unset or malformed (the reader then holds the
    problem; the variable as given is kept nowhere: a malformed one may hold a password).
    ``conflict`` names a scheme that contradicts ``MQTT_TLS`` (the reader holds it too): such
    settings must not be used at all.
    """

    host: str | None
    port: int
    tls: bool
    username: str | None
    password: str | None = field(repr=False)
    ca_cert: str
    topic_prefix: str
    conflict: str | None = None


# A DNS name (labels of letters, digits, - and _), with or without its final dot.
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")


def read_broker(reader: EnvReader) -> Broker:
    """Return the broker settings in ``reader``'s environment; each problem goes to ``reader``.

    The scheme of ``EMQX_BROKER_URL`` decides TLS; one that ``MQTT_TLS`` contradicts is a
    conflict, named rather than silently winning (SPEC "Serving locally").
    """
    url = reader.text("EMQX_BROKER_URL", "MQTT_BROKER")
    said_tls = reader.text("MQTT_TLS")
    tls = reader.flag("MQTT_TLS", default=True)
    given_port = reader.integer("EMQX_PORT", "MQTT_PORT", default=0, low=1, high=65535)  # 0: none
    host, conflict = (url, None) if url is None else _read_url(reader, url, said_tls)
    # The URL's port, else EMQX_PORT, else for mqtt:// the scheme's own 1883 (a plain-text
    # client on the TLS port only ever times out) and 8883 otherwise (SPEC "Settings").
    port = given_port or DEFAULT_BROKER_PORT
    if url is not None and host is not None and "://" in url:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        port = parts.port or given_port or (DEFAULT_BROKER_PORT if tls else PLAINTEXT_BROKER_PORT)
    return Broker(
        host=host,
        port=port,
        tls=tls,
        username=reader.text("MQTT_USERNAME"),
        password=reader.text("MQTT_PASSWORD"),
        ca_cert=reader.text("MQTT_CA_CERT") or str(DEFAULT_CA_CERT),
        topic_prefix=_topic_prefix(reader),
        conflict=conflict,
    )


def _topic_prefix(reader: EnvReader) -> str:
    """Return MQTT_TOPIC_PREFIX without its outer slashes; a wildcard (+, #), a reserved $
    topic or nothing at all is named and the default used (no broker takes a publish there)."""
    prefix = (reader.text("MQTT_TOPIC_PREFIX") or DEFAULT_TOPIC_PREFIX).strip("/")
    if not prefix or prefix.startswith("$") or any(c in prefix for c in "+#\x00"):
        reader.problem(
            f"MQTT_TOPIC_PREFIX must be topic levels without + or # and not starting with $"
            f" (e.g. {DEFAULT_TOPIC_PREFIX})"
        )
        return DEFAULT_TOPIC_PREFIX
    return prefix


def _read_url(reader: EnvReader, url: str, said_tls: str | None) -> tuple[str | None, str | None]:
    """Return (host, conflict) of EMQX_BROKER_URL; host is None when it is malformed.

    A malformed one is named by the rule alone: it may hold a password.
    """
    if "://" not in url:
        host = url.removeprefix("[").removesuffix("]") if url.startswith("[") else url
        if not _is_host(host):
            reader.problem(BROKER_URL_RULE)
            return None, None
        return host, None
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - raises for an IPv6 address that is not one
    except ValueError:  # a bracket left open
        reader.problem(BROKER_URL_RULE)
        return None, None
    try:
        port = parts.port
    except ValueError:  # not a number, or above 65535
        port = -1
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or not _is_host(parts.hostname):
        reader.problem(BROKER_URL_RULE)
        return None, None
    if port is not None and not 1 <= port <= 65535:
        reader.problem(f"{BROKER_URL_RULE} (its port is not a number from 1 to 65535)")
        return None, None
    if parts.username is not None or parts.password is not None:
        reader.problem(
            "EMQX_BROKER_URL must not hold a login: set MQTT_USERNAME and MQTT_PASSWORD instead"
        )
        return None, None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        reader.problem(f"{BROKER_URL_RULE} (nothing after the port)")
        return None, None
    said = said_tls.lower() if said_tls is not None else None
    conflict = None
    if parts.scheme == "mqtt" and said in TRUE_WORDS:
        conflict = (
            "EMQX_BROKER_URL is mqtt:// (plain text) but MQTT_TLS=true: use mqtts:// or drop"
            " MQTT_TLS"
        )
    elif parts.scheme == "mqtts" and said in FALSE_WORDS:
        conflict = "EMQX_BROKER_URL is mqtts:// (TLS) but MQTT_TLS=false: use one or the other"
    if conflict:
        reader.problem(conflict)
    return parts.hostname, conflict


def _is_host(host: str) -> bool:
    """Return True for an IP address or a DNS name (no port, path, space or login in it)."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _HOST_NAME.fullmatch(host) is not None


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
