"""Pricing plans and a machine's game settings through the admin JSON API (SPEC "Pricing
plans"): read and save plans, set credits per game and time zone, read the record of changes."""

from __future__ import annotations

from flask import Blueprint, request

from arcade.errors import BadRequest
from arcade.machines import check_machine_id
from arcade.routes import json_body
from arcade.services import services

bp = Blueprint("plans", __name__)

# The plans and pricing modules are imported by the routes that use them, not at start-up: a
# Lambda cold start answers one request.

SETTINGS_FIELDS = {"credits_per_game", "timezone"}


def _admin() -> None:
    services().registry.require_admin(request.headers.get("Authorization"))


@bp.get("/plans/default")
def show_default_plan():
    from arcade.pricing import DEFAULT_PLAN

    _admin()
    return services().plans.show(DEFAULT_PLAN)


@bp.put("/plans/default")
def save_default_plan():
    from arcade.plans import BY_ADMIN_API
    from arcade.pricing import DEFAULT_PLAN

    _admin()
    return services().plans.save(DEFAULT_PLAN, json_body(), by=BY_ADMIN_API), 201


@bp.get("/plans/default/changes")
def default_plan_changes():
    from arcade.pricing import DEFAULT_PLAN

    _admin()
    return {"changes": services().plans.changes(DEFAULT_PLAN)}


@bp.get("/machines/<machine_id>/plan")
def show_machine_plan(machine_id: str):
    from arcade.pricing import DEFAULT_PLAN

    check_machine_id(machine_id)
    _admin()
    svc = services()
    shown = svc.plans.show(machine_id)
    priced = svc.plans.in_force(svc.registry.get(machine_id))
    # Which plan sells at the machine now: its own, the default one, or none (single price).
    shown["in_force"] = (
        None
        if priced is None
        else {"owner": "default" if priced[0].owner == DEFAULT_PLAN else machine_id}
        | {"version": priced[0].version}
    )
    return shown


@bp.put("/machines/<machine_id>/plan")
def save_machine_plan(machine_id: str):
    from arcade.plans import BY_ADMIN_API

    check_machine_id(machine_id)
    _admin()
    return services().plans.save(machine_id, json_body(), by=BY_ADMIN_API), 201


@bp.patch("/machines/<machine_id>")
def configure_machine(machine_id: str):
    from arcade.plans import BY_ADMIN_API

    check_machine_id(machine_id)
    _admin()
    body = json_body()
    unknown = set(body) - SETTINGS_FIELDS
    if unknown:
        raise BadRequest(
            f"a machine's settings are credits_per_game and timezone, not {sorted(unknown)[0]!r}",
            code="invalid_machine_settings",
        )
    return services().plans.configure(
        machine_id,
        credits_per_game=body.get("credits_per_game"),
        timezone=body.get("timezone"),
        by=BY_ADMIN_API,
    )


@bp.get("/machines/<machine_id>/changes")
def machine_changes(machine_id: str):
    check_machine_id(machine_id)
    _admin()
    services().registry.get(machine_id)
    return {"changes": services().plans.changes(machine_id)}
