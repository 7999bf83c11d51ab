"""Settings read from the environment, each problem reported by the variable's name."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from arcade.common.broker import (
    DEFAULT_BROKER_PORT,
    DEFAULT_CA_CERT,
    plaintext_refusal,
    read_broker,
)
from arcade.common.env import EnvReader, http_address
from arcade.errors import SettingsError
from arcade.signing import SEED_RULE
from arcade.store import LAMBDA_SQLITE_REFUSAL, MALFORMED_URL
from arcade.wire import DEFAULT_TOPIC_PREFIX

DEFAULT_DATABASE_URL = "sqlite:///arcade.db"
# Where `python app.py` listens unless HOST says otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"
# SPEC "HTTP": a shorter operator key is refused (admin stays off).
MIN_ADMIN_KEY_LENGTH = 32
# Stripe's secret and restricted keys, which name their mode (SPEC "Which sessions buy credits").
STRIPE_KEY_PREFIXES = ("sk_live_", "sk_test_", "rk_live_", "rk_test_")
SIGNING_SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every webhook signing secret
# Credits one unit bought may give (a machine's own, or CREDITS_PER_UNIT).
MAX_CREDITS_PER_UNIT = 1000


# The settings a deployment may leave unset (each stops one part of the service), by variable
# name, and the field of Settings that holds each.
OPTIONAL_SETTINGS = {
    "STRIPE_API_KEY": "stripe_api_key",
    "STRIPE_WEBHOOK_SECRET": "stripe_webhook_secret",
    "STRIPE_PRICE_ID": "stripe_price_id",
    "EMQX_BROKER_URL": "broker_host",
    "ADMIN_API_KEY": "admin_api_key",
}


def not_set(names: Sequence[str], why: str = "") -> str:
    """Return the sentence that names unset settings, all at once: ``A and B not set`` and,
    when given, what their absence stops (``why`` starts with its own separator)."""
    return f"{' and '.join(names)} not set{why}"


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told, with the problems found while reading it."""

    stripe_api_key: str | None = field(default=None, repr=False)
    stripe_webhook_secret: str | None = field(default=None, repr=False)
    stripe_price_id: str | None = None
    # Out of the repr like every setting that may hold a credential: a login in a URL.
    stripe_api_base: str | None = field(default=None, repr=False)
    broker_host: str | None = None
    broker_port: int = DEFAULT_BROKER_PORT
    broker_tls: bool = True
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    mqtt_ca_cert: str = str(DEFAULT_CA_CERT)
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    # As given: a malformed one (a pasted postgres://user:password@…) may hold a password.
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    admin_api_key: str | None = field(default=None, repr=False)
    credits_per_unit: int = 1
    max_quantity: int = 10
    host: str = DEFAULT_HOST
    port: int = 5000
    in_lambda: bool = False
    # Seconds to wait for the broker's PUBACK before reconnecting (once) and giving up. The
    # delivery lease is derived from it (arcade.mqtt.delivery_lease_seconds).
    puback_timeout: float = 2.0
    # Seconds between two runs of the delivery relay in `python app.py`.
    delivery_retry_seconds: int = 10
    # A delivered payment its cabinet has not confirmed after this many seconds is unconfirmed.
    confirm_within_seconds: int = 300
    # Refund through Stripe a payment still unconfirmed after this many seconds (None: never).
    auto_refund_unconfirmed_seconds: int | None = None
    # A machine that heartbeats is offline once its last heartbeat is older than this.
    machine_offline_after_seconds: int = 90
    # base64url of the 32-byte Ed25519 seed that signs coinpulses (None: kept in the store).
    pulse_signing_key: str | None = field(default=None, repr=False)
    # Why the broker settings may not be used (plain text across a network), or None.
    broker_refused: str | None = None
    problems: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        reader = EnvReader(env)
        in_lambda = bool(env.get("AWS_LAMBDA_FUNCTION_NAME"))

        broker = read_broker(reader)
        broker_refused = broker.conflict
        if broker.host is not None and broker_refused is None:
            broker_refused = _plaintext_refusal(
                tls=broker.tls,
                allowed=reader.flag("MQTT_ALLOW_PLAINTEXT", default=False),
                in_lambda=in_lambda,
                host=broker.host,
            )
            if broker_refused:
                reader.problem(broker_refused)

        database_url = reader.text("DATABASE_URL") or DEFAULT_DATABASE_URL
        if not is_store_url(database_url):
            reader.problem(MALFORMED_URL)
        elif in_lambda and database_url.startswith("sqlite:"):
            reader.problem(LAMBDA_SQLITE_REFUSAL)

        api_base = reader.text("STRIPE_API_BASE")
        # Calls go nowhere rather than to Stripe itself when the stand-in's address is refused.
        refused_base = _api_base_refusal(api_base) if api_base else None
        if refused_base:
            reader.problem(refused_base)
            api_base = None
        api_key = reader.text("STRIPE_API_KEY")
        if api_key and not api_key.startswith(STRIPE_KEY_PREFIXES):
            # A publishable key fails every call, and a key of no known mode would let events of
            # either mode grant credits (SPEC "Which sessions buy credits").
            reader.problem(
                "STRIPE_API_KEY must be a secret or restricted key (sk_live_, sk_test_, rk_live_"
                " or rk_test_): payment links are off"
            )
            api_key = None
        webhook_secret = reader.text("STRIPE_WEBHOOK_SECRET")
        # "whsec_" alone is a signing key everyone knows: anyone could sign an event.
        if webhook_secret and not _is_signing_secret(webhook_secret):
            reader.problem("STRIPE_WEBHOOK_SECRET must start with whsec_ and go on after it")
            webhook_secret = None

        auto_refund = reader.integer(
            "AUTO_REFUND_UNCONFIRMED_SECONDS", default=0, low=0, high=30 * 86400
        )
        admin_api_key = reader.text("ADMIN_API_KEY")
        if admin_api_key is not None and len(admin_api_key) < MIN_ADMIN_KEY_LENGTH:
            reader.problem(
                f"ADMIN_API_KEY must be at least {MIN_ADMIN_KEY_LENGTH} characters:"
                " admin endpoints are off"
            )
            admin_api_key = None
        elif admin_api_key is not None and not (
            admin_api_key.isascii() and admin_api_key.isprintable()
        ):
            # An HTTP header carries ASCII: a key with other characters could never be sent.
            reader.problem(
                "ADMIN_API_KEY must be printable ASCII (letters, digits, punctuation):"
                " admin endpoints are off"
            )
            admin_api_key = None
        # Lambda listens on no port: a PORT left in its environment is no problem there.
        port = 5000 if in_lambda else reader.integer("PORT", default=5000, low=1, high=65535)
        pulse_signing_key = reader.text("PULSE_SIGNING_KEY")
        if pulse_signing_key is not None and not _is_ed25519_seed(pulse_signing_key):
            reader.problem(SEED_RULE)
            pulse_signing_key = None

        return cls(
            stripe_api_key=api_key,
            stripe_webhook_secret=webhook_secret,
            stripe_price_id=reader.text("STRIPE_PRICE_ID", "PRICE_ID"),
            stripe_api_base=api_base,
            broker_host=broker.host,
            broker_port=broker.port,
            broker_tls=broker.tls,
            mqtt_username=broker.username,
            mqtt_password=broker.password,
            mqtt_ca_cert=broker.ca_cert,
            topic_prefix=broker.topic_prefix,
            database_url=database_url,
            admin_api_key=admin_api_key,
            credits_per_unit=reader.integer(
                "CREDITS_PER_UNIT", default=1, low=1, high=MAX_CREDITS_PER_UNIT
            ),
            max_quantity=reader.integer("MAX_QUANTITY", default=10, low=1, high=99),
            host=reader.text("HOST") or DEFAULT_HOST,
            port=port,
            in_lambda=in_lambda,
            # Above 5 s one publish (two connects and two PUBACK waits) could outlast the
            # Lambda timeout and Stripe's patience with a webhook.
            puback_timeout=reader.number("MQTT_PUBACK_TIMEOUT", default=2.0, low=0.1, high=5),
            delivery_retry_seconds=reader.integer(
                "DELIVERY_RETRY_SECONDS", default=10, low=1, high=3600
            ),
            confirm_within_seconds=reader.integer(
                "CONFIRM_WITHIN_SECONDS", default=300, low=10, high=86400
            ),
            auto_refund_unconfirmed_seconds=auto_refund or None,
            machine_offline_after_seconds=reader.integer(
                "MACHINE_OFFLINE_AFTER_SECONDS", default=90, low=10, high=86400
            ),
            pulse_signing_key=pulse_signing_key,
            broker_refused=broker_refused,
            problems=tuple(reader.problems),
        )

    def missing(self, *names: str) -> list[str]:
        """Return which of the named settings are unset, by their variable names.

        Raises ValueError for a name that is not one of ``OPTIONAL_SETTINGS`` (a typo in the
        code, not a missing setting).
        """
        unknown = [name for name in names if name not in OPTIONAL_SETTINGS]
        if unknown:
            raise ValueError(f"not an optional setting: {', '.join(unknown)}")
        return [name for name in names if not getattr(self, OPTIONAL_SETTINGS[name])]

    def unusable(self, *names: str) -> str | None:
        """Return one sentence naming each of ``names`` that cannot be used, or None.

        A setting that was given but refused is named by the problem found when it was read
        (a publishable STRIPE_API_KEY is not "not set"); the others are "not set".
        """
        absent = self.missing(*names)
        refused = {name: self.refusal(name) for name in absent}
        said = [problem for problem in refused.values() if problem]
        unset = [name for name, problem in refused.items() if problem is None]
        return "; ".join([*said, *([not_set(unset)] if unset else [])]) or None

    def refusal(self, name: str) -> str | None:
        """Return the problem found when the setting ``name`` was read (given, but refused:
        every such sentence begins with the name), or None."""
        return next((p for p in self.problems if p.startswith(f"{name} ")), None)

    def require(self, *names: str) -> None:
        """Raise SettingsError naming every one of ``names`` that is unset or was refused."""
        problem = self.unusable(*names)
        if problem:
            raise SettingsError(problem)


def _plaintext_refusal(*, tls: bool, allowed: bool, in_lambda: bool, host: str) -> str | None:
    """Return why these broker settings must not be used, or None (SPEC "Serving locally").

    Broker passwords never cross a network in clear: plain-text MQTT goes to this machine only
    (judged by the name, no lookup), unless MQTT_ALLOW_PLAINTEXT=true, and never from Lambda.
    """
    if tls:
        return None
    if in_lambda:
        return "plain-text MQTT is refused in Lambda: set EMQX_BROKER_URL to mqtts://host:8883"
    return plaintext_refusal(host, tls=tls, allowed=allowed)


def _api_base_refusal(url: str) -> str | None:
    """Return why STRIPE_API_BASE must not be used, or None.

    It carries the Stripe secret key in every call: in clear (http://) only to this machine
    (judged by the name, as for MQTT), where it crosses no network.
    """
    from arcade.wire import is_loopback

    parts = http_address(url)
    if parts is None:
        return "STRIPE_API_BASE must be an http:// or https:// address"
    if parts.username is not None or parts.password is not None:
        # Named by the rule alone, like EMQX_BROKER_URL: the sentence is shown and logged.
        return "STRIPE_API_BASE must not hold a login: the Stripe key is its only credential"
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        return (
            "STRIPE_API_BASE is http:// to another machine: the Stripe key would cross the"
            " network in clear (use https://, or a stand-in on this machine)"
        )
    return None


def is_store_url(url: str) -> bool:
    """Return True for sqlite:///<a file> or dynamodb://<table> (an in-memory SQLite store
    would lose every credit at the next restart)."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///").strip()
        return bool(path) and path != ":memory:" and not path.startswith("file::memory")
    return url.startswith("dynamodb://") and bool(url.removeprefix("dynamodb://").strip())


def _is_signing_secret(text: str) -> bool:
    """Return True for whsec_ followed by the secret itself."""
    return text.startswith(SIGNING_SECRET_PREFIX) and len(text) > len(SIGNING_SECRET_PREFIX)


def _is_ed25519_seed(text: str) -> bool:
    from arcade.wire import WireError, from_b64url

    try:
        return len(from_b64url(text)) == 32
    except WireError:
        return False


def load_local_env(env_file: Path, environ: dict[str, str] | None = None) -> bool:
    """Read ``env_file`` into the environment, except in Lambda; return whether it was read.

    Raises SettingsError when the file cannot be read as text: going on without the settings
    in it (a DATABASE_URL, say) would quietly serve with others. Variables already set win over
    the file. In Lambda (``AWS_LAMBDA_FUNCTION_NAME`` set) the
    settings come from the function's configuration only: a stray file baked into an image
    must never override them.
    """
    env = os.environ if environ is None else environ
    if env.get("AWS_LAMBDA_FUNCTION_NAME") or not env_file.is_file():
        return False
    from dotenv import dotenv_values

    try:
        values = dotenv_values(env_file, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"{env_file.name} is not UTF-8 text (byte {exc.start + 1}): save it as UTF-8"
        ) from exc
    except OSError as exc:
        raise SettingsError(
            f"{env_file.name} cannot be read: {exc.strerror or type(exc).__name__}"
        ) from exc
    for name, value in values.items():
        if "\x00" in name or (value is not None and "\x00" in value):
            # No environment variable can hold one: os.environ raises ValueError.
            raise SettingsError(f"{env_file.name} holds a NUL character: save it as plain text")
        if value is not None and name not in env:
            env[name] = value
    return True
