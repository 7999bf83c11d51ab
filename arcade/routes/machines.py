"""Game over, a machine's state, and the operator's machine list."""

from __future__ import annotations

from flask import Blueprint, request

from arcade.clock import from_unix, iso_or_none
from arcade.config import MAX_CREDITS_PER_UNIT
from arcade.errors import BadRequest, UnknownMachine
from arcade.machines import check_machine_id, describe
from arcade.routes import idempotency_key, json_body
from arcade.services import services
from arcade.wire import PAYMENT_ID_PATTERN

bp = Blueprint("machines", __name__)

MAX_REPORTED_CREDITS = 1_000_000


@bp.post("/gameover")
def gameover():
    """A game ended: ``{"machine_id", "credits_per_game"?}``, the latter what the game cost on
    the cabinet (``arcade.wire``, "What a game costs"); the answer says what a game costs now."""
    body = json_body()
    machine_id = check_machine_id(body.get("machine_id"))
    cost = body.get("credits_per_game")
    if cost is not None:
        from arcade.pricing import parse_credits_per_game

        parse_credits_per_game(cost)
    key = idempotency_key()
    svc = services()
    machine = svc.registry.authorise(machine_id, request.headers.get("Authorization"))
    configured = machine.credits_per_game or 1
    svc.ledger.game_over(machine_id, key=key, credits_per_game=cost or configured)
    return {"message": "Game over signal sent", "credits_per_game": configured}


@bp.get("/machines/<machine_id>")
def machine_state(machine_id: str):
    check_machine_id(machine_id)
    svc = services()
    authorization = request.headers.get("Authorization")
    try:
        machine = svc.registry.authorise(machine_id, authorization)
    except UnknownMachine:
        # The operator can still read a removed machine's books: its payments and counters
        # stay on record (SPEC "Operator CLI": `machines remove`).
        if not svc.registry.is_admin(authorization):
            raise
        return _removed_machine(machine_id)
    report = svc.ledger.report(machine)
    report["presence"] = svc.presence.of(machine)
    report["last_seen"] = iso_or_none(machine.last_seen)
    report["registered"] = True
    return report


def _removed_machine(machine_id: str) -> dict:
    """Return what is on record of a machine that is no longer registered, or raise NotFound
    when nothing is."""
    from arcade.store.base import Machine, PaymentQuery

    svc = services()
    state = svc.store.get_machine_state(machine_id)
    if state.version == 0:
        some, _ = svc.store.query_payments(PaymentQuery(machine_id=machine_id, limit=1))
        if not some:
            raise UnknownMachine(machine_id)
    # The report reads the machine's id and settings only; its registration time is not shown.
    unregistered = Machine(machine_id=machine_id, token_hash="", created_at=from_unix(0))
    report = svc.ledger.report(unregistered)
    return report | {"presence": "unknown", "last_seen": None, "registered": False}


@bp.post("/machines/<machine_id>/credits/ack")
def confirm_credits(machine_id: str):
    """The cabinet fired a coinpulse's coins: the payment becomes ``credited``."""
    check_machine_id(machine_id)
    payment_id = json_body().get("payment_id")
    if not isinstance(payment_id, str) or not PAYMENT_ID_PATTERN.fullmatch(payment_id):
        raise BadRequest("payment_id must be the coinpulse's paymentId", code="invalid_payment_id")
    svc = services()
    svc.registry.authorise(machine_id, request.headers.get("Authorization"))
    payment = svc.ledger.confirm(machine_id, payment_id)
    return {"payment_id": payment.payment_id, "status": payment.status}


@bp.post("/machines/<machine_id>/heartbeat")
def heartbeat(machine_id: str):
    """The cabinet is there: ``{"mqtt_connected": bool, "credits_left"?: n}``."""
    check_machine_id(machine_id)
    body = json_body()
    connected = body.get("mqtt_connected")
    if not isinstance(connected, bool):
        raise BadRequest("mqtt_connected must be true or false", code="invalid_heartbeat")
    credits_left = body.get("credits_left")
    if credits_left is not None and (
        isinstance(credits_left, bool)
        or not isinstance(credits_left, int)
        or not 0 <= credits_left <= MAX_REPORTED_CREDITS
    ):
        raise BadRequest(
            f"credits_left must be a whole number from 0 to {MAX_REPORTED_CREDITS}",
            code="invalid_heartbeat",
        )
    svc = services()
    machine = svc.registry.authorise(machine_id, request.headers.get("Authorization"))
    current = svc.presence.heartbeat(machine, mqtt_connected=connected, credits_left=credits_left)
    return {
        "machine_id": machine_id,
        "presence": svc.presence.of(current),
        # The cabinet's counter takes what the API's takes per game.
        "credits_per_game": current.credits_per_game or 1,
    }


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
    if credits_per_unit is not None and (
        isinstance(credits_per_unit, bool)
        or not isinstance(credits_per_unit, int)
        or not 1 <= credits_per_unit <= MAX_CREDITS_PER_UNIT
    ):
        raise BadRequest(
            f"credits_per_unit must be a whole number from 1 to {MAX_CREDITS_PER_UNIT}",
            code="invalid_credits_per_unit",
        )
    machine, token = svc.registry.register(
        machine_id, name=name, price_id=price_id, credits_per_unit=credits_per_unit
    )
    answer: dict[str, object] = {"machine_id": machine_id, "token": token}
    # Under a plan its bundles' links are made now; Stripe's failures are listed, and the
    # token (shown once) is answered whatever happened to them.
    links = svc.plans.welcome(machine)
    if links is not None:
        answer["links"] = links
    return answer, 201
