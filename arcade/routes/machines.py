"""Game over, a machine's state, and the operator's machine list."""

from __future__ import annotations

import re

from flask import Blueprint, request

from arcade.errors import BadRequest
from arcade.machines import check_machine_id, describe
from arcade.routes import json_body
from arcade.services import services

bp = Blueprint("machines", __name__)

IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,255}")


@bp.post("/gameover")
def gameover():
    machine_id = check_machine_id(json_body().get("machine_id"))
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest(
            "Idempotency-Key must be 1 to 255 visible characters", code="invalid_idempotency_key"
        )
    svc = services()
    svc.registry.authorise(machine_id, request.headers.get("Authorization"))
    svc.ledger.game_over(machine_id, key=key)
    return {"message": "Game over signal sent"}


@bp.get("/machines/<machine_id>")
def machine_state(machine_id: str):
    check_machine_id(machine_id)
    svc = services()
    machine = svc.registry.authorise(machine_id, request.headers.get("Authorization"))
    return svc.ledger.report(machine)


@bp.get("/machines")
def list_machines():
    svc = services()
    svc.registry.require_admin(request.headers.get("Authorization"))
    return {"machines": [describe(m) for m in svc.store.list_machines()]}


@bp.post("/machines")
def register_machine():
    svc = services()
    svc.registry.require_admin(request.headers.get("Authorization"))
    body = json_body()
    machine_id = check_machine_id(body.get("machine_id"))
    name, price_id = body.get("name"), body.get("price_id")
    credits_per_unit = body.get("credits_per_unit")
    if name is not None and not isinstance(name, str):
        raise BadRequest("name must be a string", code="invalid_name")
    if price_id is not None and not isinstance(price_id, str):
        raise BadRequest("price_id must be a string", code="invalid_price_id")
    if credits_per_unit is not None and (
        isinstance(credits_per_unit, bool)
        or not isinstance(credits_per_unit, int)
        or not 1 <= credits_per_unit <= 1000
    ):
        raise BadRequest(
            "credits_per_unit must be a whole number from 1 to 1000",
            code="invalid_credits_per_unit",
        )
    _, token = svc.registry.register(
        machine_id, name=name, price_id=price_id, credits_per_unit=credits_per_unit
    )
    return {"machine_id": machine_id, "token": token}, 201
