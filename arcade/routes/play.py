"""The player's page: what a cabinet's QR code opens (SPEC "Pricing plans", ``GET /play/<id>``).

A small HTML page drawn by the app, with no login and no script: the machine's bundles with
their prices and credits, any bonus and the happy hour in force, each a plain link to its
Stripe Payment Link. It is cacheable for a minute (a happy hour starts or ends on the minute),
with an ETag, and reads the same through ``python app.py`` and Lambda.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, render_template, request

from arcade.clock import utc_now
from arcade.errors import (
    ApiError,
    MachineOffline,
    PaymentProviderError,
    SettingsError,
)
from arcade.routes import qr_kind, qr_response
from arcade.services import Services, services
from arcade.wire import is_valid_machine_id

if TYPE_CHECKING:
    from arcade.store.base import Machine

bp = Blueprint("play", __name__, template_folder="templates")

# A happy hour starts and ends on a minute: a cached page is at most this old.
CACHE_SECONDS = 60


@bp.get("/play/<machine_id>")
def player_page(machine_id: str):
    if not is_valid_machine_id(machine_id):
        # SPEC "HTTP": an id that cannot be a machine's is a 400 before any other work.
        return _page(
            "play/message.html",
            400,
            title="Not a machine code",
            message="This address does not name a machine. Scan the code on the cabinet again.",
        )
    svc = services()
    machine = svc.store.get_machine(machine_id)
    if machine is None:
        return _page(
            "play/message.html",
            404,
            title="No such machine",
            message="This code does not belong to a machine here.",
        )
    try:
        svc.presence.require_online(machine)
    except MachineOffline:
        return _page(
            "play/message.html",
            503,
            title="Out of order",
            message="This machine cannot take payments right now. Nothing was charged.",
        )
    return _page("play/page.html", 200, **offers(svc, machine))


@bp.get("/play/<machine_id>/qr.<kind>")
def player_page_qr(machine_id: str, kind: str):
    """The QR code of the machine's player page, for the cabinet or a printed card."""
    from arcade.machines import check_machine_id

    check_machine_id(machine_id)
    qr_kind(kind)
    services().registry.get(machine_id)
    # The page's address is the one this request came to: caches must keep one per host.
    url = f"{request.url_root.rstrip('/')}/play/{machine_id}"
    return qr_response(url, kind, vary="Host")


def offers(svc: Services, machine: Machine) -> dict[str, Any]:
    """Return what the player's page shows of a machine: its offers (each with its Payment
    Link, or none while Stripe cannot make it), bonuses and the happy hour in force."""
    from arcade.operators import money
    from arcade.pricing import happy_hour_at, machine_zone

    per_game = machine.credits_per_game or 1
    priced = svc.plans.in_force(machine)
    page: dict[str, Any] = {
        "machine": machine,
        "per_game": per_game,
        "offers": [],
        "bonuses": [],
        "happy_now": None,
        "happy_hours": [],
    }
    if priced is None:
        # No plan: the single price of today's flow, at the machine's credits per unit.
        url, amount, currency = None, None, None
        try:
            link = svc.links.link_for(machine, anonymous=True)
            url, amount, currency = link.url, link.unit_amount, link.currency
        except (ApiError, PaymentProviderError, SettingsError):
            pass
        credits = machine.credits_per_unit or svc.settings.credits_per_unit
        page["offers"].append(
            {
                "name": "Credits",
                "credits": credits,
                "price": money(amount, currency) if amount and currency else None,
                "url": url,
            }
        )
        return page
    _, plan = priced
    for bundle in plan.bundles:
        try:
            url = svc.links.bundle_link(machine, plan, bundle, anonymous=True).url
        except (ApiError, PaymentProviderError, SettingsError):
            url = None  # shown as not available: the next visit tries again
        page["offers"].append(
            {
                "name": bundle.name,
                "credits": bundle.credits,
                "price": money(bundle.unit_amount, bundle.currency),
                "url": url,
            }
        )
    page["bonuses"] = sorted(plan.bonuses, key=lambda b: b.min_units)
    page["happy_now"] = happy_hour_at(plan, utc_now(), machine_zone(machine.timezone))
    page["happy_hours"] = plan.happy_hours
    page["zone"] = machine.timezone or "UTC"
    return page


def _page(template: str, status: int, **context: Any) -> Response:
    """Render a player page with its ETag and cache headers (304 when the browser has it)."""
    html = render_template(template, **context)
    tag = hashlib.sha256(html.encode()).hexdigest()[:32]
    cache = f"public, max-age={CACHE_SECONDS}" if status == 200 else "no-store"
    headers = {"ETag": f'"{tag}"', "Cache-Control": cache}
    if status == 200 and request.if_none_match.contains_weak(tag):
        return Response(status=304, headers=headers)
    return Response(html, status=status, mimetype="text/html", headers=headers)
