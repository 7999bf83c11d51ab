"""The objects one app instance works with, each built the first time it is used.

A Lambda cold start answers one request: building the ledger, the plans and the rest of the
money path for a ``/status`` would import a dozen modules (and their dataclasses) it never
uses, so ``create_app`` builds none of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from flask import current_app

from arcade.config import not_set

if TYPE_CHECKING:
    from arcade.config import Settings
    from arcade.ledger import Ledger
    from arcade.links import LinkService
    from arcade.machines import Registry
    from arcade.mqtt import Publisher
    from arcade.operators import Operators
    from arcade.payments import StripeGateway
    from arcade.plans import PlanService
    from arcade.presence import Presence
    from arcade.signing import PulseSigner
    from arcade.store.base import Store

T = TypeVar("T")

# Settings whose absence stops part of the service, and what stops, said after "X not set".
MISSING_MEANS = {
    "STRIPE_API_KEY": "",
    "STRIPE_WEBHOOK_SECRET": "",
    "STRIPE_PRICE_ID": ": a machine without a price of its own has no payment link",
    "ADMIN_API_KEY": ": admin endpoints are off",
}


class _Built(Generic[T]):
    """A service built on first use, once per app even when requests race for it.

    Once built it lives in the instance's ``__dict__``, where attribute lookup finds it before
    this descriptor: later uses cost nothing.
    """

    def __init__(self, build: Callable[[Services], T]):
        self.build = build
        self.__doc__ = build.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, services: Services | None, owner: type) -> T:
        if services is None:
            return self  # type: ignore[return-value]
        with services._building:  # re-entrant: the ledger is built from other services
            built = services.__dict__.get(self.name)
            if built is None:
                built = services.__dict__[self.name] = self.build(services)
        return built


class Services:
    """What the routes, the CLI, the background threads and the scheduled jobs work with.

    ``store``, ``publisher`` and ``gateway`` may be given (tests, the CLI's own store); every
    other service is made from the settings when first used.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        publisher: Publisher | None = None,
        gateway: StripeGateway | None = None,
    ):
        self.settings = settings
        self._building = threading.RLock()
        given = {"store": store, "publisher": publisher, "gateway": gateway}
        self.__dict__.update({name: value for name, value in given.items() if value is not None})

    @_Built
    def store(self) -> Store:
        """The store ``DATABASE_URL`` names (SQLite or DynamoDB)."""
        from arcade.store import open_store

        return open_store(self.settings.database_url, in_lambda=self.settings.in_lambda)

    @_Built
    def publisher(self) -> Publisher:
        """The MQTT publisher; it connects on its first publish."""
        from arcade.mqtt import Publisher

        return Publisher(self.settings)

    @_Built
    def gateway(self) -> StripeGateway:
        """Stripe's API, through the stripe library."""
        from arcade.payments import StripeGateway

        return StripeGateway(self.settings)

    @_Built
    def registry(self) -> Registry:
        """Machines, their tokens and who may act for them."""
        from arcade.machines import Registry

        return Registry(self.store, admin_api_key=self.settings.admin_api_key)

    @_Built
    def signer(self) -> PulseSigner:
        """The Ed25519 key that signs coinpulses and game overs."""
        from arcade.signing import PulseSigner

        return PulseSigner(self.store, seed=self.settings.pulse_signing_key)

    @_Built
    def links(self) -> LinkService:
        """Payment Links: made once per machine, price and quantity."""
        from arcade.links import LinkService

        return LinkService(
            self.store,
            self.gateway,
            default_price_id=self.settings.stripe_price_id,
            max_quantity=self.settings.max_quantity,
        )

    @_Built
    def ledger(self) -> Ledger:
        """Stripe's events and game overs applied to the store, and what cabinets hear."""
        from arcade.ledger import Ledger
        from arcade.mqtt import delivery_lease_seconds
        from arcade.payments import key_livemode

        settings = self.settings
        return Ledger(
            self.store,
            self.publisher,
            self.gateway,
            self.signer,
            topic_prefix=settings.topic_prefix,
            default_credits_per_unit=settings.credits_per_unit,
            default_price_id=settings.stripe_price_id,
            livemode=key_livemode(settings.stripe_api_key),
            delivery_lease_seconds=delivery_lease_seconds(settings.puback_timeout),
            max_quantity=settings.max_quantity,
            confirm_within_seconds=settings.confirm_within_seconds,
            auto_refund_seconds=settings.auto_refund_unconfirmed_seconds,
        )

    @_Built
    def presence(self) -> Presence:
        """Which machines are online, and their Payment Links switched to match."""
        from arcade.presence import Presence

        return Presence(
            self.store, self.gateway, offline_after=self.settings.machine_offline_after_seconds
        )

    @_Built
    def plans(self) -> PlanService:
        """Pricing plans, their Stripe Prices and Payment Links."""
        from arcade.plans import PlanService

        return PlanService(
            self.store, self.gateway, self.links, max_quantity=self.settings.max_quantity
        )

    @_Built
    def operators(self) -> Operators:
        """What the admin key's routes, the CLI and the /admin pages do with the money."""
        from arcade.operators import Operators

        return Operators(self)

    def relay(self) -> dict[str, Any]:
        """Run the delivery relay once, then bring Payment Links in line with presence.

        What the thread of ``python app.py``, the Lambda schedule and ``flask deliveries
        retry`` run. Raises StoreError when the store fails.
        """
        report = self.ledger.relay().as_dict()
        report["links_switched"] = self.presence.sync_all()
        return report

    def stripe_problems(self) -> list[str]:
        """Return what stops calls to Stripe's API, by setting name."""
        problem = self.settings.unusable("STRIPE_API_KEY")
        return [problem] if problem else []

    def problems(self) -> list[str]:
        """Return every setting that stops some part of the service, by name, in plain words.

        The malformed ones come first, as ``Settings`` found them; a setting already named
        there (an ADMIN_API_KEY too short, say) is not named again as missing.
        """
        found = list(self.settings.problems)
        for name in self.settings.missing(*MISSING_MEANS):
            if not any(problem.startswith(name) for problem in found):
                found.append(not_set([name], MISSING_MEANS[name]))
        return [*found, *(p for p in self.publisher.problems() if p not in found)]


def services() -> Services:
    """Return the current app's services."""
    return current_app.extensions["arcade"]
