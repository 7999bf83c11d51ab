"""What each ``/admin`` page shows, gathered from the services (no HTML here but the chart)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from flask import url_for
from markupsafe import Markup, escape

from arcade.clock import iso_or_none, utc_now
from arcade.errors import ArcadeError, BadRequest
from arcade.operators import money, zone
from arcade.store.base import PaymentQuery

CHART_DAYS = (7, 30, 90, 365)


@dataclass(frozen=True)
class MachineRow:
    machine_id: str
    name: str | None
    presence: str
    state: str
    credits_left: int
    today: str  # today's net revenue, in money, or "–"
    last_payment: dict[str, Any] | None


def machine_rows(svc: Any) -> tuple[list[MachineRow], list[str]]:
    """Return one row per machine and today's net revenue over all machines (per currency)."""
    today = utc_now().date().isoformat()
    report = svc.operators.revenue(since=today, until=today, group="machine")
    net: dict[str, list[str]] = {}
    totals: dict[str, int] = {}
    for row in report["rows"]:
        net.setdefault(row["machine_id"], []).append(money(row["net"], row["currency"]))
        totals[row["currency"]] = totals.get(row["currency"], 0) + row["net"]
    rows = []
    for machine in svc.store.list_machines():
        state = svc.store.get_machine_state(machine.machine_id)
        last, _ = svc.store.query_payments(PaymentQuery(machine_id=machine.machine_id, limit=1))
        rows.append(
            MachineRow(
                machine_id=machine.machine_id,
                name=machine.name,
                presence=svc.presence.of(machine),
                state="playing" if state.session_id else "idle",
                credits_left=state.credits_left,
                today=", ".join(net.get(machine.machine_id, [])) or "–",
                last_payment=svc.operators.describe(last[0]) if last else None,
            )
        )
    return rows, [money(amount, currency) for currency, amount in sorted(totals.items())]


def machine_page(svc: Any, machine_id: str) -> dict[str, Any] | None:
    """Return what one machine's page shows, or None when there is neither the machine nor any
    payment for it (a removed machine's payments are still shown)."""
    machine = svc.store.get_machine(machine_id)
    listed = svc.operators.payments(machine_id=machine_id, limit=50)
    if machine is None and not listed["payments"]:
        return None
    page: dict[str, Any] = {
        "machine_id": machine_id,
        "machine": machine,
        "payments": listed["payments"],
        "more": listed["next_cursor"] is not None,
        "report": None,
        "presence": None,
        "qr_svg": None,
        "link_url": None,
        "link_problem": None,
    }
    if machine is None:
        return page
    page["report"] = svc.ledger.report(machine, payments=0)
    page["plan"] = plan_page(svc, machine_id)
    page["play_url"] = url_for("play.player_page", machine_id=machine_id, _external=True)
    page["presence"] = svc.presence.of(machine)
    page["last_seen"] = iso_or_none(machine.last_seen)  # shown as the JSON API writes it
    priced = svc.plans.in_force(machine)
    if priced is not None:
        # Under a plan the QR code to print opens the player's page, which lists every bundle.
        whose = "its own" if priced[0].owner == machine_id else "the default"
        page["sells"] = f"Sells by {whose} pricing plan (version {priced[0].version})."
        page["link_url"] = page["play_url"]
        page["qr_endpoint"] = "play.player_page_qr"
    else:
        price = machine.price_id or "the default price (STRIPE_PRICE_ID)"
        per_unit = machine.credits_per_unit or "the default number of"
        page["sells"] = f"Sells {price}, {per_unit} credit(s) per unit bought."
        page["qr_endpoint"] = "links.qr_code"
        try:
            page["link_url"] = svc.links.link_for(machine).url
        except ArcadeError as exc:
            message = exc.message if hasattr(exc, "message") else str(exc)
            page["link_problem"] = f"No QR code: {message}."
    if page["link_url"]:
        from arcade import qr

        svg = qr.render(page["link_url"], "svg").decode()
        # The qrcode library's own SVG of a URL of ours: nothing in it comes from a request.
        page["qr_svg"] = Markup(svg[svg.index("<svg") :])  # noqa: S704
    return page


def plan_page(svc: Any, owner: str) -> dict[str, Any]:
    """Return what the pricing section of a page shows: the plan's current version, its
    versions, the one in force (for a machine: its own or the default plan's), the plan as
    JSON to edit, and the record of changes."""
    import json

    from arcade.pricing import DEFAULT_PLAN

    shown = svc.plans.show(owner)
    current = shown["current"]
    in_force = None
    if owner != DEFAULT_PLAN and current is None:
        default = svc.plans.show(DEFAULT_PLAN)["current"]
        in_force = default
    editable = (current or in_force or {}).get("plan") or EXAMPLE_PLAN
    # Edited plans name their Stripe Prices: a bundle keeps its price_id, not its amount.
    draft = {
        "bundles": [
            {"name": b["name"], "credits": b["credits"], "price_id": b["price_id"]}
            if "price_id" in b
            else b
            for b in editable["bundles"]
        ],
        "bonuses": editable.get("bonuses", []),
        "happy_hours": editable.get("happy_hours", []),
    }
    return {
        "owner": owner,
        "current": current,
        "default_in_force": in_force,
        "versions": shown["versions"],
        "json": json.dumps(draft, indent=2, ensure_ascii=False),
        "changes": svc.plans.changes(owner, 20),
    }


# What the plan form offers when there is no plan yet (amounts in cents).
EXAMPLE_PLAN = {
    "bundles": [
        {"name": "1 game", "credits": 1, "amount": 100, "currency": "usd"},
        {"name": "5 games", "credits": 6, "amount": 400, "currency": "usd"},
    ],
    "bonuses": [{"min_units": 3, "credits": 1}],
    "happy_hours": [{"days": ["fri", "sat"], "start": "17:00", "end": "19:00", "factor": 2}],
}


def revenue_page(svc: Any, *, days: str, tz: str | None) -> dict[str, Any]:
    """Return the revenue of the last ``days`` days by day (with a chart per currency) and
    by machine, in ``tz``."""
    if days not in {str(d) for d in CHART_DAYS}:
        raise BadRequest(f"days must be one of {', '.join(map(str, CHART_DAYS))}")
    where = zone(tz)
    today = utc_now().astimezone(where).date()
    first = today - timedelta(days=int(days) - 1)
    window = {"since": first.isoformat(), "until": today.isoformat(), "tz": tz}
    by_day = svc.operators.revenue(group="day", **window)
    by_machine = svc.operators.revenue(group="machine", **window)
    by_bundle = svc.operators.revenue(group="bundle", **window)
    currencies = sorted({row["currency"] for row in by_day["rows"]})
    charts = [
        (currency, bar_chart(first, today, by_day["rows"], currency)) for currency in currencies
    ]
    return {
        "days": days,
        "choices": CHART_DAYS,
        "tz": by_day["tz"],
        "charts": charts,
        "by_day": [r for r in reversed(by_day["rows"])],
        "by_machine": by_machine["rows"],
        "by_bundle": by_bundle["rows"],
        "money": money,
    }


def bar_chart(first: date, last: date, rows: list[dict[str, Any]], currency: str) -> Markup:
    """Return an SVG bar chart of net revenue per day in ``currency``, drawn here.

    One bar per day from ``first`` to ``last`` (days without money are empty), scaled to the
    largest day; a refund larger than the day's sales draws below the axis. Each bar has a
    ``<title>`` with the day and amount, so it reads in a screen reader and on hover.
    """
    net = {r["day"]: r["net"] for r in rows if r["currency"] == currency}
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    width, height, top, axis_space = 720, 260, 26, 34
    plot = height - top - axis_space
    most = max([abs(v) for v in net.values()] + [1])
    has_negative = any(v < 0 for v in net.values())
    zero_y = top + (plot / 2 if has_negative else plot)
    scale = (plot / 2 if has_negative else plot) / most
    step = width / len(days)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Net revenue per day in {escape(currency.upper())}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="0" y1="{zero_y:.1f}" x2="{width}" y2="{zero_y:.1f}" class="axis"/>',
        f'<text x="4" y="{top - 6}" class="label">{escape(money(most, currency))}</text>',
    ]
    label_every = max(1, len(days) // 6)
    for index, day in enumerate(days):
        value = net.get(day.isoformat(), 0)
        bar = abs(value) * scale
        x = index * step + step * 0.15
        y = zero_y - bar if value >= 0 else zero_y
        kind = "bar" if value >= 0 else "bar negative"
        tip = f"{day.isoformat()}: {money(value, currency)}"
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{bar:.1f}" '
            f'class="{kind}"><title>{escape(tip)}</title></rect>'
        )
        last_index = len(days) - 1
        near_last = 0 < last_index - index < label_every
        if (index % label_every == 0 and not near_last) or index == last_index:
            # The first and last labels hang inward so the chart's edges do not cut them.
            anchor = "start" if index == 0 else "end" if index == last_index else "middle"
            x_text = 0 if index == 0 else width if index == last_index else index * step + step / 2
            parts.append(
                f'<text x="{x_text:.1f}" y="{height - 8}" class="label" '
                f'text-anchor="{anchor}">{day.strftime("%b %d")}</text>'
            )
    parts.append("</svg>")
    # Numbers we computed; the only text (currency, amounts, days) went through escape().
    return Markup("".join(parts))  # noqa: S704
