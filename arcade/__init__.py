"""Arcade Pay: Stripe Payment Links in, MQTT coinpulses out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from flask import Flask

    from arcade.config import Settings
    from arcade.mqtt import Publisher
    from arcade.payments import StripeGateway
    from arcade.store.base import Store

# Flask answers 413 itself for bodies over this, before any route reads them.
MAX_BODY_BYTES = 256 * 1024

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    stripe: StripeGateway | None = None,
    publisher: Publisher | None = None,
    store: Store | None = None,
) -> Flask:
    """Build the Flask app and its services; connect to nothing yet."""
    from flask import Flask

    from arcade import admin, cli
    from arcade.config import Settings
    from arcade.http_errors import register_error_handlers
    from arcade.ledger import Ledger
    from arcade.links import LinkService
    from arcade.logs import log_event
    from arcade.machines import Registry
    from arcade.mqtt import Publisher, delivery_lease_seconds
    from arcade.payments import StripeGateway, key_livemode
    from arcade.plans import PlanService
    from arcade.presence import Presence
    from arcade.routes import links, machines, operators, plans, play, status, webhook
    from arcade.services import Services
    from arcade.signing import PulseSigner
    from arcade.store import open_store
    from arcade.url_rules import LazyBuilderRule

    settings = settings or Settings.from_env()
    for problem in settings.problems:
        log_event(logger, "setting_problem", level=logging.WARNING, problem=problem)
    if store is None:
        store = open_store(settings.database_url, in_lambda=settings.in_lambda)
    publisher = publisher or Publisher(settings)
    stripe = stripe or StripeGateway(settings)
    registry = Registry(store, admin_api_key=settings.admin_api_key)
    signer = PulseSigner(store, seed=settings.pulse_signing_key)
    app = Flask("arcade", static_folder=None)
    app.url_rule_class = LazyBuilderRule
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    link_service = LinkService(
        store,
        stripe,
        default_price_id=settings.stripe_price_id,
        max_quantity=settings.max_quantity,
    )
    app.extensions["arcade"] = Services(
        settings=settings,
        store=store,
        publisher=publisher,
        gateway=stripe,
        registry=registry,
        links=link_service,
        signer=signer,
        ledger=Ledger(
            store,
            publisher,
            stripe,
            signer,
            topic_prefix=settings.topic_prefix,
            default_credits_per_unit=settings.credits_per_unit,
            default_price_id=settings.stripe_price_id,
            livemode=key_livemode(settings.stripe_api_key),
            delivery_lease_seconds=delivery_lease_seconds(settings.puback_timeout),
            max_quantity=settings.max_quantity,
            confirm_within_seconds=settings.confirm_within_seconds,
            auto_refund_seconds=settings.auto_refund_unconfirmed_seconds,
        ),
        presence=Presence(store, stripe, offline_after=settings.machine_offline_after_seconds),
        plans=PlanService(store, stripe, link_service, max_quantity=settings.max_quantity),
    )
    for module in (status, links, webhook, machines, operators, play, plans):
        app.register_blueprint(module.bp)
    admin.init_app(app, settings.admin_api_key)
    register_error_handlers(app)
    cli.register(app)
    return app
