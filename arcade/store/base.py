"""The store interface: what the ledger needs kept, and the atomic facts it relies on.

Back ends only store and fetch. Every rule about money lives in ``arcade.ledger``; the
store's job is to make "first writer wins" and "only if nothing changed meanwhile" facts of
the database (a unique key, a conditional write), never a check in this process's memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace

# Payment statuses. A payment is "granted" once its credits count for the machine.
PENDING_PAYMENT = "pending_payment"  # checkout completed, money not there yet (async methods)
PAYMENT_FAILED = "payment_failed"  # async payment failed: nothing granted
UNATTRIBUTED = "unattributed"  # paid, but for no valid registered machine: nothing published
PENDING_DELIVERY = "pending_delivery"  # granted and stored, coinpulse not yet acknowledged
DELIVERED = "delivered"  # the broker acknowledged the coinpulse
REFUNDED = "refunded"  # granted, then fully refunded
PARTIALLY_REFUNDED = "partially_refunded"

PRE_GRANT_STATUSES = frozenset({PENDING_PAYMENT, PAYMENT_FAILED})
GRANTED_STATUSES = frozenset({PENDING_DELIVERY, DELIVERED, REFUNDED, PARTIALLY_REFUNDED})


@dataclass(frozen=True)
class Machine:
    """A registered cabinet."""

    machine_id: str
    token_hash: str
    created_at: str
    name: str | None = None
    price_id: str | None = None
    credits_per_unit: int | None = None


@dataclass(frozen=True)
class PaymentLink:
    """A Stripe Payment Link made for one machine, price and quantity (0 = player chooses)."""

    link_id: str
    machine_id: str
    price_id: str
    quantity: int
    url: str
    unit_amount: int | None
    currency: str
    created_at: str

    @property
    def key(self) -> str:
        return link_key(self.machine_id, self.price_id, self.quantity)


def link_key(machine_id: str, price_id: str, quantity: int) -> str:
    """Return the lookup key of a machine's link for a price and quantity."""
    return f"{machine_id}|{price_id}|{quantity}"


@dataclass(frozen=True)
class Payment:
    """One Checkout Session as the ledger knows it; ``payment_id`` is the session id."""

    payment_id: str
    status: str
    created_at: str
    machine_id: str | None = None
    credits: int = 0
    amount: int = 0
    currency: str = "usd"
    payment_intent: str | None = None
    amount_refunded: int = 0
    granted_at: str | None = None
    delivered_at: str | None = None
    # Until this instant (ISO 8601 UTC) one request holds the right to publish the coinpulse.
    delivery_claimed_until: str | None = None
    updated_at: str | None = None

    @property
    def granted(self) -> bool:
        return self.status in GRANTED_STATUSES


@dataclass(frozen=True)
class MachineState:
    """A machine's credit counter mirror, open session and revenue.

    ``version`` moves on every change, so a write based on a stale read is refused.
    """

    machine_id: str
    credits_granted: int = 0
    credits_used: int = 0
    games_without_credit: int = 0
    session_id: str | None = None
    session_started_at: str | None = None
    # The Idempotency-Key of the last game over recorded, so a cabinet's retry counts once.
    last_game_over_key: str | None = None
    revenue: dict[str, int] = field(default_factory=dict)
    version: int = 0

    @property
    def credits_left(self) -> int:
        return max(self.credits_granted - self.credits_used, 0)

    def with_changes(self, **changes: object) -> MachineState:
        """Return a copy with the given fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


class Store(ABC):
    """Persistence for machines, payment links, payments and machine state."""

    # --- machines -------------------------------------------------------------------------
    @abstractmethod
    def add_machine(self, machine: Machine) -> None:
        """Store a new machine; raise MachineExists if the id is taken."""

    @abstractmethod
    def get_machine(self, machine_id: str) -> Machine | None:
        """Return the machine, or None."""

    @abstractmethod
    def list_machines(self) -> list[Machine]:
        """Return every machine, ordered by id (an operator command, never a request path)."""

    @abstractmethod
    def set_token_hash(self, machine_id: str, token_hash: str) -> None:
        """Replace a machine's token hash; raise UnknownMachine if absent."""

    @abstractmethod
    def remove_machine(self, machine_id: str) -> None:
        """Delete a machine (its payments stay); raise UnknownMachine if absent."""

    # --- payment links --------------------------------------------------------------------
    @abstractmethod
    def get_link(self, key: str) -> PaymentLink | None:
        """Return the link stored under ``link_key(...)``, or None."""

    @abstractmethod
    def get_link_by_id(self, link_id: str) -> PaymentLink | None:
        """Return the link with this Stripe id (``plink_…``), or None."""

    @abstractmethod
    def put_link(self, link: PaymentLink) -> PaymentLink:
        """Store a link unless one exists under its key; return the stored one (first wins)."""

    # --- payments -------------------------------------------------------------------------
    @abstractmethod
    def get_payment(self, payment_id: str) -> Payment | None:
        """Return the payment, or None."""

    @abstractmethod
    def get_payment_by_intent(self, payment_intent: str) -> Payment | None:
        """Return the payment made through this PaymentIntent, or None."""

    @abstractmethod
    def record_payment(self, payment: Payment) -> Payment:
        """Store a payment that grants nothing (a PRE_GRANT status or UNATTRIBUTED).

        Inserts it when absent; when present and not granted, replaces its status and fields;
        a granted payment is never touched. Returns the payment as stored afterwards.
        """

    @abstractmethod
    def grant_payment(self, payment: Payment) -> tuple[Payment, bool]:
        """Grant a payment's credits exactly once, atomically.

        ``payment`` has status PENDING_DELIVERY, a machine, credits and (usually) a delivery
        claim. When no payment with its id exists, or the stored one is in a PRE_GRANT
        status, store it and, in the same transaction, add its credits to the machine's
        ``credits_granted`` and its amount to ``revenue[currency]`` (moving the version).
        Returns ``(stored payment, True)``. Otherwise change nothing and return
        ``(stored payment, False)``.
        """

    @abstractmethod
    def claim_delivery(self, payment_id: str, now: str, until: str) -> bool:
        """Take the right to publish a PENDING_DELIVERY payment's coinpulse until ``until``.

        Succeeds only when the payment is PENDING_DELIVERY and no claim is held after
        ``now``. Times are ISO 8601 UTC strings, which compare in time order.
        """

    @abstractmethod
    def release_delivery(self, payment_id: str) -> None:
        """Drop the delivery claim so that the next delivery attempt may publish."""

    @abstractmethod
    def mark_delivered(self, payment_id: str, now: str) -> bool:
        """Move PENDING_DELIVERY to DELIVERED; return False if it was not pending."""

    @abstractmethod
    def record_refund(self, payment_id: str, amount_refunded: int, status: str, now: str) -> int:
        """Set a granted payment's cumulative refunded amount and status.

        In the same transaction subtract the increase over the stored refunded amount from
        the machine's revenue. Returns that increase (0 when nothing changed, so a repeated
        ``charge.refunded`` counts once). A lower amount than stored changes nothing.
        """

    @abstractmethod
    def list_payments(self, machine_id: str, limit: int = 20) -> list[Payment]:
        """Return a machine's payments, newest first."""

    # --- machine state --------------------------------------------------------------------
    @abstractmethod
    def get_machine_state(self, machine_id: str) -> MachineState:
        """Return the machine's state (zeros and version 0 when nothing was stored yet)."""

    @abstractmethod
    def update_machine_state(self, state: MachineState) -> bool:
        """Store credits_used, games_without_credit, the session and last_game_over_key.

        Only if the stored version still equals ``state.version``; the stored version then
        moves on. Returns False when another writer got there first (read again, retry).
        Never writes credits_granted or revenue: those move only through grants and refunds.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most back ends hold nothing
        """Release connections."""
