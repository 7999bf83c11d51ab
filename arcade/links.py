"""Payment links: one per machine, price and quantity, made once and reused."""

from __future__ import annotations

import logging

from arcade.clock import iso, utc_now
from arcade.errors import BadRequest, ServiceUnavailable
from arcade.logs import log_event
from arcade.payments import StripeGateway
from arcade.store.base import Machine, PaymentLink, Store, link_key

logger = logging.getLogger(__name__)


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

    def price_for(self, machine: Machine, requested: str | None) -> str:
        """Return the price to sell: the requested one if allowed, else the machine's."""
        allowed = {p for p in (machine.price_id, self.default_price_id) if p}
        if requested is not None:
            if requested not in allowed:
                raise BadRequest(
                    "price_id must be the machine's price or the default price",
                    code="price_not_allowed",
                )
            return requested
        price_id = machine.price_id or self.default_price_id
        if not price_id:
            raise ServiceUnavailable(
                "STRIPE_PRICE_ID not set and the machine has no price", code="not_configured"
            )
        return price_id

    def link_for(
        self, machine: Machine, *, price_id: str | None = None, quantity: int | None = None
    ) -> PaymentLink:
        """Return the machine's stored link, creating it at Stripe the first time."""
        chosen_price = self.price_for(machine, price_id)
        key = link_key(machine.machine_id, chosen_price, quantity or 0)
        stored = self.store.get_link(key)
        if stored is not None:
            return stored
        price = self.gateway.retrieve_price(chosen_price)
        created = self.gateway.create_payment_link(
            machine_id=machine.machine_id,
            price_id=chosen_price,
            quantity=quantity,
            max_quantity=self.max_quantity,
        )
        link = self.store.put_link(
            PaymentLink(
                link_id=created.link_id,
                machine_id=machine.machine_id,
                price_id=chosen_price,
                quantity=quantity or 0,
                url=f"{created.url}?client_reference_id={machine.machine_id}",
                unit_amount=price.unit_amount,
                currency=price.currency,
                created_at=iso(utc_now()),
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
