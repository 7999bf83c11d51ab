"""POST /webhook (and /addCredit): Stripe's signed events."""

from __future__ import annotations

import logging

from flask import Blueprint, request

from arcade.errors import BadRequest, InvalidEvent, InvalidSignature
from arcade.logs import REFUSALS
from arcade.services import services

logger = logging.getLogger(__name__)

bp = Blueprint("webhook", __name__)


@bp.post("/webhook")
@bp.post("/addCredit")
def webhook():
    svc = services()
    # The signature covers the exact bytes Stripe sent: verify them before anything else.
    payload = request.get_data(cache=False)
    try:
        event = svc.gateway.verify_event(payload, request.headers.get("Stripe-Signature"))
    except InvalidSignature as exc:
        REFUSALS.log(logger, "signature_refused", reason=str(exc), path=request.path)
        raise BadRequest(str(exc), code="invalid_signature") from exc
    try:
        outcome = svc.ledger.apply_event(event)
    except InvalidEvent as exc:
        raise BadRequest(str(exc), code="invalid_event") from exc
    return {"received": True, "result": outcome.result, "payment_id": outcome.payment_id}
