"""The wire contract between the API and the cabinets: topics, messages, bounds, signatures.

This is the one module the cabinet client imports from the server's package, so a change to
the server never reaches a Raspberry Pi unless it changes what goes over the wire. It imports
nothing but the standard library; ``cryptography`` is imported where a key is first used.

Messages (SPEC "MQTT"; the first fields are the reference implementation's)::

    {prefix}/{machine_id}/coinpulse  {"machineId", "credits", "timestamp", "paymentId",
                                      "amount", "currency", "sig"}
    {prefix}/{machine_id}/gameover   {"machineId", "status": "game_over", "timestamp", "sig"}

``sig`` (SPEC "Delivery lasts until the cabinet confirms") is an Ed25519 signature, base64url
without padding, over the message without ``sig`` serialised as JSON with sorted keys,
separators ``,`` and ``:``, UTF-8. Anyone holding broker credentials can publish; only the API
holds the private key.

What a game costs (a machine's ``credits_per_game``) is counted the same on both sides: a game
over uses that many credits when that many are left, else it is a game without credit. The
cabinet counts a game when it ends, with the value it holds then, and says so in its
``POST /gameover`` body (``credits_per_game``, optional); the API counts that game with it,
and with the machine's configured value when the body has none (the reference's cabinets).
The answers to ``POST /gameover`` and to the heartbeat carry the machine's current
``credits_per_game``, which the cabinet keeps for the games that end after it. A change of
the value therefore applies from the next game the cabinet counts, on both sides alike.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

DEFAULT_TOPIC_PREFIX = "arcade/machine"
COINPULSE = "coinpulse"
GAMEOVER = "gameover"
SIGNATURE_ALGORITHM = "Ed25519"

# Safe as an MQTT topic level and as Stripe's client_reference_id.
MACHINE_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MACHINE_ID_RULE = "1 to 64 letters, digits, '_' or '-'"  # MACHINE_ID_PATTERN, for people
# What the API and the cabinet say when neither knows where the broker is.
BROKER_NOT_SET = "EMQX_BROKER_URL not set"
BROKER_UNREACHABLE = "the broker cannot be reached"
# What a cabinet counts (SPEC "Delivery lasts until the cabinet confirms").
MIN_CREDITS, MAX_CREDITS = 1, 1000
# Credits one game over uses on a machine (its credits_per_game): the API and the cabinet's
# counter both take this many per game, and count a game without credit when fewer are left.
MAX_CREDITS_PER_GAME = 100
CREDITS_PER_GAME_RULE = f"credits_per_game must be a whole number from 1 to {MAX_CREDITS_PER_GAME}"


def is_credits_per_game(value: object) -> bool:
    """Return whether ``value`` is a machine's credits per game (1..MAX_CREDITS_PER_GAME)."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 1 <= value <= MAX_CREDITS_PER_GAME
    )


PAYMENT_ID_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no space
MAX_MESSAGE_BYTES = 4096  # a coinpulse is ~250 bytes; anything near this is not ours

PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


class WireError(ValueError):
    """A message or key that is not what the contract says; the text says what is wrong."""


# --- topics ---------------------------------------------------------------------------------
def topic(prefix: str, machine_id: str, kind: str) -> str:
    """Return the topic of a machine's ``coinpulse`` or ``gameover``."""
    return f"{prefix.strip('/')}/{machine_id}/{kind}"


def is_valid_machine_id(value: object) -> bool:
    """Return True when ``value`` is a string usable as a machine id."""
    return isinstance(value, str) and MACHINE_ID_PATTERN.fullmatch(value) is not None


# --- messages -------------------------------------------------------------------------------
def coinpulse(
    *,
    machine_id: str,
    credits: int,
    timestamp: str,
    payment_id: str,
    amount: int,
    currency: str,
) -> dict[str, Any]:
    """Return a coinpulse message without its signature."""
    return {
        "machineId": machine_id,
        "credits": credits,
        "timestamp": timestamp,
        "paymentId": payment_id,
        "amount": amount,
        "currency": currency,
    }


def gameover(*, machine_id: str, timestamp: str) -> dict[str, Any]:
    """Return a gameover message without its signature."""
    return {"machineId": machine_id, "status": "game_over", "timestamp": timestamp}


def read_coinpulse(raw: bytes, machine_id: str) -> dict[str, Any]:
    """Return a coinpulse for ``machine_id`` read from the bytes a cabinet received.

    Raises WireError naming what is wrong: not a JSON object, another machine's, ``credits``
    outside 1..1000, a ``paymentId`` that is not 1..255 printable ASCII characters. The
    signature is checked separately (``verify``).
    """
    message = _json_object(raw)
    if message.get("machineId") != machine_id:
        raise WireError("the coinpulse is for another machine")
    credits = message.get("credits")
    if (
        not isinstance(credits, int)
        or isinstance(credits, bool)
        or not MIN_CREDITS <= credits <= MAX_CREDITS
    ):
        raise WireError(f"credits must be a whole number from {MIN_CREDITS} to {MAX_CREDITS}")
    payment_id = message.get("paymentId")
    if not isinstance(payment_id, str) or not PAYMENT_ID_PATTERN.fullmatch(payment_id):
        raise WireError("paymentId must be 1 to 255 printable ASCII characters")
    return message


def read_gameover(raw: bytes, machine_id: str) -> dict[str, Any]:
    """Return a gameover for ``machine_id``; raise WireError otherwise."""
    message = _json_object(raw)
    if message.get("machineId") != machine_id or message.get("status") != "game_over":
        raise WireError("not a gameover for this machine")
    return message


def _json_object(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise WireError(f"the message is over {MAX_MESSAGE_BYTES} bytes")
    try:
        message = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError("the message is not JSON in UTF-8") from exc
    if not isinstance(message, dict):
        raise WireError("the message is not a JSON object")
    return message


# --- signatures -----------------------------------------------------------------------------
def signed_bytes(message: dict[str, Any]) -> bytes:
    """Return the bytes a signature covers: the message without ``sig``, canonical JSON."""
    unsigned = {key: value for key, value in message.items() if key != "sig"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def b64url(data: bytes) -> str:
    """Return base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64url(text: str) -> bytes:
    """Return the bytes of base64url text with or without padding; raise WireError."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise WireError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise WireError("not base64url") from exc


def sign(message: dict[str, Any], private_key: Any) -> dict[str, Any]:
    """Return ``message`` with ``sig`` from an Ed25519 private key (``cryptography``)."""
    return {**message, "sig": b64url(private_key.sign(signed_bytes(message)))}


def load_public_key(text: str) -> Any:
    """Return an Ed25519 public key from its base64url 32 bytes; raise WireError."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = from_b64url(text.strip())
    if len(raw) != 32:
        raise WireError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(message: dict[str, Any], public_key: Any) -> None:
    """Raise WireError unless ``message["sig"]`` is the API's signature of the message."""
    from cryptography.exceptions import InvalidSignature

    signature = message.get("sig")
    if not isinstance(signature, str):
        raise WireError("the message is not signed")
    raw = from_b64url(signature)
    if len(raw) != 64:
        raise WireError("an Ed25519 signature is 64 bytes")
    try:
        public_key.verify(raw, signed_bytes(message))
    except InvalidSignature as exc:
        raise WireError("the signature does not match the API's key") from exc


# --- the broker's TLS -----------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Return True for localhost, 127.0.0.0/8 and ::1, judged by the name (no lookup).

    Plain-text MQTT may go only there: a broker password must never cross a network in clear
    (SPEC "Serving locally").
    """
    import ipaddress

    # One trailing dot is the same name, fully qualified; "localhost.." is no name at all.
    if host.lower().removesuffix(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ca_problem(ca_path: str) -> str | None:
    """Return a sentence naming what is wrong with the CA file, or None when it looks usable."""
    path = Path(ca_path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"{path.name} not found at {path} (set MQTT_CA_CERT to the broker's CA file)"
    except OSError:
        return f"{path.name} cannot be read at {path}"
    # The marker must open a line: the placeholder file mentions it inside a comment.
    if not any(line.strip() == PEM_CERTIFICATE for line in text.splitlines()):
        return (
            f"{path.name} holds no certificate: download the broker's CA certificate from"
            " the EMQX console (Deployment overview, 'CA Certificate') into it, or set"
            " MQTT_CA_CERT"
        )
    return None


def broker_tls_context(ca_path: str) -> ssl.SSLContext:
    """Return a TLS 1.2+ client context that verifies the broker and its host name.

    Raises WireError naming the CA file's problem.
    """
    import ssl

    problem = ca_problem(ca_path)
    if problem:
        raise WireError(problem)
    try:
        context = ssl.create_default_context(cafile=ca_path)
    except ssl.SSLError as exc:
        raise WireError(f"{Path(ca_path).name} holds no certificate that can be read") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context
