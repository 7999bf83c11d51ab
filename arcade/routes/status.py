"""GET /status (is the API up, and is it configured? no network call) and GET /pulse-key."""

from __future__ import annotations

from flask import Blueprint

from arcade import __version__, wire
from arcade.services import services

bp = Blueprint("status", __name__)


@bp.get("/status")
def status():
    svc = services()
    settings = svc.settings
    return {
        "status": "up",
        "message": "API is running",
        "version": __version__,
        "stripe": {
            "api_key": "set" if settings.stripe_api_key else "missing",
            "webhook_secret": "set" if settings.stripe_webhook_secret else "missing",
            "default_price": "set" if settings.stripe_price_id else "missing",
        },
        "broker": {
            "host": settings.broker_host,
            "port": settings.broker_port,
            "tls": settings.broker_tls,
            "ready": not svc.publisher.problems(),
        },
        "store": settings.database_url.split(":", 1)[0],
        "problems": svc.problems(),
    }


@bp.get("/pulse-key")
def pulse_key():
    """The public key cabinets pin to check coinpulse and gameover signatures."""
    return {"alg": wire.SIGNATURE_ALGORITHM, "public_key": services().signer.public_key()}
