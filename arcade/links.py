"""Payment links: one per machine, price and quantity, made once and reused."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from time import monotonic

from arcade.clock import utc_now
from arcade.config import not_set
from arcade.errors import BadRequest, PaymentProviderError, ServiceUnavailable, TooManyRequests
from arcade.logs import log_event
from arcade.payments import StripeGateway
from arcade.pricing import Bundle, Plan, offer_text, plan_of
from arcade.store.base import Machine, PaymentLink, Store, link_key

logger = logging.getLogger(__name__)

# After Stripe failed to make a link, requests for it fail at once for this long.
FAILURE_MEMORY_SECONDS = 60
# Anonymous requests (a QR code on a page) may reach Stripe once per machine in this long,
# whichever of the machine's links (price, quantity) they ask for (SPEC "HTTP").
ANONYMOUS_CALL_SECONDS = 60
# Anonymous requests waiting on Stripe at once, all machines together: while Stripe is slow
# each holds one of python app.py's worker threads (arcade.serve.WORKER_THREADS, 16) for up to
# its timeout, and the rest must stay free to answer Stripe's webhooks (SPEC "Serving locally").
ANONYMOUS_CALLS_AT_ONCE = 2


class LinkService:
    """Find or make the Payment Link a machine shows as its QR code."""

    def __init__(
        self,
        store: Store,
        gateway: StripeGateway,
        *,
        default_price_id: str | None,
        max_quantity: int,
    ):
        self.store = store
        self.gateway = gateway
        self.default_price_id = default_price_id
        self.max_quantity = max_quantity
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._failed: dict[str, float] = {}  # link key -> when Stripe last failed to make it
        # machine id -> when an anonymous request last asked Stripe to make one of its links
        self._anonymous_calls: dict[str, float] = {}
        self._anonymous_slots = threading.BoundedSemaphore(ANONYMOUS_CALLS_AT_ONCE)

    def price_for(self, machine: Machine, requested: str | None) -> str:
        """Return the price to sell: the requested one if allowed, else the machine's.

        A machine under a pricing plan sells its bundles' prices only, by default its first
        bundle's: its single price, the default price or any other buys nothing there (SPEC
        "Pricing plans"). Raises BadRequest (``price_not_allowed``), ServiceUnavailable when
        no price is set, StoreError.
        """
        return self._choose(machine, requested)[0]

    def _choose(self, machine: Machine, requested: str | None) -> tuple[str, Plan | None]:
        """Return the price to sell and the plan in force (None: single price); raises as
        ``price_for``."""
        priced = plan_of(self.store, machine.machine_id)
        if priced is not None:
            plan = priced[1]
            if requested is None:
                return plan.bundles[0].price_id, plan
            if plan.bundle_for(requested) is None:
                raise BadRequest(
                    f"machine {machine.machine_id} sells by its pricing plan's bundles: price_id"
                    " must be the price of one of them"
                    f" ({', '.join(b.price_id for b in plan.bundles)})",
                    code="price_not_allowed",
                )
            return requested, plan
        allowed = {p for p in (machine.price_id, self.default_price_id) if p}
        if requested is not None:
            if requested not in allowed:
                raise BadRequest(
                    "price_id must be the machine's price or the default price",
                    code="price_not_allowed",
                )
            return requested, None
        price_id = machine.price_id or self.default_price_id
        if not price_id:
            # Name every setting a new link lacks at once, not one per attempt.
            # A key given but refused is named by what is wrong with it (Settings.unusable).
            unusable = self.gateway.settings.unusable("STRIPE_PRICE_ID", "STRIPE_API_KEY")
            raise ServiceUnavailable(
                f"{unusable or not_set(['STRIPE_PRICE_ID'])} (the machine has no price of its own)",
                code="not_configured",
            )
        return price_id, None

    def link_for(
        self,
        machine: Machine,
        *,
        price_id: str | None = None,
        quantity: int | None = None,
        anonymous: bool = False,
        text: str | None = None,
    ) -> PaymentLink:
        """Return the machine's stored link, creating it at Stripe the first time.

        One request at a time makes a given link. Anonymous requests (a QR code on a page,
        reloaded, or asked for every quantity in turn) get no retries of their one call, fail
        at once for ``FAILURE_MEMORY_SECONDS`` after Stripe failed to make that link, and may
        ask Stripe for any link of a machine once per ``ANONYMOUS_CALL_SECONDS``: anonymous
        traffic causes at most one Stripe call per machine a minute (SPEC "HTTP"). They never
        wait: not for another request making the same link, nor for one of the
        ``ANONYMOUS_CALLS_AT_ONCE`` calls in flight (a 429 at once, the machine's minute not
        spent), so however slow Stripe is they hold no worker thread beyond their own call.
        A cabinet asking with its token is not held back; a stored link costs no call at all.
        A link made at a bundle's price says what the player gets (``text``, by default the
        bundle's offer), whether the player chooses the quantity or it is fixed.
        Raises PaymentProviderError, TooManyRequests, ServiceUnavailable, BadRequest,
        StoreError.
        """
        chosen_price, plan = self._choose(machine, price_id)
        key = link_key(machine.machine_id, chosen_price, quantity or 0)
        stored = self.store.get_link(key)
        if stored is not None:
            return stored
        with self._making(key, wait=not anonymous):
            stored = self.store.get_link(key)
            if stored is not None:
                return stored
            failed_at = self._failed.get(key)
            recent = failed_at is not None and monotonic() - failed_at < FAILURE_MEMORY_SECONDS
            if anonymous and recent:
                raise PaymentProviderError(
                    "Stripe could not make this machine's payment link a moment ago;"
                    " try again in a minute"
                )
            bundle = plan.bundle_for(chosen_price) if plan is not None else None
            if text is None and plan is not None and bundle is not None:
                text = offer_text(plan, bundle, machine.timezone or "UTC")
            with self._anonymous_slot() if anonymous else contextlib.nullcontext():
                if anonymous:
                    self._take_anonymous_call(machine.machine_id)
                try:
                    return self._make(
                        machine,
                        chosen_price,
                        quantity,
                        retries=0 if anonymous else None,
                        text=text,
                    )
                except PaymentProviderError:
                    self._failed[key] = monotonic()
                    raise

    @contextlib.contextmanager
    def _anonymous_slot(self) -> Iterator[None]:
        """Hold one of the ``ANONYMOUS_CALLS_AT_ONCE`` slots, or raise TooManyRequests at once
        when all are taken."""
        if not self._anonymous_slots.acquire(blocking=False):
            raise TooManyRequests(
                "Stripe is being asked for other payment links right now: try again in a"
                " moment, or ask /create-payment-link with the machine's token"
            )
        try:
            yield
        finally:
            self._anonymous_slots.release()

    def _take_anonymous_call(self, machine_id: str) -> None:
        """Spend the machine's one anonymous Stripe call of the minute, or raise
        TooManyRequests when it was spent (checked and spent at once: links of one machine
        are made under different locks)."""
        now = monotonic()
        with self._guard:
            last = self._anonymous_calls.get(machine_id)
            if last is not None and now - last < ANONYMOUS_CALL_SECONDS:
                raise TooManyRequests(
                    "this payment link is not made yet, and one of this machine's links was"
                    " asked of Stripe less than a minute ago: try again in a minute, or ask"
                    " /create-payment-link with the machine's token"
                )
            self._anonymous_calls[machine_id] = now

    @contextlib.contextmanager
    def _making(self, key: str, *, wait: bool = True) -> Iterator[None]:
        """Hold the lock of the link ``key``; without ``wait``, raise TooManyRequests at once
        when another request is making that link."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        if not lock.acquire(blocking=wait):
            raise TooManyRequests(
                "this payment link is being made right now: try again in a moment"
            )
        try:
            yield
        finally:
            lock.release()

    def bundle_link(
        self, machine: Machine, plan: Plan, bundle: Bundle, *, anonymous: bool = False
    ) -> PaymentLink:
        """Return the Payment Link of one bundle of a machine's plan, making it the first time
        with the text that says what the player gets (the player chooses 1..MAX_QUANTITY).
        Raises as ``link_for``."""
        text = offer_text(plan, bundle, machine.timezone or "UTC")
        return self.link_for(machine, price_id=bundle.price_id, anonymous=anonymous, text=text)

    def _make(
        self,
        machine: Machine,
        chosen_price: str,
        quantity: int | None,
        *,
        retries: int | None,
        text: str | None = None,
    ) -> PaymentLink:
        created = self.gateway.create_payment_link(
            machine_id=machine.machine_id,
            price_id=chosen_price,
            quantity=quantity,
            max_quantity=self.max_quantity,
            retries=retries,
            text=text,
        )
        # One Stripe call: the created link carries its Price; ask again only if it did not.
        price = created.price or self.gateway.retrieve_price(chosen_price, retries=retries)
        link = self.store.put_link(
            PaymentLink(
                link_id=created.link_id,
                machine_id=machine.machine_id,
                price_id=chosen_price,
                quantity=quantity or 0,
                url=f"{created.url}?client_reference_id={machine.machine_id}",
                unit_amount=price.unit_amount,
                currency=price.currency,
                created_at=utc_now(),
            )
        )
        log_event(
            logger,
            "payment_link_created",
            machine_id=machine.machine_id,
            payment_link_id=link.link_id,
            price_id=chosen_price,
            quantity=quantity,
        )
        return link
