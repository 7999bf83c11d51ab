"""Payment links and their QR codes."""

from __future__ import annotations

from flask import Blueprint, Response, request

from arcade import qr
from arcade.errors import BadRequest
from arcade.machines import check_machine_id
from arcade.routes import json_body
from arcade.services import services

bp = Blueprint("links", __name__)


@bp.post("/create-payment-link")
def create_payment_link():
    body = json_body()
    machine_id = check_machine_id(body.get("machine_id"))
    price_id = body.get("price_id")
    if price_id is not None and (not isinstance(price_id, str) or not price_id):
        raise BadRequest("price_id must be a Stripe price id (price_…)", code="invalid_price_id")
    svc = services()
    quantity = body.get("quantity")
    if quantity is not None and (
        isinstance(quantity, bool)
        or not isinstance(quantity, int)
        or not 1 <= quantity <= svc.settings.max_quantity
    ):
        raise BadRequest(
            f"quantity must be a whole number from 1 to {svc.settings.max_quantity}",
            code="invalid_quantity",
        )
    machine = svc.registry.authorise(machine_id, request.headers.get("Authorization"))
    svc.presence.require_online(machine)
    link = svc.links.link_for(machine, price_id=price_id, quantity=quantity)
    return {
        "url": link.url,
        "machine_id": machine_id,
        "payment_link_id": link.link_id,
        "qr_png": f"/machines/{machine_id}/qr.png",
        "qr_svg": f"/machines/{machine_id}/qr.svg",
    }


@bp.get("/machines/<machine_id>/qr.<kind>")
def qr_code(machine_id: str, kind: str):
    check_machine_id(machine_id)
    if kind not in qr.MEDIA_TYPES:
        raise BadRequest("the QR code comes as qr.png or qr.svg", code="invalid_format")
    svc = services()
    # No token: an <img> cannot send one, and the code only shows the public link URL.
    machine = svc.registry.get(machine_id)
    svc.presence.require_online(machine)
    link = svc.links.link_for(machine, anonymous=True)
    tag = qr.etag(link.url, kind)
    headers = {"ETag": tag, "Cache-Control": "public, max-age=300"}
    if request.if_none_match.contains_weak(tag.strip('"')):
        return Response(status=304, headers=headers)
    return Response(qr.render(link.url, kind), mimetype=qr.MEDIA_TYPES[kind], headers=headers)
