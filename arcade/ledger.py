"""The rules about money: which events grant credits, how many, exactly once, and game sessions.

Both stores serve these rules; they only make each step atomic. The order of a grant is fixed:
the grant is stored (once per Checkout Session, decided by the store), then one request claims
the right to publish it, publishes the coinpulse and waits for the broker's PUBACK, then marks
it delivered. A failure anywhere before the mark leaves the grant stored and undelivered, and
Stripe's next delivery of any event for that session publishes the same grant again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from arcade.clock import from_unix, iso, iso_seconds, later, parse_iso, utc_now
from arcade.errors import InvalidEvent, StoreError
from arcade.logs import log_event
from arcade.machines import is_valid_machine_id
from arcade.mqtt import Publisher
from arcade.payments import StripeGateway
from arcade.store.base import (
    DELIVERED,
    PARTIALLY_REFUNDED,
    PAYMENT_FAILED,
    PENDING_DELIVERY,
    PENDING_PAYMENT,
    REFUNDED,
    UNATTRIBUTED,
    Machine,
    MachineState,
    Payment,
    PaymentLink,
    Store,
)

logger = logging.getLogger(__name__)

# How long one request may hold the right to publish a grant's coinpulse. Longer than the
# slowest publish (two PUBACK waits and a reconnect), so a live holder is never overtaken.
DELIVERY_LEASE_SECONDS = 30
STATE_WRITE_ATTEMPTS = 20

GRANTING_EVENTS = {
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
}


@dataclass(frozen=True)
class Outcome:
    """What a webhook did, for the answer and the log."""

    result: str
    payment_id: str | None = None
    machine_id: str | None = None
    credits: int = 0


class Ledger:
    """Apply Stripe events and game overs to the store, publishing what cabinets must hear."""

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        gateway: StripeGateway,
        *,
        topic_prefix: str,
        default_credits_per_unit: int,
    ):
        self.store = store
        self.publisher = publisher
        self.gateway = gateway
        self.topic_prefix = topic_prefix
        self.default_credits_per_unit = default_credits_per_unit

    # --- webhooks ---------------------------------------------------------------------------
    def apply_event(self, event: dict[str, Any]) -> Outcome:
        """Apply one verified Stripe event."""
        event_type = event.get("type")
        obj = (event.get("data") or {}).get("object") or {}
        if event_type == "checkout.session.completed":
            if obj.get("payment_status") in ("paid", "no_payment_required"):
                return self._grant(obj, event)
            return self._record_without_grant(obj, event, PENDING_PAYMENT)
        if event_type == "checkout.session.async_payment_succeeded":
            return self._grant(obj, event)
        if event_type == "checkout.session.async_payment_failed":
            return self._record_without_grant(obj, event, PAYMENT_FAILED)
        if event_type == "charge.refunded":
            return self._refund(obj, event)
        return Outcome("ignored")

    def _grant(self, session: dict[str, Any], event: dict[str, Any]) -> Outcome:
        payment_id = _session_id(session)
        stored = self.store.get_payment(payment_id)
        if stored is not None and stored.status == DELIVERED:
            return self._log_outcome(
                event, Outcome("already_delivered", payment_id, stored.machine_id, stored.credits)
            )
        if stored is not None and stored.status == PENDING_DELIVERY:
            return self._deliver(stored, event)
        if stored is not None and stored.granted:  # refunded after delivery: nothing to send
            return self._log_outcome(
                event, Outcome("already_granted", payment_id, stored.machine_id, stored.credits)
            )

        link = self._our_link(session)
        machine = self._machine_for(session, link)
        if machine is None:
            self.store.record_payment(self._payment(session, UNATTRIBUTED, machine_id=None))
            return self._log_outcome(
                event,
                Outcome("unattributed", payment_id),
                level=logging.WARNING,
                claimed_machine=_claimed_machine_id(session),
            )

        credits = self._units(session, link) * (
            machine.credits_per_unit or self.default_credits_per_unit
        )
        now = utc_now()
        candidate = self._payment(
            session,
            PENDING_DELIVERY,
            machine_id=machine.machine_id,
            credits=credits,
            granted_at=iso(now),
            delivery_claimed_until=iso(later(now, DELIVERY_LEASE_SECONDS)),
        )
        payment, newly_granted = self.store.grant_payment(candidate)
        if newly_granted:
            log_event(
                logger,
                "credits_granted",
                payment_id=payment_id,
                machine_id=machine.machine_id,
                credits=credits,
                amount=payment.amount,
                currency=payment.currency,
                event_id=event.get("id"),
            )
            return self._publish(payment, event)
        if payment.status == PENDING_DELIVERY:
            return self._deliver(payment, event)
        return self._log_outcome(
            event, Outcome("already_granted", payment_id, payment.machine_id, payment.credits)
        )

    def _deliver(self, payment: Payment, event: dict[str, Any]) -> Outcome:
        now = utc_now()
        if not self.store.claim_delivery(
            payment.payment_id, iso(now), iso(later(now, DELIVERY_LEASE_SECONDS))
        ):
            # Another request is publishing this grant right now. If it fails it answers
            # Stripe with an error, and Stripe's retry of that delivery publishes it.
            return self._log_outcome(
                event,
                Outcome(
                    "delivery_in_progress", payment.payment_id, payment.machine_id, payment.credits
                ),
            )
        return self._publish(payment, event)

    def _publish(self, payment: Payment, event: dict[str, Any]) -> Outcome:
        """Publish a claimed grant's coinpulse, then mark it delivered."""
        machine_id = payment.machine_id or ""
        granted_at = parse_iso(payment.granted_at or payment.created_at)
        pulse = {
            "machineId": machine_id,
            "credits": payment.credits,
            "timestamp": iso_seconds(granted_at),
            "paymentId": payment.payment_id,
            "amount": payment.amount,
            "currency": payment.currency,
        }
        ids = {
            "payment_id": payment.payment_id,
            "machine_id": machine_id,
            "event_id": event.get("id"),
        }
        try:
            self.publisher.publish(self.topic(machine_id, "coinpulse"), pulse, log_ids=ids)
        except BaseException:
            self._release_quietly(payment.payment_id)
            raise
        now = iso(utc_now())
        self.store.mark_delivered(payment.payment_id, now)
        self._open_session_if_idle(machine_id, now)
        return self._log_outcome(
            event, Outcome("delivered", payment.payment_id, machine_id, payment.credits)
        )

    def _release_quietly(self, payment_id: str) -> None:
        try:
            self.store.release_delivery(payment_id)
        except StoreError:
            # The lease runs out by itself; the next retry after it publishes.
            log_event(
                logger, "delivery_release_failed", level=logging.WARNING, payment_id=payment_id
            )

    def _record_without_grant(
        self, session: dict[str, Any], event: dict[str, Any], status: str
    ) -> Outcome:
        machine = self._machine_for(session, self._our_link(session))
        stored = self.store.record_payment(
            self._payment(session, status, machine_id=machine.machine_id if machine else None)
        )
        result = "recorded" if stored.status == status else "already_granted"
        return self._log_outcome(
            event, Outcome(result, stored.payment_id, stored.machine_id), status=stored.status
        )

    def _refund(self, charge: dict[str, Any], event: dict[str, Any]) -> Outcome:
        intent = charge.get("payment_intent")
        payment = self.store.get_payment_by_intent(intent) if isinstance(intent, str) else None
        if payment is None:
            return self._log_outcome(
                event,
                Outcome("refund_for_unknown_payment"),
                level=logging.WARNING,
                payment_intent=intent,
            )
        refunded = int(charge.get("amount_refunded") or 0)
        if not payment.granted:
            # Money returned for a payment that granted nothing (unattributed, say): nothing
            # to take back from a machine, but an operator should see it.
            return self._log_outcome(
                event,
                Outcome("refund_of_ungranted_payment", payment.payment_id, payment.machine_id),
                level=logging.WARNING,
                status=payment.status,
                amount_refunded=refunded,
            )
        fully = bool(charge.get("refunded")) or refunded >= payment.amount
        status = REFUNDED if fully else PARTIALLY_REFUNDED
        increase = self.store.record_refund(payment.payment_id, refunded, status, iso(utc_now()))
        return self._log_outcome(
            event,
            Outcome(
                "refund_recorded" if increase else "refund_already_recorded",
                payment.payment_id,
                payment.machine_id,
            ),
            amount_refunded=refunded,
        )

    # --- how many credits, for which machine --------------------------------------------
    def _our_link(self, session: dict[str, Any]) -> PaymentLink | None:
        link_id = session.get("payment_link")
        return self.store.get_link_by_id(link_id) if isinstance(link_id, str) else None

    def _machine_for(self, session: dict[str, Any], link: PaymentLink | None) -> Machine | None:
        """Find the machine: stored link → metadata.machine_id → client_reference_id."""
        if link is not None:
            return self.store.get_machine(link.machine_id)
        claimed = _claimed_machine_id(session)
        if claimed is None:
            return None
        return self.store.get_machine(claimed)

    def _units(self, session: dict[str, Any], link: PaymentLink | None) -> int:
        """Return units bought; from the amount for our own links, else from line items."""
        subtotal = session.get("amount_subtotal")
        discount = ((session.get("total_details") or {}).get("amount_discount")) or 0
        if (
            link is not None
            and link.unit_amount
            and isinstance(subtotal, int)
            and subtotal > 0
            and not discount
            and session.get("currency") == link.currency
            and subtotal % link.unit_amount == 0
        ):
            return subtotal // link.unit_amount
        return self.gateway.count_units(_session_id(session))

    def _payment(self, session: dict[str, Any], status: str, **fields: Any) -> Payment:
        created = session.get("created")
        return Payment(
            payment_id=_session_id(session),
            status=status,
            created_at=iso(from_unix(created) if isinstance(created, int) else utc_now()),
            amount=int(session.get("amount_total") or 0),
            currency=str(session.get("currency") or "usd"),
            payment_intent=session.get("payment_intent")
            if isinstance(session.get("payment_intent"), str)
            else None,
            updated_at=iso(utc_now()),
            **fields,
        )

    # --- game over and machine state ------------------------------------------------------
    def game_over(self, machine_id: str, *, key: str | None = None) -> MachineState:
        """Publish ``gameover``, then use one credit and close the open session.

        A cabinet that retries a game over sends the same ``key``: when it is the last one
        recorded, the game over already counted (its answer was lost) and nothing happens again.
        """
        state = self.store.get_machine_state(machine_id)
        if key is not None and state.last_game_over_key == key:
            log_event(logger, "game_over_repeated", machine_id=machine_id, key=key)
            return state
        now = utc_now()
        message = {"machineId": machine_id, "status": "game_over", "timestamp": iso_seconds(now)}
        self.publisher.publish(
            self.topic(machine_id, "gameover"), message, log_ids={"machine_id": machine_id}
        )
        state = self._change_state(machine_id, lambda s: _after_game_over(s, iso(now), key))
        log_event(
            logger,
            "game_over",
            machine_id=machine_id,
            credits_left=state.credits_left,
            credits_used=state.credits_used,
            session_id=state.session_id,
        )
        return state

    def _open_session_if_idle(self, machine_id: str, now: str) -> None:
        try:
            self._change_state(
                machine_id,
                lambda s: (
                    s
                    if s.session_id
                    else s.with_changes(session_id=_new_session_id(), session_started_at=now)
                ),
            )
        except StoreError:
            # The grant is delivered; the session mirror is only bookkeeping.
            log_event(logger, "session_open_failed", level=logging.WARNING, machine_id=machine_id)

    def _change_state(self, machine_id: str, change: Any) -> MachineState:
        for _ in range(STATE_WRITE_ATTEMPTS):
            current = self.store.get_machine_state(machine_id)
            wanted = change(current)
            if wanted == current or self.store.update_machine_state(wanted):
                return wanted.with_changes(version=current.version + 1)
        raise StoreError("the machine's state kept changing; try again")

    def report(self, machine: Machine, *, payments: int = 20) -> dict[str, Any]:
        """Return what an operator or cabinet sees of a machine."""
        state = self.store.get_machine_state(machine.machine_id)
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
            "session": {"id": state.session_id, "started_at": state.session_started_at}
            if state.session_id
            else None,
            "payments": [
                {
                    "id": p.payment_id,
                    "credits": p.credits,
                    "amount": p.amount,
                    "amount_refunded": p.amount_refunded,
                    "currency": p.currency,
                    "status": p.status,
                    "created_at": p.created_at,
                }
                for p in self.store.list_payments(machine.machine_id, payments)
            ],
            "revenue": dict(state.revenue),
        }

    def topic(self, machine_id: str, kind: str) -> str:
        """Return the MQTT topic of a machine's ``coinpulse`` or ``gameover``."""
        return f"{self.topic_prefix}/{machine_id}/{kind}"

    @staticmethod
    def _log_outcome(
        event: dict[str, Any], outcome: Outcome, *, level: int = logging.INFO, **extra: Any
    ) -> Outcome:
        log_event(
            logger,
            "webhook_handled",
            level=level,
            event_id=event.get("id"),
            event_type=event.get("type"),
            result=outcome.result,
            payment_id=outcome.payment_id,
            machine_id=outcome.machine_id,
            credits=outcome.credits,
            **extra,
        )
        return outcome


def _after_game_over(state: MachineState, now: str, key: str | None) -> MachineState:
    """Use one credit if any is left, close the session, and open the next if credits remain."""
    if key is not None and state.last_game_over_key == key:
        return state  # a concurrent retry of the same game over got here first
    if state.credits_left > 0:
        used, without = state.credits_used + 1, state.games_without_credit
    else:
        used, without = state.credits_used, state.games_without_credit + 1
    left = max(state.credits_granted - used, 0)
    return state.with_changes(
        credits_used=used,
        games_without_credit=without,
        session_id=_new_session_id() if left > 0 else None,
        session_started_at=now if left > 0 else None,
        last_game_over_key=key if key is not None else state.last_game_over_key,
    )


def _new_session_id() -> str:
    return f"gs_{uuid.uuid4().hex}"


def _session_id(session: dict[str, Any]) -> str:
    session_id = session.get("id")
    if not isinstance(session_id, str) or not session_id:
        raise InvalidEvent("the event's Checkout Session has no id")
    return session_id


def _claimed_machine_id(session: dict[str, Any]) -> str | None:
    """Return the machine id the session names (metadata first), if it is a valid id."""
    for value in (
        (session.get("metadata") or {}).get("machine_id"),
        session.get("client_reference_id"),
    ):
        if value is not None:
            return value if is_valid_machine_id(value) else None
    return None
