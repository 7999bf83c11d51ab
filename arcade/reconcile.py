"""Reconciliation with Stripe: every completed Checkout Session becomes what its webhook makes.

A webhook can fail to arrive for good: a wrong signing secret, an endpoint Stripe disabled, an
outage longer than Stripe's retries. This lists Stripe's complete Checkout Sessions created
since a moment and applies each one through the ledger, exactly as its
``checkout.session.completed`` would be (SPEC "Reconciliation with Stripe"). The store decides
what is news, so a second run, or a webhook arriving at the same moment, grants nothing twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from arcade.clock import iso, utc_now
from arcade.errors import ArcadeError, BrokerUnavailable, PaymentProviderError, StoreError
from arcade.ledger import Ledger, phase_of_session
from arcade.logs import log_event
from arcade.payment_states import (
    PENDING_PAYMENT,
    UNATTRIBUTED,
    is_cancelled,
    is_deliverable,
    is_grant,
    moves_forward,
)
from arcade.payments import StripeGateway
from arcade.stripe_objects import CheckoutSession, read_session

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = timedelta(hours=72)  # as long as Stripe retries a live webhook
_DURATION = re.compile(r"(\d{1,6})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class Summary:
    """What one reconciliation saw and did; ``errors`` names each failure in our words."""

    since: str
    seen: int = 0
    granted_now: int = 0
    already_recorded: int = 0
    unattributed: int = 0
    pending_payment: int = 0
    cancelled: int = 0
    undelivered: int = 0
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        """Return the one summary line a person reads."""
        text = (
            f"reconcile since {self.since}: {self.seen} seen, {self.granted_now} granted now,"
            f" {self.already_recorded} already recorded, {self.unattributed} unattributed"
        )
        if self.pending_payment:
            text += f", {self.pending_payment} awaiting payment"
        if self.cancelled:
            text += f", {self.cancelled} refunded or disputed before delivery"
        if self.undelivered:
            text += f", {self.undelivered} granted but not yet delivered (broker down)"
        if self.errors:
            text += f"; stopped early: {'; '.join(self.errors)} (the next run retries)"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "seen": self.seen,
            "granted_now": self.granted_now,
            "already_recorded": self.already_recorded,
            "unattributed": self.unattributed,
            "pending_payment": self.pending_payment,
            "cancelled": self.cancelled,
            "undelivered": self.undelivered,
            "errors": list(self.errors),
        }


def parse_window(text: str) -> timedelta:
    """Return the length of ``72h``, ``30m``, ``3d`` or ``900s``; raise ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError("use a whole number of s, m, h or d, such as 72h")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def reconcile(
    ledger: Ledger,
    gateway: StripeGateway,
    *,
    window: timedelta = DEFAULT_WINDOW,
    page_size: int = 100,
) -> Summary:
    """Apply every complete Checkout Session created within ``window`` that is news.

    A session already on record is counted and left alone (no Stripe call for it), unless its
    grant still waits for delivery, which is attempted again. A Stripe failure while listing
    stops the run; one while counting a session's units skips that session. Either is named in
    ``errors`` and retried by the next run; every session is applied whole or not at all.
    """
    since = utc_now() - window
    summary = Summary(since=iso(since))
    store = ledger.store
    sessions = gateway.completed_sessions(int(since.timestamp()), page_size=page_size)
    while True:
        try:
            raw = next(sessions)
        except StopIteration:
            break
        except (PaymentProviderError, StoreError) as exc:
            summary.errors.append(str(exc))
            break
        summary.seen += 1
        session_id = raw.get("id")
        try:
            session = read_session(raw)
            phase = phase_of_session(session)
            stored = store.get_payment(session.id)
            if stored is not None and not moves_forward(stored, phase):
                summary.already_recorded += 1
                if is_deliverable(stored):
                    _deliver_quietly(ledger, session, phase, summary)
                continue
            _apply(ledger, session, phase, summary)
        except PaymentProviderError as exc:
            summary.errors.append(f"{exc} (session {session_id})")
        except StoreError as exc:
            summary.errors.append(str(exc))
            break
        except ArcadeError as exc:  # a session Stripe sent without an id, say
            summary.errors.append(f"{exc} (session {session_id})")
    log_event(
        logger,
        "reconcile_finished",
        level=logging.WARNING if summary.errors else logging.INFO,
        **summary.as_dict(),
    )
    return summary


def _apply(ledger: Ledger, session: CheckoutSession, phase: str, summary: Summary) -> None:
    outcome = ledger.apply_session(session, phase, ids={"source": "reconcile"}, undelivered_ok=True)
    if outcome.result == "undelivered":  # stored; the delivery relay publishes it
        summary.undelivered += 1
    payment = ledger.store.get_payment(session.id)
    if payment is not None and is_cancelled(payment):
        summary.cancelled += 1
    elif outcome.granted:  # this run granted it, not another run or its webhook
        summary.granted_now += 1
    elif payment is not None and is_grant(payment):
        summary.already_recorded += 1
    elif payment is not None and payment.status == UNATTRIBUTED:
        summary.unattributed += 1
    elif payment is not None and payment.status == PENDING_PAYMENT:
        summary.pending_payment += 1
    else:
        summary.already_recorded += 1


def _deliver_quietly(
    ledger: Ledger, session: CheckoutSession, phase: str, summary: Summary
) -> None:
    try:
        ledger.apply_session(session, phase, ids={"source": "reconcile"})
    except BrokerUnavailable:
        summary.undelivered += 1
