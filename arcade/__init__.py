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

    from arcade import admin, cli, page_headers
    from arcade.config import Settings
    from arcade.http_errors import register_error_handlers
    from arcade.logs import log_event
    from arcade.routes import links, machines, operators, plans, play, status, webhook
    from arcade.services import Services
    from arcade.store import log_refusal
    from arcade.url_rules import LazyBuilderRule

    settings = settings or Settings.from_env()
    for problem in settings.problems:
        log_event(logger, "setting_problem", level=logging.WARNING, problem=problem)
    if store is None:
        log_refusal(settings.database_url, in_lambda=settings.in_lambda)
    app = Flask("arcade", static_folder=None)
    app.url_rule_class = LazyBuilderRule
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # Each service is built on first use: a cold start's /status builds none of the money path.
    app.extensions["arcade"] = Services(settings, store=store, publisher=publisher, gateway=stripe)
    for module in (status, links, webhook, machines, operators, play, plans):
        app.register_blueprint(module.bp)
    admin.init_app(app, settings.admin_api_key)
    register_error_handlers(app)
    page_headers.init_app(app)
    cli.register(app)
    return app
