"""Which MQTT messages the cabinet believes: the wire contract's shape and the API's signature.

Anyone holding broker credentials can publish on a cabinet's topics; only the API holds the
private key. So a message counts only when ``arcade.wire`` reads it as a coinpulse or gameover
for this machine *and* its ``sig`` verifies with the API's pinned public key.
"""

from __future__ import annotations

from typing import Any

from arcade import wire


class Refused(Exception):
    """A message the cabinet does not believe; ``reason`` says why, for the log."""

    def __init__(self, reason: str, *, payment_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        # Only once the shape is valid: then it is 1..255 printable ASCII, safe to log.
        self.payment_id = payment_id


def read_signed(kind: str, raw: bytes, machine_id: str, public_key: Any) -> dict[str, Any]:
    """Return the ``coinpulse`` or ``gameover`` in ``raw`` once its signature verifies.

    Raises Refused naming what is wrong, whatever the bytes hold.
    """
    try:
        if kind == wire.COINPULSE:
            message = wire.read_coinpulse(raw, machine_id)
        elif kind == wire.GAMEOVER:
            message = wire.read_gameover(raw, machine_id)
        else:
            raise Refused(f"not a topic this cabinet reads ({kind})")
    except wire.WireError as exc:
        raise Refused(str(exc)) from exc
    payment_id = message.get("paymentId") if kind == wire.COINPULSE else None
    try:
        wire.verify(message, public_key)
    except wire.WireError as exc:
        raise Refused(str(exc), payment_id=payment_id) from exc
    except ValueError as exc:
        # Text the signed form cannot hold (a lone surrogate such as "\ud800" in any field
        # cannot be encoded as UTF-8): the API never signed it.
        raise Refused("the message cannot be put in the form its signature covers") from exc
    return message


def pulse_key_from_answer(answer: dict[str, Any]) -> str:
    """Return the public key in ``GET /pulse-key``'s answer; raise Refused when it is not one."""
    if answer.get("alg") != wire.SIGNATURE_ALGORITHM:
        raise Refused(f"the API's key is not {wire.SIGNATURE_ALGORITHM}")
    key = answer.get("public_key")
    if not isinstance(key, str):
        raise Refused("the API's answer holds no public_key")
    try:
        wire.load_public_key(key)
    except wire.WireError as exc:
        raise Refused(f"the API's public_key is unusable ({exc})") from exc
    return key.strip()
