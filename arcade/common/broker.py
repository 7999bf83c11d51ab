"""Where the MQTT broker is, read from the same variables by the API and the cabinet.

``EMQX_BROKER_URL`` (alias ``MQTT_BROKER``) is a host name, ``mqtts://host:port`` or
``mqtt://host:port``; ``MQTT_TLS`` and ``EMQX_PORT`` (alias ``MQTT_PORT``) apply to a bare host.
Plain-text MQTT goes to this machine only unless ``MQTT_ALLOW_PLAINTEXT=true`` (SPEC "Serving
locally"): the broker password must never cross a network in clear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from arcade.common.env import FALSE_WORDS, TRUE_WORDS, EnvReader, is_host
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


def read_broker(reader: EnvReader) -> Broker:
    """Return the broker settings in ``reader``'s environment; each problem goes to ``reader``.

    The scheme of ``EMQX_BROKER_URL`` decides TLS; one that ``MQTT_TLS`` contradicts is a
    conflict, named rather than silently winning (SPEC "Serving locally").
    """
    url = reader.text("EMQX_BROKER_URL", "MQTT_BROKER")
    said_tls = reader.text("MQTT_TLS")
    tls = reader.flag("MQTT_TLS", default=True)
    given_port = reader.integer("EMQX_PORT", "MQTT_PORT", default=0, low=1, high=65535)  # 0: none
    address = _Address(None) if url is None else _read_url(reader, url, said_tls)
    if address.scheme_tls is not None:
        tls = address.scheme_tls
    # The URL's port, else EMQX_PORT, else for mqtt:// the scheme's own 1883 (a plain-text
    # client on the TLS port only ever times out) and 8883 otherwise (SPEC "Settings").
    default_port = PLAINTEXT_BROKER_PORT if address.scheme_tls is False else DEFAULT_BROKER_PORT
    port = address.port or given_port or default_port
    return Broker(
        host=address.host,
        port=port,
        tls=tls,
        username=reader.text("MQTT_USERNAME"),
        password=reader.text("MQTT_PASSWORD"),
        ca_cert=reader.text("MQTT_CA_CERT") or str(DEFAULT_CA_CERT),
        topic_prefix=_topic_prefix(reader),
        conflict=address.conflict,
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


class _Address(NamedTuple):
    """What EMQX_BROKER_URL says: its host (None: unset or malformed), and for a URL the TLS
    its scheme means, its port (None: none given) and a conflict with MQTT_TLS."""

    host: str | None
    scheme_tls: bool | None = None
    port: int | None = None
    conflict: str | None = None


def _read_url(reader: EnvReader, url: str, said_tls: str | None) -> _Address:
    """Return what EMQX_BROKER_URL says; its host is None when it is malformed.

    A malformed one is named by the rule alone: it may hold a password.
    """
    if "://" not in url:
        host = url.removeprefix("[").removesuffix("]") if url.startswith("[") else url
        if not is_host(host):
            reader.problem(BROKER_URL_RULE)
            return _Address(None)
        return _Address(host)
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - raises for an IPv6 address that is not one
    except ValueError:  # a bracket left open
        reader.problem(BROKER_URL_RULE)
        return _Address(None)
    try:
        port = parts.port
    except ValueError:  # not a number, or above 65535
        port = -1
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or not is_host(parts.hostname):
        reader.problem(BROKER_URL_RULE)
        return _Address(None)
    if port is not None and not 1 <= port <= 65535:
        reader.problem(f"{BROKER_URL_RULE} (its port is not a number from 1 to 65535)")
        return _Address(None)
    if parts.username is not None or parts.password is not None:
        reader.problem(
            "EMQX_BROKER_URL must not hold a login: set MQTT_USERNAME and MQTT_PASSWORD instead"
        )
        return _Address(None)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        reader.problem(f"{BROKER_URL_RULE} (nothing after the port)")
        return _Address(None)
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
    return _Address(parts.hostname, parts.scheme == "mqtts", port, conflict)


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
