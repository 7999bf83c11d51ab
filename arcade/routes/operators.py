"""The operator's JSON API (admin key): payments, revenue, resend, refund, manual credits and
a live readiness check (SPEC "Operators (admin key)")."""

from __future__ import annotations

from flask import Blueprint, request

from arcade.machines import check_machine_id
from arcade.routes import idempotency_key, json_body
from arcade.services import services

bp = Blueprint("operators", __name__)

# arcade.operators (the money path) is imported by the routes that use it, not at start-up: a
# Lambda cold start answers one request.


def _admin() -> None:
    services().registry.require_admin(request.headers.get("Authorization"))


@bp.get("/payments")
def list_payments():
    from arcade.operators import instant, page_size, zone

    _admin()
    args = request.args
    machine_id = args.get("machine_id")
    if machine_id is not None:
        check_machine_id(machine_id)
    utc = zone(None)
    return services().operators.payments(
        status=args.get("status") or None,
        machine_id=machine_id,
        since=instant(args.get("since"), "since", tz=utc),
        until=instant(args.get("until"), "until", tz=utc, end=True),
        limit=page_size(args.get("limit")),
        cursor=args.get("cursor"),
    )


@bp.get("/refunds/unmatched")
def unmatched_refunds():
    from arcade.operators import page_size

    _admin()
    return services().operators.unmatched(page_size(request.args.get("limit")))


@bp.get("/payments/<payment_id>")
def show_payment(payment_id: str):
    _admin()
    operators = services().operators
    return operators.describe(operators.payment(payment_id))  # checks the id first


@bp.post("/payments/<payment_id>/resend")
def resend_payment(payment_id: str):
    _admin()
    return services().operators.resend(payment_id)  # checks the id first


@bp.post("/payments/<payment_id>/refund")
def refund_payment(payment_id: str):
    from arcade.operators import check_payment_id

    _admin()
    payment_id = check_payment_id(payment_id)  # before the body: the id is the first fault
    body = json_body() if request.get_data(cache=True).strip() else {}
    return services().operators.refund(
        payment_id, amount=body.get("amount"), idempotency_key=idempotency_key()
    )


@bp.post("/machines/<machine_id>/credits")
def grant_credits(machine_id: str):
    from arcade.operators import manual_grant_request

    check_machine_id(machine_id)
    _admin()
    body = json_body()
    credits, reason = manual_grant_request(body.get("credits"), body.get("reason"))
    return services().operators.grant(machine_id, credits, reason, key=idempotency_key()), 201


@bp.get("/reports/revenue")
def revenue_report():
    _admin()
    args = request.args
    return services().operators.revenue(
        since=args.get("since"),
        until=args.get("until"),
        group=args.get("group") or "day",
        tz=args.get("tz"),
    )


@bp.get("/status/ready")
def ready():
    _admin()
    checks = services().operators.readiness()
    problems = [f"{check.name}: {check.problem}" for check in checks if not check.ok]
    body = {
        "ready": not problems,
        "checks": {check.name: check.problem or "ok" for check in checks},
        "problems": problems,
    }
    if problems:
        body |= {"error": "not ready: " + "; ".join(problems), "code": "not_ready"}
        return body, 503
    return body
