"""Operator commands: ``flask --app app machines …``, ``payments …``, ``credits grant``,
``revenue``, ``store init``, ``reconcile`` and ``deliveries retry``."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from arcade.config import MAX_CREDITS_PER_UNIT
from arcade.errors import ApiError, ArcadeError, SettingsError, StoreError
from arcade.machines import describe
from arcade.services import services
from arcade.wire import MACHINE_ID_RULE, is_valid_machine_id

machines_cli = AppGroup("machines", help="Register and manage cabinets.")
store_cli = AppGroup("store", help="Prepare the store.")
deliveries_cli = AppGroup("deliveries", help="The delivery relay: grants owed to cabinets.")
payments_cli = AppGroup("payments", help="Every payment: list, resend a coinpulse, refund.")
credits_cli = AppGroup("credits", help="Credits given by hand.")
plans_cli = AppGroup(
    "plans", help="Pricing plans: bundles, bonus credits and happy hours, by version."
)


def _machine_id(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not is_valid_machine_id(value):
        raise click.BadParameter(f"use {MACHINE_ID_RULE}")
    return value


@machines_cli.command("add")
@click.argument("machine_id", callback=_machine_id)
@click.option("--name", help="A name an operator recognises.")
@click.option("--price-id", help="The Stripe Price this machine sells (default: STRIPE_PRICE_ID).")
@click.option(
    "--credits-per-unit",
    type=click.IntRange(1, MAX_CREDITS_PER_UNIT),
    help="Credits per unit bought (default: CREDITS_PER_UNIT).",
)
@click.option(
    "--token-only",
    is_flag=True,
    help="Print only the token, so a shell can capture it: TOKEN=$(… --token-only).",
)
def add_machine(
    machine_id: str,
    name: str | None,
    price_id: str | None,
    credits_per_unit: int | None,
    token_only: bool,
) -> None:
    """Register a machine and print its token (shown only this once)."""
    svc = services()
    try:
        machine, token = svc.registry.register(
            machine_id, name=name, price_id=price_id, credits_per_unit=credits_per_unit
        )
        public_key = svc.signer.public_key()
    except ApiError as exc:  # a name or price id that cannot be one
        raise click.ClickException(exc.message) from exc
    except (StoreError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from exc
    # Under a plan its bundles' links are made now; failures are listed, never fatal.
    links = svc.plans.welcome(machine)
    for problem in (links or {}).get("problems", []):
        click.echo(
            f"Payment link not made yet (the player's page makes it later): {problem}", err=True
        )
    if token_only:
        click.echo(token)
        return
    click.echo(f"Registered {machine_id}. Keep the token: it is not shown again.")
    click.echo(f"The cabinet checks coinpulses with the API's public key {public_key}")
    if links is not None:
        click.echo(f"Its pricing plan's payment links: {links['made']} made.")
    shown: dict[str, Any] = {
        "machine_id": machine_id,
        "token": token,
        "pulse_public_key": public_key,
    }
    if links is not None:
        shown["links"] = links
    click.echo(json.dumps(shown))


@machines_cli.command("list")
def list_machines() -> None:
    """Print every registered machine, one JSON object a line."""
    try:
        machines = services().store.list_machines()
    except (StoreError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from exc
    for machine in machines:
        click.echo(json.dumps(describe(machine)))


@machines_cli.command("rotate-token")
@click.argument("machine_id", callback=_machine_id)
def rotate_token(machine_id: str) -> None:
    """Give a machine a new token; the old one stops working."""
    try:
        token = services().registry.rotate_token(machine_id)
    except (StoreError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"machine_id": machine_id, "token": token}))


@machines_cli.command("remove")
@click.argument("machine_id", callback=_machine_id)
def remove_machine(machine_id: str) -> None:
    """Forget a machine; its payments stay on record."""
    try:
        services().registry.remove(machine_id)
    except (StoreError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"machine_id": machine_id, "removed": True}))


@store_cli.command("init")
def init_store() -> None:
    """Create the store's tables (DynamoDB) or file (SQLite) if missing."""
    store = services().store
    try:
        create = getattr(store, "create_table", None)
        if create is not None:
            create()
        else:
            store.list_machines()  # opening SQLite creates its schema
    except (StoreError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        json.dumps({"store": services().settings.database_url.split(":", 1)[0], "ready": True})
    )


def _window(_ctx: click.Context, _param: click.Parameter, value: str) -> timedelta:
    from arcade.reconcile import parse_window

    try:
        return parse_window(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("reconcile")
@click.option(
    "--since",
    default="72h",
    show_default=True,
    callback=_window,
    help="How far back to look: 30m, 72h, 7d.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@with_appcontext
def reconcile_command(since: timedelta, as_json: bool) -> None:
    """Apply every completed Checkout Session Stripe has that our store lacks."""
    from arcade.reconcile import reconcile

    svc = services()
    try:
        svc.store.get_value("pulse_signing_key")  # a store that cannot be read is said first
        summary = reconcile(svc.ledger, svc.gateway, window=since)
    except (StoreError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(summary.as_dict()) if as_json else summary.line())
    if summary.errors:
        raise SystemExit(1)


@deliveries_cli.command("retry")
def retry_deliveries() -> None:
    """Publish now every grant whose coinpulse is due (as the relay does on its own)."""
    try:
        report = services().relay()
    except (StoreError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from exc
    line = (
        f"deliveries: {report['due']} due, {report['delivered']} delivered,"
        f" {report['failed']} failed"
    )
    if report["refunded"]:
        line += f", {report['refunded']} unconfirmed refunded"
    if report["stopped"]:
        line += f"; stopped early: {report['stopped']}"
    click.echo(line)
    if report["failed"]:
        raise SystemExit(1)


# --- payments, credits and revenue (the operator's JSON API, on the command line) -----------
def _operate(action: Any) -> Any:
    """Run an operator action, turning our own errors into a plain message and exit 1."""
    from arcade.errors import ApiError

    try:
        return action()
    except ApiError as exc:
        raise click.ClickException(exc.message) from exc
    except ArcadeError as exc:
        raise click.ClickException(str(exc)) from exc


def _table(rows: list[list[str]], header: list[str]) -> None:
    """Print rows as aligned columns under a header."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@payments_cli.command("list")
@click.option("--status", help="pending_delivery, delivered, unconfirmed, unattributed, …")
@click.option("--machine", "machine_id", help="Only this machine's payments (removed ones too).")
@click.option("--since", help="From this date or instant (2026-11-01, 2026-11-01T10:00Z).")
@click.option("--until", help="Up to this date (included) or instant (excluded).")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@click.option("--cursor", help="Continue after an earlier page (its next_cursor).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer of GET /payments.")
def list_payments(
    status: str | None,
    machine_id: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List payments newest first, across every machine."""
    from arcade.machines import check_machine_id
    from arcade.operators import instant, money, zone

    def fetch() -> dict[str, Any]:
        if machine_id is not None:
            check_machine_id(machine_id)
        utc = zone(None)
        return services().operators.payments(
            status=status,
            machine_id=machine_id,
            since=instant(since, "since", tz=utc),
            until=instant(until, "until", tz=utc, end=True),
            limit=limit,
            cursor=cursor,
        )

    answer = _operate(fetch)
    if as_json:
        click.echo(json.dumps(answer))
        return
    rows = [
        [
            p["created_at"][:19].replace("T", " "),
            p["id"],
            p["machine_id"] or "-",
            p["status"] + (" (unconfirmed)" if p["unconfirmed"] else ""),
            str(p["credits"]),
            money(p["amount"], p["currency"]),
            money(p["amount_refunded"], p["currency"]) if p["amount_refunded"] else "-",
            p["reason"] or "",
        ]
        for p in answer["payments"]
    ]
    header = ["created (UTC)", "payment", "machine", "status", "credits", "amount"]
    _table(rows, [*header, "refunded", "reason"])
    if answer["next_cursor"]:
        click.echo(f"more: --cursor {answer['next_cursor']}")
    elif not rows:
        click.echo("no payments")


JSON_OPTION = click.option(
    "--json", "as_json", is_flag=True, help="Print the HTTP API's answer as JSON."
)


@payments_cli.command("unmatched")
@JSON_OPTION
def unmatched_refunds(as_json: bool) -> None:
    """List refunds and disputes Stripe reported for payments not on record."""
    answer = _operate(lambda: services().operators.unmatched())
    if as_json:
        click.echo(json.dumps(answer))
        return
    rows = [
        [
            (r["recorded_at"] or "")[:19].replace("T", " "),
            r["payment_intent"],
            str(r["amount_refunded"]),
            "yes" if r["disputed"] else "",
        ]
        for r in answer["refunds"]
    ]
    _table(rows, ["recorded (UTC)", "payment intent", "refunded (smallest unit)", "disputed"])
    if not rows:
        click.echo("no refund or dispute waits for its payment")


@payments_cli.command("resend")
@click.argument("payment_id")
@JSON_OPTION
def resend_payment(payment_id: str, as_json: bool) -> None:
    """Publish a grant's coinpulse again (same paymentId; cabinets drop a copy)."""
    answer = _operate(lambda: services().operators.resend(payment_id))
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo(
        f"{payment_id}: coinpulse sent again and acknowledged by the broker"
        f" (status {answer['status'].replace('_', ' ')})"
    )


@payments_cli.command("refund")
@click.argument("payment_id")
@click.option("--amount", type=click.IntRange(min=1), help="Smallest currency unit; default all.")
@click.option("--idempotency-key", help="Stripe idempotency key (default: derived, see README).")
@JSON_OPTION
def refund_payment(
    payment_id: str, amount: int | None, idempotency_key: str | None, as_json: bool
) -> None:
    """Refund a payment through Stripe; its status follows Stripe's charge.refunded."""
    from arcade.operators import money

    answer = _operate(
        lambda: services().operators.refund(
            payment_id, amount=amount, idempotency_key=idempotency_key
        )
    )
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo(
        f"{payment_id}: Stripe is refunding {money(answer['amount'], answer['currency'])}"
        f" (refund {answer['refund_id']}); the status follows when Stripe confirms"
    )


@credits_cli.command("grant")
@click.argument("machine_id", callback=_machine_id)
@click.argument("credits", type=int)
@click.option("--reason", required=True, help="Why: a jammed coin mechanism, a goodwill game.")
@click.option("--idempotency-key", help="Repeat the command with it and nothing is granted twice.")
@JSON_OPTION
def grant_credits(
    machine_id: str, credits: int, reason: str, idempotency_key: str | None, as_json: bool
) -> None:
    """Give a machine credits by hand, signed and delivered like a paid grant."""
    from arcade.operators import manual_grant_request

    def grant() -> dict[str, Any]:
        count, why = manual_grant_request(credits, reason)
        return services().operators.grant(machine_id, count, why, key=idempotency_key)

    answer = _operate(grant)
    if as_json:
        click.echo(json.dumps(answer))
    else:
        plural = "s" if answer["credits"] != 1 else ""
        click.echo(f"{answer['credits']} credit{plural} for {machine_id} as {answer['id']}")
    if answer["status"] == "pending_delivery":
        click.echo(f"not delivered yet: {_why_undelivered()}", err=True)


def _why_undelivered() -> str:
    """Say why a grant is still owed: the broker setting that stops every publish, when one
    does (no broker acknowledges what is never sent), else that the broker did not answer."""
    settings = services().settings
    stopped = settings.unusable("EMQX_BROKER_URL") or settings.broker_refused
    if stopped:
        return f"{stopped}; the relay delivers it once that is fixed"
    return "the broker did not acknowledge it; the relay delivers it"


# --- pricing plans and machine settings ------------------------------------------------------
def _cli_user() -> str:
    """Return who changes something from the command line, for the record: ``cli (user)``."""
    import getpass

    try:
        return f"cli ({getpass.getuser()})"
    except (KeyError, OSError):
        return "cli"


def _owner(machine_id: str | None) -> str:
    from arcade.pricing import DEFAULT_PLAN

    return machine_id if machine_id is not None else DEFAULT_PLAN


def _optional_machine_id(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    return None if value is None else _machine_id(ctx, param, value)


MACHINE_OPTION = click.option(
    "--machine",
    "machine_id",
    callback=_optional_machine_id,
    help="The machine's own plan (default: the default plan, for machines without one).",
)


@plans_cli.command("show")
@MACHINE_OPTION
@JSON_OPTION
def show_plan(machine_id: str | None, as_json: bool) -> None:
    """Print a plan's current version and its versions."""
    from arcade.operators import money

    shown = _operate(lambda: services().plans.show(_owner(machine_id)))
    if as_json:
        click.echo(json.dumps(shown))
        return
    current = shown["current"]
    if current is None:
        click.echo(f"{shown['owner']}: no plan (the single price and CREDITS_PER_UNIT apply)")
        return
    click.echo(
        f"{shown['owner']} plan version {current['version']}, since {current['created_at']}"
        f" by {current['created_by']}"
    )
    plan = current["plan"]
    _table(
        [
            [b["name"], money(b["unit_amount"], b["currency"]), str(b["credits"]), b["price_id"]]
            for b in plan["bundles"]
        ],
        ["bundle", "price", "credits", "price_id"],
    )
    for bonus in plan["bonuses"]:
        click.echo(f"bonus: {bonus['min_units']}+ units -> +{bonus['credits']} credits")
    for happy in plan["happy_hours"]:
        gives = f"x{happy['factor']}" if "factor" in happy else f"+{happy['extra']}"
        click.echo(f"happy hour: {','.join(happy['days'])} {happy['start']}-{happy['end']} {gives}")


@plans_cli.command("set")
@click.argument("plan_file", type=click.File("rb"))
@MACHINE_OPTION
@JSON_OPTION
def set_plan(plan_file: Any, machine_id: str | None, as_json: bool) -> None:
    """Store PLAN_FILE (JSON; - reads stdin) as the plan's next version.

    {"bundles": [{"name": "5 games", "credits": 6, "amount": 400, "currency": "eur"} or
    {"name": …, "credits": …, "price_id": "price_…"}], "bonuses": [{"min_units": 3,
    "credits": 1}], "happy_hours": [{"days": ["fri"], "start": "17:00", "end": "19:00",
    "factor": 2}]}; amounts in cents.
    """
    from arcade.common.jsontext import NotJson, TooDeep, load_json

    try:
        body = load_json(plan_file.read())
    except TooDeep as exc:
        raise click.ClickException(f"{plan_file.name} is not read: {exc}") from exc
    except NotJson as exc:
        raise click.ClickException(f"{plan_file.name} is not JSON") from exc
    saved = _operate(lambda: services().plans.save(_owner(machine_id), body, by=_cli_user()))
    if as_json:
        click.echo(json.dumps(saved))
        return
    links = saved["links"]
    click.echo(
        f"{saved['owner']} plan version {saved['version']} in force from {saved['created_at']}:"
        f" {len(saved['plan']['bundles'])} bundles; links for {links['machines']} machines,"
        f" {links['made']} made, {links['updated']} updated"
    )
    for problem in links.get("problems", []):
        click.echo(f"link not ready (the player's page makes it later): {problem}", err=True)


@plans_cli.command("history")
@MACHINE_OPTION
def plan_history(machine_id: str | None) -> None:
    """Print who changed the plan (and, for a machine, its settings) and when."""
    owner = _owner(machine_id)
    shown = _operate(lambda: services().plans.show(owner))
    changes = _operate(lambda: services().plans.changes(owner))
    _table(
        [[v["version"], v["created_at"], v["created_by"]] for v in shown["versions"]],
        ["version", "in force from", "by"],
    )
    for change in changes:
        click.echo(f"{change['at']}  {change['by']}  {json.dumps(change['what'])}")


@machines_cli.command("configure")
@click.argument("machine_id", callback=_machine_id)
@click.option("--credits-per-game", type=int, help="Credits one game over uses (1 unless set).")
@click.option("--timezone", help="IANA zone its happy hours are read in, e.g. Europe/Paris.")
def configure_machine(machine_id: str, credits_per_game: int | None, timezone: str | None) -> None:
    """Set a machine's credits per game and time zone (the change is recorded)."""
    answer = _operate(
        lambda: services().plans.configure(
            machine_id, credits_per_game=credits_per_game, timezone=timezone, by=_cli_user()
        )
    )
    click.echo(json.dumps(answer))


@click.command("revenue")
@click.option("--since", help="First day (default: 29 days ago).")
@click.option("--until", help="Last day, included (default: today).")
@click.option(
    "--group", type=click.Choice(["day", "machine", "bundle"]), default="day", show_default=True
)
@click.option("--tz", help="IANA time zone of the days (default UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer of /reports/revenue.")
@with_appcontext
def revenue_command(
    since: str | None, until: str | None, group: str, tz: str | None, as_json: bool
) -> None:
    """Report revenue per day, machine or bundle and currency, net of refunds."""
    from arcade.operators import money

    answer = _operate(
        lambda: services().operators.revenue(since=since, until=until, group=group, tz=tz)
    )
    if as_json:
        click.echo(json.dumps(answer))
        return
    key = {"day": "day", "machine": "machine_id", "bundle": "bundle"}[group]
    rows = [
        [
            r[key],
            money(r["gross"], r["currency"]),
            money(r["refunded"], r["currency"]),
            money(r["net"], r["currency"]),
            str(r["payments"]),
        ]
        + ([str(r["credits"])] if group == "bundle" else [])
        for r in answer["rows"]
    ]
    header = [group, "gross", "refunded", "net", "payments"]
    _table(rows, header + (["credits"] if group == "bundle" else []))
    if not rows:
        click.echo("no revenue in that period")


def register(app: Flask) -> None:
    """Attach the operator commands to ``app``."""
    app.cli.add_command(payments_cli)
    app.cli.add_command(plans_cli)
    app.cli.add_command(credits_cli)
    app.cli.add_command(revenue_command)
    app.cli.add_command(machines_cli)
    app.cli.add_command(store_cli)
    app.cli.add_command(reconcile_command)
    app.cli.add_command(deliveries_cli)
