"""GET / (what this is), GET /status (is the API up and configured? no network call) and
GET /pulse-key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, request

from arcade import __version__, wire
from arcade.services import services

if TYPE_CHECKING:
    from arcade.config import Settings

bp = Blueprint("status", __name__)


@bp.get("/")
def index():
    """Say what this is and where to look: no credentials, no network."""
    root = request.script_root
    return {
        "service": "Arcade Pay",
        "status": f"{root}/status",
        "admin": f"{root}/admin",
        "docs": "README.md",
    }


@bp.get("/status")
def status():
    svc = services()
    settings = svc.settings
    publisher = svc.publisher
    problems = svc.problems()
    # What this process last saw, not a probe: /status makes no network call. A broker that is
    # down shows here after the first publish that failed; /status/ready asks it live.
    last_publish = publisher.last_publish or "none yet"
    publish_failed = last_publish.startswith("failed")
    if publish_failed:
        problems.append(f"the last publish to the broker {last_publish}")
    return {
        "status": "up",
        "message": "API is running",
        "version": __version__,
        "stripe": {
            "api_key": _state(settings, "STRIPE_API_KEY"),
            "webhook_secret": _state(settings, "STRIPE_WEBHOOK_SECRET"),
            "default_price": _state(settings, "STRIPE_PRICE_ID"),
        },
        "broker": {
            "host": settings.broker_host,
            "port": settings.broker_port,
            "tls": settings.broker_tls,
            "ready": not publisher.problems()
            and not settings.broker_refused
            and not publish_failed,
            "last_publish": last_publish,
        },
        "store": settings.database_url.split(":", 1)[0],
        "problems": problems,
        "live_check": f"{request.script_root}/status/ready",
    }


@bp.get("/pulse-key")
def pulse_key():
    """The public key cabinets pin to check coinpulse and gameover signatures."""
    return {"alg": wire.SIGNATURE_ALGORITHM, "public_key": services().signer.public_key()}


def _state(settings: Settings, name: str) -> str:
    """Return "set", "refused" (given, but not used: ``problems`` says why) or "missing"."""
    if not settings.missing(name):
        return "set"
    return "refused" if settings.refusal(name) else "missing"
