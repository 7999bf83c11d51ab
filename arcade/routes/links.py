"""Payment links and their QR codes."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, request

from arcade.errors import BadRequest
from arcade.machines import check_machine_id
from arcade.routes import json_body, qr_kind, qr_response
from arcade.services import Services, services

bp = Blueprint("links", __name__)

DIGITS = re.compile(r"[0-9]{1,3}")


@bp.post("/create-payment-link")
def create_payment_link():
    body = json_body()
    machine_id = check_machine_id(body.get("machine_id"))
    svc = services()
    price_id, quantity = _link_choice(svc, body.get("price_id"), body.get("quantity"))
    machine = svc.registry.authorise(machine_id, request.headers.get("Authorization"))
    svc.presence.require_online(machine)
    link = svc.links.link_for(machine, price_id=price_id, quantity=quantity)
    # The QR paths name this link's choice, so their image is of the very link answered here;
    # what the machine sells by default goes unsaid, so one link has one QR path.
    choice: dict[str, Any] = {}
    if link.quantity:
        choice["quantity"] = link.quantity
    if link.price_id != (machine.price_id or svc.links.default_price_id):
        choice["price_id"] = link.price_id
    query = f"?{urlencode(choice)}" if choice else ""
    base = f"{request.script_root}/machines/{machine_id}"
    return {
        "url": link.url,
        "machine_id": machine_id,
        "payment_link_id": link.link_id,
        "qr_png": f"{base}/qr.png{query}",
        "qr_svg": f"{base}/qr.svg{query}",
    }


@bp.get("/machines/<machine_id>/qr.<kind>")
def qr_code(machine_id: str, kind: str):
    check_machine_id(machine_id)
    qr_kind(kind)
    svc = services()
    price_id, quantity = _link_choice(
        svc, request.args.get("price_id"), _query_number(request.args.get("quantity"))
    )
    # No token: an <img> cannot send one, and the code only shows the public link URL.
    machine = svc.registry.get(machine_id)
    svc.presence.require_online(machine)
    link = svc.links.link_for(machine, price_id=price_id, quantity=quantity, anonymous=True)
    return qr_response(link.url, kind)


def _link_choice(svc: Services, price_id: Any, quantity: Any) -> tuple[str | None, int | None]:
    """Return the price and quantity asked for, or raise BadRequest in plain words.

    The same rules for the JSON body of /create-payment-link and the QR code's query string.
    """
    if price_id is not None and (not isinstance(price_id, str) or not price_id):
        raise BadRequest("price_id must be a Stripe price id (price_…)", code="invalid_price_id")
    if quantity is not None and (
        isinstance(quantity, bool)
        or not isinstance(quantity, int)
        or not 1 <= quantity <= svc.settings.max_quantity
    ):
        raise BadRequest(
            f"quantity must be a whole number from 1 to {svc.settings.max_quantity}",
            code="invalid_quantity",
        )
    return price_id, quantity


def _query_number(text: str | None) -> Any:
    """Return a query string's digits as an int; anything else as it came, to be refused."""
    if text is not None and DIGITS.fullmatch(text):
        return int(text)
    return text
