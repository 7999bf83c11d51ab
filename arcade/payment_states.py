"""A payment's state machine: the facts kept about a Checkout Session and what follows from them.

A payment is a set of facts that only accumulate: the session's payment phase moves forward
(``pending_payment`` → ``payment_failed`` or ``paid``), the refunded amount only grows, a
dispute and a delivery are recorded once. Its status, what it adds to its machine's credits and
revenue, and whether its coinpulse may still be published are all computed from those facts
here, once; the stores only make each change atomic (SPEC "Payment states move forward only").

Because what a payment adds to its machine is a function of its facts, every change is applied
to the machine as ``counted(after) - counted(before)`` in the same transaction as the payment:
a late, repeated or reordered event can neither count twice nor leave the books behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from arcade.store.base import IntentRecord, Payment, changed

# The session's payment phase (a fact), SPEC "Payment states move forward only".
PENDING_PAYMENT = "pending_payment"  # checkout completed, money not there yet (async methods)
PAYMENT_FAILED = "payment_failed"  # the async payment failed: nothing granted, ever
PAID = "paid"  # the money is there (or none was due): credits if attributed

# Statuses, derived from the facts by ``status_of``.
UNATTRIBUTED = "unattributed"  # paid, but buys nothing here; ``reason`` says why
PENDING_DELIVERY = "pending_delivery"  # granted and stored, coinpulse not yet acknowledged
DELIVERED = "delivered"  # the broker acknowledged the coinpulse
CREDITED = "credited"  # the cabinet confirmed it fired the coins
REFUNDED = "refunded"  # money returned in full (before delivery: the grant is cancelled)
PARTIALLY_REFUNDED = "partially_refunded"
DISPUTED = "disputed"  # the player disputed the charge; the operator must look

STATUSES = (
    PENDING_PAYMENT,
    PAYMENT_FAILED,
    UNATTRIBUTED,
    PENDING_DELIVERY,
    DELIVERED,
    CREDITED,
    PARTIALLY_REFUNDED,
    REFUNDED,
    DISPUTED,
)

# How far along each phase is; a phase never moves to a lower rank. A failed async payment is
# final: Stripe never completes the same session after ``async_payment_failed``.
_PHASE_RANK = {PENDING_PAYMENT: 0, PAYMENT_FAILED: 1, PAID: 1}


@dataclass(frozen=True)
class Counted:
    """What one payment adds to its machine: credits granted and revenue (smallest unit)."""

    credits: int = 0
    revenue: int = 0

    def __sub__(self, other: Counted) -> Counted:
        return Counted(self.credits - other.credits, self.revenue - other.revenue)


NOTHING = Counted()


def phase_of(payment: Payment) -> str:
    """Return the payment's phase (records written before phases existed: from the status)."""
    if payment.phase:
        return payment.phase
    return payment.status if payment.status in (PENDING_PAYMENT, PAYMENT_FAILED) else PAID


def is_grant(payment: Payment) -> bool:
    """Return True when the payment bought credits on a machine (whatever happened after)."""
    return (
        phase_of(payment) == PAID
        and payment.reason is None
        and payment.machine_id is not None
        and payment.credits > 0
    )


def is_fully_refunded(payment: Payment) -> bool:
    """Return True when all the money of a paid payment went back."""
    return payment.amount_refunded > 0 and payment.amount_refunded >= payment.amount


def is_cancelled(payment: Payment) -> bool:
    """Return True for a grant refunded in full, or disputed, before its delivery.

    A partial refund cancels nothing: the operator gave some money back and the player keeps
    what was bought (as after delivery); revenue counts the money kept.
    """
    return (
        is_grant(payment)
        and payment.delivered_at is None
        and (is_fully_refunded(payment) or payment.disputed_at is not None)
    )


def is_deliverable(payment: Payment) -> bool:
    """Return True when the coinpulse may (still) be published: granted, neither sent nor
    cancelled."""
    return (
        is_grant(payment)
        and payment.delivered_at is None
        and payment.credited_at is None
        and not is_cancelled(payment)
    )


def is_awaiting_confirmation(payment: Payment) -> bool:
    """Return True for a delivered grant its cabinet has not confirmed, nothing refunded."""
    return (
        is_grant(payment)
        and payment.delivered_at is not None
        and payment.credited_at is None
        and payment.amount_refunded == 0
        and payment.disputed_at is None
    )


def status_of(payment: Payment) -> str:
    """Return the status the facts give, most urgent for an operator first."""
    phase = phase_of(payment)
    if phase != PAID:
        return phase
    if payment.disputed_at is not None:
        return DISPUTED
    if not is_grant(payment):
        return UNATTRIBUTED  # a refund of it is kept in amount_refunded; the reason stays shown
    if payment.amount_refunded > 0:
        return REFUNDED if is_fully_refunded(payment) else PARTIALLY_REFUNDED
    if payment.credited_at is not None:
        return CREDITED
    return DELIVERED if payment.delivered_at is not None else PENDING_DELIVERY


def counted(payment: Payment | None) -> Counted:
    """Return what the payment adds to its machine's credits granted and revenue.

    A grant counts its credits unless it was cancelled before delivery (a delivered grant keeps
    them: they may have been played), and the money kept (amount − refunded) as revenue. A
    payment that granted nothing adds nothing.
    """
    if payment is None or not is_grant(payment):
        return NOTHING
    credits = 0 if is_cancelled(payment) else payment.credits
    # The same money the revenue journal books (sold, given back), so the two always agree.
    return Counted(credits, sold(payment) - given_back(payment))


def sold(payment: Payment | None) -> int:
    """Return what a grant brought in (its amount), or 0 for a payment that granted nothing."""
    return payment.amount if payment is not None and is_grant(payment) else 0


def given_back(payment: Payment | None) -> int:
    """Return what was refunded of a grant (at most its amount), or 0."""
    if payment is None or not is_grant(payment):
        return 0
    return min(payment.amount_refunded, payment.amount)


def settle(payment: Payment) -> Payment:
    """Return the payment with its status and outbox entry brought in line with its facts.

    A grant whose coinpulse is still owed stays in the outbox (``due_at`` set: when the relay
    may publish it next, kept as the ledger last set it); so does a delivered grant awaiting
    its cabinet's confirmation while the ledger set a deadline for it (the relay refunds it
    then). Anything else leaves the outbox.
    """
    status = status_of(payment)
    if is_deliverable(payment):
        due = payment.due_at or payment.delivery_claimed_until or payment.granted_at
        due = due or payment.created_at
    elif is_awaiting_confirmation(payment):
        due = payment.due_at
    else:
        due = None
    if payment.status == status and payment.due_at == due:
        return payment
    return changed(payment, status=status, due_at=due)


def moves_forward(stored: Payment, phase: str) -> bool:
    """Return True when an event reporting ``phase`` is news for the stored payment."""
    current = phase_of(stored)
    return current == PENDING_PAYMENT and _PHASE_RANK[phase] > _PHASE_RANK[current]


def with_refund(payment: Payment, amount_refunded: int, now: datetime) -> Payment:
    """Return the payment with Stripe's cumulative refunded amount: never lower than stored,
    never more than was paid."""
    if payment.amount:
        amount_refunded = min(amount_refunded, payment.amount)
    if amount_refunded <= payment.amount_refunded:
        return payment
    return settle(changed(payment, amount_refunded=amount_refunded, updated_at=now))


def with_dispute(payment: Payment, now: datetime) -> Payment:
    """Return the payment marked disputed (once)."""
    if payment.disputed_at is not None:
        return payment
    return settle(changed(payment, disputed_at=now, updated_at=now))


def with_intent_facts(payment: Payment, intent: IntentRecord | None, now: datetime) -> Payment:
    """Return the payment with what its PaymentIntent's events said before it was recorded."""
    if intent is None:
        return payment
    merged = with_refund(payment, intent.amount_refunded, now)
    if intent.disputed_at is not None:
        merged = with_dispute(merged, now)
    return merged
