"""The rules about money: which events grant credits, how many, exactly once, and game sessions.

Both stores serve these rules; they only make each step atomic. A payment's facts and what
follows from them (status, what it adds to its machine, whether it may still be published) are
in ``arcade.payment_states``; this module decides which facts each event adds. Every change is
a read, a decision, and a write that holds only if nothing changed since the read (the
payment's version); a write that loses is decided again from a fresh read.

The order of a grant is fixed: the grant is stored together with a delivery lease, the
coinpulse is published and the broker's PUBACK awaited, then the payment is marked delivered.
A failure anywhere before the mark leaves the grant stored and undelivered, and the next
delivery attempt after the lease publishes the same grant again (same ``paymentId``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from arcade import wire
from arcade.clock import from_unix, iso, iso_or_none, iso_seconds, later, utc_now
from arcade.errors import (
    NOT_REGISTERED,
    BrokerUnavailable,
    Conflict,
    GameOverInProgress,
    PaymentProviderError,
    PublishCancelled,
    PublishRefused,
    SettingsError,
    StoreError,
    UnknownPayment,
)
from arcade.logs import log_event
from arcade.mqtt import Publisher
from arcade.payment_states import (
    PAID,
    PAYMENT_FAILED,
    PENDING_PAYMENT,
    REFUNDED,
    UNATTRIBUTED,
    counted,
    given_back,
    is_awaiting_confirmation,
    is_cancelled,
    is_deliverable,
    is_grant,
    moves_forward,
    settle,
    sold,
    with_dispute,
    with_intent_facts,
    with_refund,
)
from arcade.payments import StripeGateway
from arcade.pricing import Plan, credits_for, machine_zone, plan_of
from arcade.signing import PulseSigner
from arcade.store.base import (
    GameOverKey,
    IntentRecord,
    Lost,
    Machine,
    MachineState,
    Payment,
    PaymentLink,
    PaymentQuery,
    PlanVersion,
    RevenueEntry,
    SessionStart,
    StateDelta,
    Store,
    changed,
)
from arcade.stripe_objects import (
    CheckoutSession,
    Dispute,
    Refund,
    event_object,
    read_dispute,
    read_refund,
    read_session,
)
from arcade.wire import is_valid_machine_id

logger = logging.getLogger(__name__)

# The longest pause the relay leaves between two attempts at one grant (after 2, 4, 8 … s).
MAX_BACKOFF_SECONDS = 60
# A grant still undelivered this long after it was granted is reported once, as an error.
UNDELIVERABLE_AFTER_SECONDS = 3600
# At most this many grants are taken from the outbox in one relay run.
RELAY_BATCH = 100
# A change that keeps losing to concurrent writers is given up after this many reads.
WRITE_ATTEMPTS = 20
# How long a game over's Idempotency-Key is remembered (SPEC "POST /gameover").
GAME_OVER_KEY_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Outcome:
    """What applying an event or a session did, for the answer and the log.

    ``changed`` is True when the store changed; ``granted`` when this call granted credits.
    """

    result: str
    payment_id: str | None = None
    machine_id: str | None = None
    credits: int = 0
    changed: bool = False
    granted: bool = False


@dataclass
class RelayReport:
    """What one relay run found due and delivered; ``stopped`` says why it ended early."""

    due: int = 0
    delivered: int = 0
    refunded: int = 0
    failed: int = 0
    stopped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "due": self.due,
            "delivered": self.delivered,
            "refunded": self.refunded,
            "failed": self.failed,
            "stopped": self.stopped,
        }


@dataclass(frozen=True)
class Attribution:
    """Which machine a session pays, how many credits it buys, or why it buys none."""

    machine_id: str | None
    credits: int = 0
    reason: str | None = None
    bundle: str | None = None  # the plan's bundle (names joined by " + " when several)
    plan_version: int | None = None
    credits_per_game: int = 1  # the machine's, so its play session opens with no other read


class Ledger:
    """Apply Stripe events and game overs to the store, publishing what cabinets must hear."""

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        gateway: StripeGateway,
        signer: PulseSigner,
        *,
        topic_prefix: str,
        default_credits_per_unit: int,
        default_price_id: str | None = None,
        livemode: bool | None = None,
        delivery_lease_seconds: float = 30.0,
        max_quantity: int = 10,
        confirm_within_seconds: int = 300,
        auto_refund_seconds: int | None = None,
    ):
        """``livemode`` is the mode of the Stripe key (None: unknown, any event's mode goes);
        ``delivery_lease_seconds`` must outlast the slowest publish
        (``arcade.mqtt.delivery_lease_seconds``)."""
        self.store = store
        self.publisher = publisher
        self.gateway = gateway
        self.signer = signer
        self.topic_prefix = topic_prefix
        self.default_credits_per_unit = default_credits_per_unit
        self.default_price_id = default_price_id
        self.livemode = livemode
        self.lease_seconds = delivery_lease_seconds
        self.max_quantity = max_quantity
        self.confirm_within_seconds = confirm_within_seconds
        self.auto_refund_seconds = auto_refund_seconds

    # --- webhooks ---------------------------------------------------------------------------
    def apply_event(self, event: dict[str, Any]) -> Outcome:
        """Apply one verified Stripe event (SPEC "POST /webhook").

        Raises InvalidEvent for a session event without a session id, StoreError when the
        store fails, BrokerUnavailable when the coinpulse is not acknowledged (the grant stays
        stored), and PaymentProviderError when Stripe fails while units are counted.
        """
        event_type = event.get("type")
        ignored = self._foreign(event)
        if ignored is not None:
            log_event(
                logger,
                "webhook_ignored",
                level=logging.WARNING,
                event_id=event.get("id"),
                event_type=event_type,
                reason=ignored,
            )
            return Outcome("ignored")
        ids = {"source": "webhook", "event_id": event.get("id"), "event_type": event_type}
        if event_type == "checkout.session.completed":
            session = read_session(event_object(event))
            return self.apply_session(session, phase_of_session(session), ids=ids)
        if event_type == "checkout.session.async_payment_succeeded":
            return self.apply_session(read_session(event_object(event)), PAID, ids=ids)
        if event_type == "checkout.session.async_payment_failed":
            return self.apply_session(read_session(event_object(event)), PAYMENT_FAILED, ids=ids)
        if event_type == "charge.refunded":
            return self._refund(read_refund(event_object(event)), ids)
        if event_type == "charge.dispute.created":
            return self._dispute(read_dispute(event_object(event)), ids)
        return Outcome("ignored")

    def _foreign(self, event: dict[str, Any]) -> str | None:
        """Return why an event is not this deployment's to apply, or None when it is."""
        if event.get("account") is not None:
            return "a connected account's event"
        live = event.get("livemode")
        if self.livemode is not None and live is not self.livemode:
            return (
                "a live-mode event, and STRIPE_API_KEY is a test key"
                if live
                else "a test-mode event, and STRIPE_API_KEY is a live key"
            )
        return None

    def apply_session(
        self,
        session: CheckoutSession,
        phase: str,
        *,
        ids: dict[str, Any] | None = None,
        undelivered_ok: bool = False,
    ) -> Outcome:
        """Record what a Checkout Session's event says, granting and publishing when it paid.

        ``phase`` is what the event reports: PENDING_PAYMENT, PAYMENT_FAILED or PAID. A phase
        that is no news (late, repeated, reordered) changes nothing, but a grant still waiting
        for delivery is published. Used by webhooks and by reconciliation alike.
        """
        ids = {"source": "webhook"} | (ids or {})
        payment_id = session.id
        intent_id = session.payment_intent
        attribution: Attribution | None = None
        # The intent is taken for not stored until a refused write says otherwise; after a
        # refusal that did not carry it, it is read again only if this session still needs it.
        intent: IntentRecord | None = None
        intent_unknown = False
        stored = self.store.get_payment(payment_id)
        for _ in range(WRITE_ATTEMPTS):
            if stored is not None and not moves_forward(stored, phase):
                return self._existing(stored, ids)
            if attribution is None:
                attribution = self._attribute(session, paid=phase == PAID)
            now = utc_now()
            new = self._session_payment(session, phase, attribution, stored, now)
            pointer = None
            # A refund kept on the intent before the session came counts on its own day.
            refunded_at = now
            if intent_id and (stored is None or stored.payment_intent != intent_id):
                if intent_unknown:
                    intent, intent_unknown = self.store.get_intent(intent_id), False
                known = intent or IntentRecord(intent_id)
                if known.payment_id in (None, payment_id):
                    new = with_intent_facts(new, known, now)
                    pointer = changed(known, payment_id=payment_id, updated_at=now)
                    if known.amount_refunded and known.updated_at:
                        refunded_at = known.updated_at
            new = settle(new)
            if is_deliverable(new):
                new = self._leased(new, now)
            written = self.store.commit_payment(
                new,
                intent=pointer,
                delta=_delta(stored, new),
                entries=_entries(stored, new, refunded_at),
            )
            if written is True:
                break
            # Decide again from what won, as the refusal gave it; read only what it did not.
            if written.payment is not None:
                stored = written.payment
            elif written.intent is None:
                stored = self.store.get_payment(payment_id)
            # The intent may have gained a refund meanwhile.
            intent, intent_unknown = written.intent, written.intent is None
        else:
            raise StoreError("the payment kept changing while it was recorded; try again")
        payment = changed(new, version=new.version + 1)
        granted = is_grant(payment) and not (stored is not None and is_grant(stored))
        if granted:
            log_event(
                logger,
                "credits_granted",
                payment_id=payment_id,
                machine_id=payment.machine_id,
                credits=payment.credits,
                amount=payment.amount,
                currency=payment.currency,
                **ids,
            )
        if is_deliverable(payment):
            try:
                outcome = self._publish(payment, ids, per_game=attribution.credits_per_game)
                return changed(outcome, changed=True, granted=granted)
            except BrokerUnavailable:
                if not undelivered_ok:
                    raise
                # The grant is stored; the delivery relay publishes it.
                return Outcome(
                    "undelivered",
                    payment_id,
                    payment.machine_id,
                    payment.credits,
                    changed=True,
                    granted=granted,
                )
        return changed(self._report(payment, ids), changed=True, granted=granted)

    def _existing(self, stored: Payment, ids: dict[str, Any]) -> Outcome:
        """Answer an event that adds nothing to a stored payment; deliver a waiting grant."""
        if is_deliverable(stored):
            return self._deliver(stored, ids)
        if stored.delivered_at is not None:
            return self._log_outcome(ids, _outcome("already_delivered", stored))
        if stored.status in (PENDING_PAYMENT, PAYMENT_FAILED):
            return self._log_outcome(
                ids, _outcome("already_recorded", stored), status=stored.status
            )
        return self._report(stored, ids)

    def _report(self, payment: Payment, ids: dict[str, Any]) -> Outcome:
        """Log and answer a recorded payment that will not be published."""
        if payment.status == UNATTRIBUTED:
            return self._log_outcome(
                ids,
                Outcome("unattributed", payment.payment_id, payment.machine_id),
                level=logging.WARNING,
                reason=payment.reason,
            )
        if is_cancelled(payment):
            return self._log_outcome(
                ids, _outcome("grant_cancelled", payment), status=payment.status
            )
        return self._log_outcome(ids, _outcome("recorded", payment), status=payment.status)

    def _session_payment(
        self,
        session: CheckoutSession,
        phase: str,
        attribution: Attribution,
        stored: Payment | None,
        now: datetime,
    ) -> Payment:
        """Return the payment a session's event makes, keeping what is already stored."""
        facts: dict[str, Any] = {
            "phase": phase,
            "machine_id": attribution.machine_id,
            "credits": attribution.credits,
            "reason": attribution.reason,
            "bundle": attribution.bundle,
            "plan_version": attribution.plan_version,
            "amount": session.amount_total,
            "currency": session.currency,
            "updated_at": now,
        }
        if phase == PAID:
            facts["granted_at"] = now
        if session.payment_intent:
            facts["payment_intent"] = session.payment_intent
        if stored is not None:
            return changed(stored, **facts)
        created = from_unix(session.created) if session.created is not None else now
        return Payment(payment_id=session.id, status=phase, created_at=created, **facts)

    # --- delivery ---------------------------------------------------------------------------
    def _deliver(self, payment: Payment, ids: dict[str, Any]) -> Outcome:
        """Take the delivery lease of a waiting grant and publish it, unless someone holds it."""
        for _ in range(WRITE_ATTEMPTS):
            if not is_deliverable(payment):
                return self._existing(payment, ids)
            now = utc_now()
            held = payment.delivery_claimed_until
            if held is not None and held >= now:
                # Another request is publishing this grant right now. If it fails it answers
                # Stripe with an error, and Stripe's retry of that delivery publishes it.
                return self._log_outcome(ids, _outcome("delivery_in_progress", payment))
            claimed = self._leased(payment, now)
            written = self.store.commit_payment(claimed)
            if written is True:
                return self._publish(changed(claimed, version=claimed.version + 1), ids)
            payment = self._winner(written, payment)
        raise StoreError("the payment kept changing while its delivery was claimed; try again")

    def _publish(
        self, payment: Payment, ids: dict[str, Any], *, per_game: int | None = None
    ) -> Outcome:
        """Publish a leased grant's coinpulse, then mark it delivered.

        ``per_game`` is the machine's credits per game when the caller has read the machine
        (a webhook has); otherwise the machine is read once the coinpulse is out.
        """
        machine_id = payment.machine_id or ""
        log_ids = {"payment_id": payment.payment_id, "machine_id": machine_id} | ids
        try:
            pulse = self._pulse(payment)
            self.publisher.publish(
                self.topic(machine_id, wire.COINPULSE),
                pulse,
                log_ids=log_ids,
                still_wanted=lambda: self._still_deliverable(payment),
            )
        except PublishCancelled:
            # Refunded or disputed while the broker was being reached: nothing was sent.
            return self._existing(self._reread(payment), ids)
        except BaseException:
            self._back_off_quietly(payment)
            raise
        if per_game is None:
            per_game = _per_game(self.store.get_machine(machine_id))
        self._mark_delivered(payment, utc_now(), per_game)
        return self._log_outcome(ids, _outcome("delivered", payment))

    def _pulse(self, payment: Payment) -> dict[str, Any]:
        """Return a grant's signed coinpulse.

        Ed25519 is deterministic: every copy of a grant carries the same signature.
        """
        granted_at = payment.granted_at or payment.created_at
        return self.signer.sign(
            wire.coinpulse(
                machine_id=payment.machine_id or "",
                credits=payment.credits,
                timestamp=iso_seconds(granted_at),
                payment_id=payment.payment_id,
                amount=payment.amount,
                currency=payment.currency,
            )
        )

    def _mark_delivered(self, payment: Payment, now: datetime, per_game: int) -> None:
        """Record that the broker acknowledged the coinpulse (whatever happened meanwhile) and
        open a play session on its machine if none is open.

        A game of one credit can always start on a delivered grant, so its session opens in the
        same transaction; a game of several waits until that many credits are left, which
        takes a read of the machine's state first.
        """
        machine_id = payment.machine_id or ""
        session = SessionStart(machine_id, _new_session_id(), now) if per_game <= 1 else None
        for _ in range(WRITE_ATTEMPTS):
            if payment.delivered_at is not None:
                # Marked meanwhile (the cabinet's confirmation can come first): the session is
                # still opened, as a delivered grant's is.
                break
            # A refund that came in while the pulse was in flight found the grant undelivered;
            # it was delivered after all, so its credits count again (see counted()).
            deadline = later(now, self.auto_refund_seconds) if self.auto_refund_seconds else None
            delivered = settle(
                changed(
                    payment,
                    delivered_at=now,
                    delivery_claimed_until=None,
                    due_at=deadline,
                    updated_at=now,
                )
            )
            written = self.store.commit_payment(
                delivered,
                delta=_delta(payment, delivered),
                entries=_entries(payment, delivered, now),
                open_session=session,
            )
            if written is True:
                session = None
                break
            payment = self._winner(written, payment)
        else:
            raise StoreError("the payment kept changing while it was marked delivered; try again")
        if session is not None:
            try:
                self.store.commit_payment(None, open_session=session)
            except StoreError:
                # The grant is delivered; the session mirror is only bookkeeping.
                log_event(
                    logger, "session_open_failed", level=logging.WARNING, machine_id=machine_id
                )
        elif per_game > 1:
            self._open_session_if_idle(machine_id, now, per_game)

    # --- confirmation -----------------------------------------------------------------------
    def confirm(self, machine_id: str, payment_id: str) -> Payment:
        """Record that the cabinet fired a grant's coins: the payment becomes ``credited``.

        A confirmation of a grant not yet marked delivered (its PUBACK came but the mark did
        not) is proof of delivery too. Repeating it changes nothing. Raises UnknownPayment when
        no grant with this id belongs to the machine, StoreError when the store fails.
        """
        payment = self.store.get_payment(payment_id)
        for _ in range(WRITE_ATTEMPTS):
            if payment is None or payment.machine_id != machine_id or not is_grant(payment):
                raise UnknownPayment(payment_id, machine_id)
            if payment.credited_at is not None:
                return payment
            if is_cancelled(payment):
                # Refunded in full or disputed before any PUBACK: its coinpulse was withdrawn,
                # and an acknowledgement must not bring its credits back.
                raise Conflict(
                    f"payment {payment_id} was {payment.status} before it was delivered:"
                    " its credits are not owed",
                    code="grant_cancelled",
                )
            now = utc_now()
            credited = settle(
                changed(
                    payment,
                    credited_at=now,
                    delivered_at=payment.delivered_at or now,
                    delivery_claimed_until=None,
                    due_at=None,
                    updated_at=now,
                )
            )
            written = self.store.commit_payment(
                credited, delta=_delta(payment, credited), entries=_entries(payment, credited, now)
            )
            if written is True:
                log_event(
                    logger,
                    "credits_confirmed",
                    payment_id=payment_id,
                    machine_id=machine_id,
                    credits=payment.credits,
                )
                return changed(credited, version=credited.version + 1)
            payment = written.payment  # what won, from the refusal (None: no longer stored)
        raise StoreError("the payment kept changing while it was confirmed; try again")

    # --- what operators do -------------------------------------------------------------------
    def resend(self, payment_id: str) -> Outcome:
        """Publish a grant's coinpulse again, same ``paymentId`` (SPEC "Operators").

        A grant still owed is delivered as the relay would (and marked delivered); a delivered
        one is published again as it was signed, and cabinets drop the copy if they already
        counted it. Raises UnknownPayment, Conflict for a payment that granted nothing or was
        refunded in full or disputed, BrokerUnavailable or PublishRefused when the broker did
        not acknowledge, StoreError.
        """
        payment = self.store.get_payment(payment_id)
        if payment is None:
            raise UnknownPayment(payment_id)
        if not is_grant(payment):
            raise Conflict(
                f"payment {payment_id} granted no credits ({payment.status}): nothing to resend",
                code="not_resendable",
            )
        if payment.disputed_at is not None or payment.status == REFUNDED:
            raise Conflict(
                f"payment {payment_id} is {payment.status}: its credits are not owed",
                code="not_resendable",
            )
        ids = {"source": "operator"}
        if is_deliverable(payment):
            return self._deliver(payment, ids)
        self.publisher.publish(
            self.topic(payment.machine_id or "", wire.COINPULSE),
            self._pulse(payment),
            log_ids={"payment_id": payment_id, "machine_id": payment.machine_id, **ids},
        )
        return self._log_outcome(ids, _outcome("resent", payment))

    def grant_manually(
        self, machine_id: str, credits: int, reason: str, *, key: str | None = None
    ) -> tuple[Payment, Outcome]:
        """Grant credits by hand (a jammed coin mechanism, a goodwill game) and deliver them.

        The grant is a payment ``manual_…`` of amount 0 with the operator's ``reason``: it
        counts in credits granted, never in revenue, and is signed and delivered like any other
        (the relay delivers it when the broker is down now). The same ``key`` (the request's
        Idempotency-Key) gives the same grant, never a second one. Raises Conflict when the key
        was used for a different grant, StoreError.
        """
        digest = uuid.uuid4().hex
        if key is not None:
            digest = hashlib.sha256(f"{machine_id}\n{key}".encode()).hexdigest()[:32]
        payment_id = f"manual_{digest}"
        ids = {"source": "operator"}
        stored = self.store.get_payment(payment_id)
        fresh = False
        if stored is None:
            now = utc_now()
            grant = settle(
                Payment(
                    payment_id=payment_id,
                    status=PAID,
                    created_at=now,
                    machine_id=machine_id,
                    credits=credits,
                    amount=0,
                    phase=PAID,
                    granted_at=now,
                    updated_at=now,
                    note=reason,
                )
            )
            grant = self._leased(grant, now)
            written = self.store.commit_payment(grant, delta=_delta(None, grant))
            if written is True:
                log_event(
                    logger,
                    "credits_granted",
                    payment_id=payment_id,
                    machine_id=machine_id,
                    credits=credits,
                    amount=0,
                    source="operator",
                    reason=reason,
                )
                stored, fresh = changed(grant, version=1), True
            else:
                stored = self._winner(written, grant)  # the same key, at the same moment
        if (stored.machine_id, stored.credits, stored.note) != (machine_id, credits, reason):
            raise Conflict(
                "this Idempotency-Key was used for another grant", code="idempotency_key_reused"
            )
        try:
            # A grant made now holds its own lease; a repeated request delivers what is owed.
            outcome = self._publish(stored, ids) if fresh else self._deliver(stored, ids)
        except (BrokerUnavailable, SettingsError):
            outcome = _outcome("undelivered", stored)  # stored and owed: the relay sends it
        return self._reread(stored), outcome

    def is_unconfirmed(self, payment: Payment) -> bool:
        """Return True for a delivered grant not confirmed within CONFIRM_WITHIN_SECONDS."""
        if not is_awaiting_confirmation(payment) or payment.delivered_at is None:
            return False
        since = utc_now() - payment.delivered_at
        return since.total_seconds() >= self.confirm_within_seconds

    def _refund_unconfirmed(self, payment: Payment) -> bool:
        """Refund a grant its cabinet never confirmed (AUTO_REFUND_UNCONFIRMED_SECONDS).

        The idempotency key ``refund-<payment_id>`` makes Stripe refund once however often
        this runs; the status follows when Stripe's ``charge.refunded`` arrives.
        """
        ids = {"payment_id": payment.payment_id, "machine_id": payment.machine_id}
        try:
            if payment.payment_intent:
                refund_id = self.gateway.refund(
                    payment.payment_intent, idempotency_key=f"refund-{payment.payment_id}"
                )
                log_event(
                    logger,
                    "unconfirmed_payment_refunded",
                    level=logging.WARNING,
                    refund_id=refund_id,
                    **ids,
                )
            else:  # nothing was paid (a free-play promotion): nothing to give back
                log_event(logger, "unconfirmed_free_payment", level=logging.WARNING, **ids)
            done = changed(payment, due_at=None)
        except PaymentProviderError:
            done = changed(payment, due_at=later(utc_now(), MAX_BACKOFF_SECONDS))
        # The refund is idempotent: should this write fail, trying again next run is harmless.
        with contextlib.suppress(StoreError):
            self.store.commit_payment(done)
        return done.due_at is None

    def _leased(self, payment: Payment, now: datetime) -> Payment:
        """Return the payment with the delivery lease taken until the lease runs out; the
        relay looks at it again then, should its holder die."""
        until = later(now, self.lease_seconds)
        return changed(payment, delivery_claimed_until=until, due_at=until)

    def _back_off_quietly(self, payment: Payment) -> None:
        """Drop our lease after a failed publish and tell the relay when to try again.

        The pause doubles with each failed attempt (2 s … 60 s); a grant still undelivered an
        hour after it was granted is logged once as an error, not at every attempt.
        """
        try:
            for _ in range(3):
                if payment.delivery_claimed_until is None or not is_deliverable(payment):
                    return
                now = utc_now()
                attempts = payment.delivery_attempts + 1
                pause = min(2**attempts, MAX_BACKOFF_SECONDS)
                backed_off = changed(
                    payment,
                    delivery_claimed_until=None,
                    due_at=later(now, pause),
                    delivery_attempts=attempts,
                )
                granted = payment.granted_at or payment.created_at
                stuck = (now - granted).total_seconds() >= UNDELIVERABLE_AFTER_SECONDS
                if stuck and payment.delivery_alarm_at is None:
                    backed_off = changed(backed_off, delivery_alarm_at=now)
                written = self.store.commit_payment(backed_off)
                if written is True:
                    if backed_off.delivery_alarm_at != payment.delivery_alarm_at:
                        log_event(
                            logger,
                            "delivery_undeliverable",
                            level=logging.ERROR,
                            payment_id=payment.payment_id,
                            machine_id=payment.machine_id,
                            attempts=attempts,
                            granted_at=iso_or_none(payment.granted_at),
                        )
                    return
                latest = self._winner(written, payment)
                if latest.delivery_claimed_until != payment.delivery_claimed_until:
                    return  # someone else's lease now
                payment = latest
        except StoreError:
            pass
        # The lease runs out by itself; the relay tries again after it.
        log_event(
            logger,
            "delivery_release_failed",
            level=logging.WARNING,
            payment_id=payment.payment_id,
        )

    def relay(self, *, limit: int = RELAY_BATCH) -> RelayReport:
        """Publish the outbox's grants that are due: their lease ran out, or their pause did.

        The delivery relay of SPEC "Delivery lasts until the cabinet confirms", run by the
        thread of ``python app.py``, the Lambda schedule and ``flask deliveries retry`` alike.
        A broker that cannot be reached ends the run (every other grant would wait for it
        too); a refusal of one grant does not. Raises StoreError when the store fails.
        """
        report = RelayReport()
        for payment in self.store.list_due(utc_now(), limit):
            report.due += 1
            if is_awaiting_confirmation(payment):
                if self._refund_unconfirmed(payment):
                    report.refunded += 1
                else:
                    report.failed += 1
                continue
            try:
                outcome = self._deliver(payment, {"source": "relay"})
            except PublishRefused:
                report.failed += 1
                continue
            except (BrokerUnavailable, SettingsError) as exc:
                report.failed += 1
                report.stopped = str(exc)
                break
            if outcome.result == "delivered":
                report.delivered += 1
        if report.due:
            log_event(
                logger,
                "relay_finished",
                level=logging.WARNING if report.failed else logging.INFO,
                **report.as_dict(),
            )
        return report

    def _still_deliverable(self, payment: Payment) -> bool:
        """Return whether a grant we hold the lease of may still be published."""
        latest = self.store.get_payment(payment.payment_id)
        return latest is not None and is_deliverable(latest)

    def _winner(self, lost: Lost, payment: Payment) -> Payment:
        """Return the stored payment whose version beat ``payment``'s write: the one the
        refusal carried, else (nothing came with it) as read now."""
        return lost.payment if lost.payment is not None else self._reread(payment)

    def _reread(self, payment: Payment) -> Payment:
        latest = self.store.get_payment(payment.payment_id)
        if latest is None:
            raise StoreError(f"payment {payment.payment_id} vanished while it was being written")
        return latest

    # --- refunds and disputes ---------------------------------------------------------------
    def _refund(self, refund: Refund, ids: dict[str, Any]) -> Outcome:
        amount = refund.amount_refunded
        return self._apply_to_intent(
            refund.payment_intent,
            "refund",
            ids,
            lambda payment, now: with_refund(payment, amount, now),
            lambda intent, now: (
                intent
                if amount <= intent.amount_refunded
                else changed(intent, amount_refunded=amount, updated_at=now)
            ),
            amount_refunded=amount,
        )

    def _dispute(self, dispute: Dispute, ids: dict[str, Any]) -> Outcome:
        return self._apply_to_intent(
            dispute.payment_intent,
            "dispute",
            ids,
            with_dispute,
            lambda intent, now: (
                intent
                if intent.disputed_at is not None
                else changed(intent, disputed_at=now, updated_at=now)
            ),
            dispute_id=dispute.dispute_id,
        )

    def _apply_to_intent(
        self,
        intent_id: Any,
        kind: str,
        ids: dict[str, Any],
        change_payment: Callable[[Payment, datetime], Payment],
        change_intent: Callable[[IntentRecord, datetime], IntentRecord],
        **details: Any,
    ) -> Outcome:
        """Apply a refund or dispute to the PaymentIntent's payment, or keep it for later.

        A refund or dispute that comes before its Checkout Session is kept on the intent and
        honoured when the session is recorded (SPEC "Payment states move forward only").
        """
        if not isinstance(intent_id, str) or not intent_id:
            return self._log_outcome(
                ids, Outcome(f"{kind}_for_unknown_payment"), level=logging.WARNING, **details
            )
        intent = self.store.get_intent(intent_id)
        stored = self._payment_of(intent)
        for _ in range(WRITE_ATTEMPTS):
            now = utc_now()
            if stored is not None:
                changed = change_payment(stored, now)
                if changed == stored:
                    return self._log_outcome(
                        ids, _outcome(f"{kind}_already_recorded", stored), **details
                    )
                written = self.store.commit_payment(
                    changed, delta=_delta(stored, changed), entries=_entries(stored, changed, now)
                )
                if written is not True:
                    stored = self._winner(written, stored)
                    continue
                if not is_grant(changed):
                    # Money returned for, or disputed on, a payment that granted nothing
                    # (unattributed, say): nothing to take back from a machine.
                    return self._log_outcome(
                        ids,
                        _outcome(f"{kind}_of_ungranted_payment", changed, changed=True),
                        level=logging.WARNING,
                        status=changed.status,
                        **details,
                    )
                if is_cancelled(changed) and not is_cancelled(stored):
                    log_event(
                        logger,
                        "delivery_cancelled",
                        level=logging.WARNING,
                        payment_id=changed.payment_id,
                        machine_id=changed.machine_id,
                        credits=changed.credits,
                        cause=kind,
                    )
                    self._keep_used_within_granted(changed.machine_id or "")
                level = logging.WARNING if kind == "dispute" else logging.INFO
                return self._log_outcome(
                    ids,
                    _outcome(f"{kind}_recorded", changed, changed=True),
                    level=level,
                    status=changed.status,
                    **details,
                )
            known = intent or IntentRecord(intent_id)
            kept = change_intent(known, now)
            if kept == known:
                return self._log_outcome(
                    ids, Outcome(f"{kind}_already_recorded"), payment_intent=intent_id, **details
                )
            written = self.store.commit_payment(None, intent=kept)
            if written is True:
                return self._log_outcome(
                    ids,
                    Outcome(f"{kind}_kept_for_payment", changed=True),
                    level=logging.WARNING,
                    payment_intent=intent_id,
                    **details,
                )
            # What won, from the refusal: its session may have come meanwhile.
            intent = written.intent
            stored = self._payment_of(intent)
        raise StoreError(f"the payment kept changing while its {kind} was recorded; try again")

    def _payment_of(self, intent: IntentRecord | None) -> Payment | None:
        """Return the payment a PaymentIntent record points to, or None when it points to
        none (its Checkout Session has not come yet)."""
        return self.store.get_payment(intent.payment_id) if intent and intent.payment_id else None

    # --- how many credits, for which machine --------------------------------------------
    def _attribute(self, session: CheckoutSession, *, paid: bool) -> Attribution:
        """Return the machine a session pays and, once paid, the credits it buys.

        SPEC "Which sessions buy credits": only ``mode: payment`` sessions, and only line items
        at the machine's price, the default price or a price of one of its links, count.
        """
        link = self._our_link(session)
        machine = self._machine_for(session, link)
        attribution = self._attribute_to(session, paid, link, machine)
        return changed(attribution, credits_per_game=_per_game(machine))

    def _attribute_to(
        self,
        session: CheckoutSession,
        paid: bool,
        link: PaymentLink | None,
        machine: Machine | None,
    ) -> Attribution:
        if machine is None:
            claimed = _claimed_machine_id(session)
            reason = (
                NOT_REGISTERED.format(claimed)
                if claimed
                else "the session names no machine (no link of ours, metadata or reference)"
            )
            return Attribution(None, 0, reason if paid else None)
        if not paid:
            return Attribution(machine.machine_id)
        if session.mode not in (None, "payment"):
            reason = f"a {session.mode} session buys no credits"
            return Attribution(machine.machine_id, 0, reason)
        priced = self.plan_in_force(machine, _created(session))
        if priced is not None:
            return self._attribute_by_plan(session, link, machine, priced)
        units = self._units(session, link, machine)
        if units <= 0:
            return Attribution(machine.machine_id, 0, "no line item is at this machine's price")
        credits = units * (machine.credits_per_unit or self.default_credits_per_unit)
        if credits > wire.MAX_CREDITS:
            # A coinpulse the cabinet would refuse: the payment waits for an operator's refund.
            return Attribution(machine.machine_id, 0, _over_one_coinpulse(credits))
        return Attribution(machine.machine_id, credits)

    def _our_link(self, session: CheckoutSession) -> PaymentLink | None:
        link_id = session.payment_link
        return self.store.get_link_by_id(link_id) if link_id else None

    def _machine_for(self, session: CheckoutSession, link: PaymentLink | None) -> Machine | None:
        """Find the machine: stored link → metadata.machine_id → client_reference_id."""
        if link is not None:
            return self.store.get_machine(link.machine_id)
        claimed = _claimed_machine_id(session)
        if claimed is None:
            return None
        return self.store.get_machine(claimed)

    def _units(self, session: CheckoutSession, link: PaymentLink | None, machine: Machine) -> int:
        """Return units bought at the machine's prices; from the amount for our own links."""
        units = self._units_of_our_link(session, link)
        if units is not None:
            return units
        items = self.gateway.line_items(session.id)
        allowed = self._prices_of(machine, link)
        return sum(quantity for price_id, quantity in items if price_id in allowed)

    def _units_of_our_link(self, session: CheckoutSession, link: PaymentLink | None) -> int | None:
        """Return the units a session of our own link bought, from its amount, or None when
        they must be counted from the line items.

        A link of ours has one line item at the price stored with it, so the subtotal divided
        by its unit amount is the quantity, with no Stripe call while the player waits, as long
        as that quantity is one the link offers; anything else (a discount, another currency,
        an item added to the link in Stripe's dashboard) is counted from the line items.
        """
        subtotal = session.amount_subtotal
        if (
            link is not None
            and link.unit_amount
            and subtotal
            and not session.amount_discount
            and session.currency == link.currency
            and subtotal % link.unit_amount == 0
        ):
            units = subtotal // link.unit_amount
            if units == link.quantity or (not link.quantity and units <= self.max_quantity):
                return units
        return None

    # --- pricing plans ------------------------------------------------------------------------
    def plan_in_force(self, machine: Machine, at: datetime) -> tuple[PlanVersion, Plan] | None:
        """Return the plan version that priced a machine's sales at ``at``: its own plan's, else
        the default plan's, or None when neither existed then (the single-price rules apply)."""
        return plan_of(self.store, machine.machine_id, at)

    def _attribute_by_plan(
        self,
        session: CheckoutSession,
        link: PaymentLink | None,
        machine: Machine,
        priced: tuple[PlanVersion, Plan],
    ) -> Attribution:
        """Return the credits a session buys under the plan version in force when it was
        created: only line items at a Price of that version's bundles count, with its one
        bonus and one happy hour (SPEC "Pricing plans")."""
        version, plan = priced
        units = self._units_of_our_link(session, link) if link is not None else None
        if link is not None and units is not None and plan.bundle_for(link.price_id) is not None:
            items = [(link.price_id, units)]
        else:
            items = self.gateway.line_items(session.id)
        bought = credits_for(plan, items, at=_created(session), zone=machine_zone(machine.timezone))
        ids = {"machine_id": machine.machine_id, "plan_version": version.version}
        if bought.credits <= 0:
            reason = f"no line item is at a price of plan version {version.version}"
            return Attribution(machine.machine_id, 0, reason, plan_version=version.version)
        if bought.credits > wire.MAX_CREDITS:
            reason = _over_one_coinpulse(bought.credits)
            return Attribution(machine.machine_id, 0, reason, plan_version=version.version)
        names = [
            bundle.name
            for bundle in plan.bundles
            if any(price == bundle.price_id and quantity > 0 for price, quantity in items)
        ]
        log_event(
            logger,
            "plan_applied",
            payment_id=session.id,
            credits=bought.credits,
            units=bought.units,
            bonus=bought.bonus,
            happy_hour=bought.happy_hour.describe() if bought.happy_hour else None,
            **ids,
        )
        return Attribution(
            machine.machine_id,
            bought.credits,
            bundle=" + ".join(names),
            plan_version=version.version,
        )

    def _prices_of(self, machine: Machine, link: PaymentLink | None) -> set[str]:
        """Return the prices that buy credits on a machine."""
        prices = {machine.price_id, self.default_price_id, link.price_id if link else None}
        prices |= {stored.price_id for stored in self.store.list_links(machine.machine_id)}
        return {price for price in prices if price}

    # --- game over and machine state ------------------------------------------------------
    def game_over(
        self, machine_id: str, *, key: str | None = None, credits_per_game: int = 1
    ) -> MachineState:
        """Use one game's credits and close the open session, then publish ``gameover``.

        ``credits_per_game`` is what this game cost: the cabinet's, as its game over said, else
        the machine's (``arcade.wire``, "What a game costs"). The state is written first, and
        undone if the broker does not acknowledge: a game over that answers 503 has counted
        nothing. An Idempotency-Key counts once per machine for 24 hours whatever came between
        (SPEC "POST /gameover"), with what its first counted sending said a game cost. Raises
        BrokerUnavailable or StoreError.
        """
        now = utc_now()
        record = (
            GameOverKey(
                machine_id=machine_id,
                key=key,
                created_at=now,
                expires_at=later(now, GAME_OVER_KEY_SECONDS),
            )
            if key is not None
            else None
        )
        for _ in range(WRITE_ATTEMPTS):
            before = self.store.get_machine_state(machine_id)
            after = _after_game_over(before, now, credits_per_game)
            if self.store.update_machine_state(after, put_key=record):
                break
            if record is not None:
                stored = self.store.get_game_over_key(machine_id, record.key)
                if stored is not None and stored.expires_at >= record.created_at:
                    return self._repeated_game_over(stored, before)
        else:
            raise StoreError("the machine's state kept changing; try again")
        try:
            self._publish_game_over(machine_id, now)
        except Exception:
            self._undo_game_over(before, after, record)
            raise
        if record is not None:
            self._save_key_quietly(changed(record, published=1))
        state = after.with_changes(version=before.version + 1)
        log_event(
            logger,
            "game_over",
            machine_id=machine_id,
            credits_left=state.credits_left,
            credits_used=state.credits_used,
            credits_per_game=credits_per_game,
            session_id=state.session_id,
        )
        return state

    def _repeated_game_over(self, stored: GameOverKey, state: MachineState) -> MachineState:
        """Answer a game over whose key already counted.

        While the request that counted it may still be publishing (or taking it back), the
        answer is 409 ``game_over_in_progress``: retry. Once that request is surely over and
        the key is still unpublished (it could not take the game over back), this one
        publishes it; the count stays one.
        """
        log_event(logger, "game_over_repeated", machine_id=stored.machine_id, key=stored.key)
        if stored.published:
            return state
        if utc_now() < later(stored.created_at, self.lease_seconds):
            raise GameOverInProgress(
                "a game over with this Idempotency-Key is still being sent; retry in a moment"
            )
        self._publish_game_over(stored.machine_id, utc_now())
        self._save_key_quietly(changed(stored, published=1))
        return state

    def _publish_game_over(self, machine_id: str, now: datetime) -> None:
        message = self.signer.sign(wire.gameover(machine_id=machine_id, timestamp=iso_seconds(now)))
        self.publisher.publish(
            self.topic(machine_id, wire.GAMEOVER), message, log_ids={"machine_id": machine_id}
        )

    def _undo_game_over(
        self, before: MachineState, after: MachineState, record: GameOverKey | None
    ) -> None:
        """Take back a game over whose gameover message was not acknowledged."""
        used = after.credits_used - before.credits_used
        without = after.games_without_credit - before.games_without_credit
        try:
            for _ in range(WRITE_ATTEMPTS):
                current = self.store.get_machine_state(before.machine_id)
                undone = current.with_changes(
                    credits_used=current.credits_used - used,
                    games_without_credit=current.games_without_credit - without,
                )
                if current.session_id == after.session_id:
                    undone = undone.with_changes(
                        session_id=before.session_id, session_started_at=before.session_started_at
                    )
                if self.store.update_machine_state(undone, delete_key=record):
                    return
        except StoreError:
            pass
        # The game over stays counted; a retry with its key publishes it without counting.
        log_event(
            logger,
            "game_over_undo_failed",
            level=logging.ERROR,
            machine_id=before.machine_id,
            key=record.key if record else None,
        )

    def _save_key_quietly(self, record: GameOverKey) -> None:
        try:
            self.store.save_game_over_key(record)
        except StoreError:
            # A retry with this key then publishes gameover once more; it counts nothing.
            log_event(
                logger,
                "game_over_key_save_failed",
                level=logging.WARNING,
                machine_id=record.machine_id,
            )

    def _keep_used_within_granted(self, machine_id: str) -> None:
        """After credits were taken back, count games that used them as games without credit.

        A game over may have used a credit whose coinpulse never reached the cabinet; when that
        grant is cancelled the machine would show more credits used than granted.
        """
        try:
            for _ in range(WRITE_ATTEMPTS):
                state = self.store.get_machine_state(machine_id)
                excess = state.credits_used - state.credits_granted
                if excess <= 0:
                    return
                fixed = state.with_changes(
                    credits_used=state.credits_granted,
                    games_without_credit=state.games_without_credit + excess,
                )
                if self.store.update_machine_state(fixed):
                    return
        except StoreError:
            pass
        log_event(logger, "state_rebalance_failed", level=logging.WARNING, machine_id=machine_id)

    def _open_session_if_idle(self, machine_id: str, now: datetime, per_game: int) -> None:
        """Open a play session on a machine with none open once a full game's credits are left
        (a machine whose games cost several credits: one read, then a versioned write)."""
        try:
            for _ in range(WRITE_ATTEMPTS):
                state = self.store.get_machine_state(machine_id)
                if state.session_id or state.credits_left < per_game:
                    return  # playing already, or not yet enough for a game
                opened = state.with_changes(session_id=_new_session_id(), session_started_at=now)
                if self.store.update_machine_state(opened):
                    return
        except StoreError:
            pass
        # The grant is delivered; the session mirror is only bookkeeping.
        log_event(logger, "session_open_failed", level=logging.WARNING, machine_id=machine_id)

    def report(self, machine: Machine, *, payments: int = 20) -> dict[str, Any]:
        """Return what an operator or cabinet sees of a machine (SPEC "GET /machines/<id>")."""
        state = self.store.get_machine_state(machine.machine_id)
        listed: list[Payment] = []
        if payments > 0:  # the admin's machine page lists them itself and asks for none
            query = PaymentQuery(machine_id=machine.machine_id, limit=payments)
            listed = self.store.query_payments(query)[0]
        return {
            "machine_id": machine.machine_id,
            "name": machine.name,
            "state": "playing" if state.session_id else "idle",
            "credits": {
                "granted": state.credits_granted,
                "used": state.credits_used,
                "left": state.credits_left,
            },
            "games_without_credit": state.games_without_credit,
            "credits_per_game": _per_game(machine),
            "session": {"id": state.session_id, "started_at": iso_or_none(state.session_started_at)}
            if state.session_id
            else None,
            "payments": [describe_payment(p) for p in listed],
            "unconfirmed": [p.payment_id for p in listed if self.is_unconfirmed(p)],
            "revenue": dict(state.revenue),
        }

    def topic(self, machine_id: str, kind: str) -> str:
        """Return the MQTT topic of a machine's ``coinpulse`` or ``gameover``."""
        return wire.topic(self.topic_prefix, machine_id, kind)

    @staticmethod
    def _log_outcome(
        ids: dict[str, Any], outcome: Outcome, *, level: int = logging.INFO, **extra: Any
    ) -> Outcome:
        log_event(
            logger,
            "webhook_handled" if ids.get("source") == "webhook" else "session_applied",
            level=level,
            **ids,
            result=outcome.result,
            payment_id=outcome.payment_id,
            machine_id=outcome.machine_id,
            credits=outcome.credits,
            **extra,
        )
        return outcome


def describe_payment(payment: Payment) -> dict[str, Any]:
    """Return what an operator or cabinet sees of a payment."""
    shown: dict[str, Any] = {
        "id": payment.payment_id,
        "credits": payment.credits,
        "amount": payment.amount,
        "amount_refunded": payment.amount_refunded,
        "currency": payment.currency,
        "status": payment.status,
        "created_at": iso(payment.created_at),
    }
    if payment.reason is not None or payment.note is not None:
        shown["reason"] = payment.reason or payment.note
    if payment.plan_version is not None:
        # Which pricing plan version credited it, and the bundle it bought.
        shown["plan_version"] = payment.plan_version
        shown["bundle"] = payment.bundle
    return shown


def _outcome(result: str, payment: Payment, *, changed: bool = False) -> Outcome:
    return Outcome(result, payment.payment_id, payment.machine_id, payment.credits, changed)


def _delta(before: Payment | None, after: Payment) -> StateDelta | None:
    """Return the change to the machine's books from ``before`` to ``after``."""
    change = counted(after) - counted(before)
    if after.machine_id is None or not (change.credits or change.revenue):
        return None
    return StateDelta(after.machine_id, change.credits, change.revenue, after.currency)


def _entries(before: Payment | None, after: Payment, refunded_at: datetime) -> list[RevenueEntry]:
    """Return the revenue journal's entries for the money a change moved.

    A sale counts on the day its Checkout Session was created, a refund at ``refunded_at``:
    when it was recorded, by us or on its PaymentIntent before its session came (SPEC
    "Operators": ``/reports/revenue``). The ids come from the version this
    change writes, so a write that is decided again after losing a race books nothing twice.
    """
    if after.machine_id is None:
        return []
    prefix = f"{after.payment_id}#{after.version + 1}"
    common = {
        "machine_id": after.machine_id,
        "payment_id": after.payment_id,
        "currency": after.currency,
        "bundle": after.bundle,
    }
    entries = []
    gross = sold(after) - sold(before)
    if gross:
        # The credits a sale bought go with it, so plays can be counted per bundle.
        credits = after.credits if gross > 0 else 0
        entries.append(
            RevenueEntry(f"{prefix}#sale", after.created_at, gross=gross, credits=credits, **common)
        )
    refunded = given_back(after) - given_back(before)
    if refunded:
        entries.append(RevenueEntry(f"{prefix}#refund", refunded_at, refunded=refunded, **common))
    return entries


def _after_game_over(state: MachineState, now: datetime, per_game: int = 1) -> MachineState:
    """Use one game's credits (``per_game``) if that many are left, else count a game without
    credit; close the session, and open the next if another game's credits remain."""
    if state.credits_left >= per_game:
        used, without = state.credits_used + per_game, state.games_without_credit
    else:
        used, without = state.credits_used, state.games_without_credit + 1
    left = max(state.credits_granted - used, 0)
    return state.with_changes(
        credits_used=used,
        games_without_credit=without,
        session_id=_new_session_id() if left >= per_game else None,
        session_started_at=now if left >= per_game else None,
    )


def _per_game(machine: Machine | None) -> int:
    """Return the credits one game over uses on a machine (1 unless it says otherwise)."""
    return (machine.credits_per_game if machine is not None else None) or 1


def _created(session: CheckoutSession) -> datetime:
    """Return when a Checkout Session was created (now, for one that does not say)."""
    return from_unix(session.created) if session.created is not None else utc_now()


def _over_one_coinpulse(credits: int) -> str:
    """Why a payment that buys more credits than a coinpulse carries (wire.MAX_CREDITS) grants
    nothing: the cabinet would refuse the message, so nothing is sent and an operator refunds."""
    return f"it buys {credits} credits, more than one coinpulse carries ({wire.MAX_CREDITS})"


def _new_session_id() -> str:
    return f"gs_{uuid.uuid4().hex}"


def phase_of_session(session: CheckoutSession) -> str:
    """Return the phase a completed session reports: paid (or nothing due), or not yet."""
    paid = session.payment_status in ("paid", "no_payment_required")
    return PAID if paid else PENDING_PAYMENT


def _claimed_machine_id(session: CheckoutSession) -> str | None:
    """Return the machine id the session names (metadata first), if it is a valid id."""
    for value in (session.metadata_machine_id, session.client_reference_id):
        if value is not None:
            return value if is_valid_machine_id(value) else None
    return None
