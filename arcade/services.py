"""The objects one app instance works with, built once in ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from flask import current_app

from arcade.config import Settings
from arcade.ledger import Ledger
from arcade.links import LinkService
from arcade.machines import Registry
from arcade.mqtt import Publisher
from arcade.payments import StripeGateway
from arcade.plans import PlanService
from arcade.presence import Presence
from arcade.signing import PulseSigner
from arcade.store.base import Store

# Settings whose absence stops part of the service, and what stops, said after "X not set".
MISSING_MEANS = {
    "STRIPE_API_KEY": "",
    "STRIPE_WEBHOOK_SECRET": "",
    "STRIPE_PRICE_ID": ": a machine without a price of its own has no payment link",
    "ADMIN_API_KEY": ": admin endpoints are off",
}

if TYPE_CHECKING:
    from arcade.operators import Operators


@dataclass
class Services:
    settings: Settings
    store: Store
    publisher: Publisher
    gateway: StripeGateway
    registry: Registry
    signer: PulseSigner
    links: LinkService
    ledger: Ledger
    presence: Presence
    plans: PlanService

    @cached_property
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
        return [f"{name} not set" for name in self.settings.missing("STRIPE_API_KEY")]

    def problems(self) -> list[str]:
        """Return every setting that stops some part of the service, by name, in plain words.

        The malformed ones come first, as ``Settings`` found them; a setting already named
        there (an ADMIN_API_KEY too short, say) is not named again as missing.
        """
        found = list(self.settings.problems)
        for name in self.settings.missing(*MISSING_MEANS):
            if not any(problem.startswith(name) for problem in found):
                found.append(f"{name} not set{MISSING_MEANS[name]}")
        return [*found, *self.publisher.problems()]


def services() -> Services:
    """Return the current app's services."""
    return current_app.extensions["arcade"]
