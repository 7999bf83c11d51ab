"""The parts of Stripe's event objects the ledger reads, checked once, as typed values.

A verified signature proves an event came from whoever holds the signing secret, not that
every field has the type Stripe documents. Each field the ledger relies on is read here and a
value Stripe never sends (a string amount, a negative or astronomically large one, metadata
that is not an object) is refused as ``InvalidEvent`` (a 400 naming the field), so nothing
downstream can fail on it or book it wrongly.

Shapes: Stripe API reference, "The Checkout Session object", "The Charge object" and "The
Dispute object"; amounts are integers in the currency's smallest unit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from arcade.errors import InvalidEvent

# Far above any amount Stripe accepts (99,999,999 in most currencies), far below SQLite's
# and DynamoDB's integer limits.
MAX_AMOUNT = 10**12
# Unix seconds from 2000 to 2100: Stripe's ``created`` is always inside.
EARLIEST, LATEST = 946_684_800, 4_102_444_800
CURRENCY = re.compile(r"[a-z]{3}")


@dataclass(frozen=True)
class CheckoutSession:
    """A Checkout Session as the ledger reads it."""

    id: str
    payment_status: str | None
    mode: str | None
    amount_total: int
    amount_subtotal: int | None
    amount_discount: int
    currency: str
    created: int | None
    payment_intent: str | None
    payment_link: str | None
    metadata_machine_id: Any
    client_reference_id: Any


@dataclass(frozen=True)
class Refund:
    """What ``charge.refunded`` says: the charge's PaymentIntent and its refunded total."""

    payment_intent: str | None
    amount_refunded: int
    currency: str | None


@dataclass(frozen=True)
class Dispute:
    """What ``charge.dispute.created`` says."""

    payment_intent: str | None
    dispute_id: str | None


def event_object(event: dict[str, Any]) -> dict[str, Any]:
    """Return ``data.object`` of an event; raise InvalidEvent when it is not an object."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise InvalidEvent("the event's data.object is not an object")
    return obj


def read_session(obj: dict[str, Any]) -> CheckoutSession:
    """Return the Checkout Session in ``obj``; raise InvalidEvent naming a malformed field."""
    session_id = obj.get("id")
    if not isinstance(session_id, str) or not session_id:
        raise InvalidEvent("the event's Checkout Session has no id")
    metadata = _object(obj, "metadata")
    total_details = _object(obj, "total_details")
    currency = obj.get("currency")
    if currency is None:
        currency = "usd"
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        raise InvalidEvent("the Checkout Session's currency is not a currency code")
    created = obj.get("created")
    if created is not None and (not _whole(created) or not EARLIEST <= created <= LATEST):
        raise InvalidEvent("the Checkout Session's created is not a time Stripe sends")
    subtotal = obj.get("amount_subtotal")
    return CheckoutSession(
        id=session_id,
        payment_status=_text(obj, "payment_status"),
        mode=_text(obj, "mode"),
        amount_total=amount(obj.get("amount_total"), "amount_total", missing=0),
        amount_subtotal=None if subtotal is None else amount(subtotal, "amount_subtotal"),
        amount_discount=amount(
            (total_details or {}).get("amount_discount"), "amount_discount", missing=0
        ),
        currency=currency,
        created=created,
        payment_intent=_text(obj, "payment_intent"),
        payment_link=_text(obj, "payment_link"),
        metadata_machine_id=(metadata or {}).get("machine_id"),
        client_reference_id=obj.get("client_reference_id"),
    )


def read_refund(obj: dict[str, Any]) -> Refund:
    """Return what a refunded charge says; raise InvalidEvent naming a malformed field."""
    currency = obj.get("currency")
    return Refund(
        payment_intent=_text(obj, "payment_intent"),
        amount_refunded=amount(obj.get("amount_refunded"), "amount_refunded", missing=0),
        currency=currency if isinstance(currency, str) else None,
    )


def read_dispute(obj: dict[str, Any]) -> Dispute:
    """Return what a dispute says."""
    return Dispute(payment_intent=_text(obj, "payment_intent"), dispute_id=_text(obj, "id"))


def amount(value: Any, name: str, *, missing: int | None = None) -> int:
    """Return an amount in the smallest currency unit; raise InvalidEvent for anything else."""
    if value is None and missing is not None:
        return missing
    if not _whole(value) or not 0 <= value <= MAX_AMOUNT:
        raise InvalidEvent(f"{name} is not an amount Stripe sends")
    return value


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{name} is not a string")
    return value


def _object(obj: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, dict):
        raise InvalidEvent(f"{name} is not an object")
    return value
