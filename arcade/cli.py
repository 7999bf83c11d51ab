"""Operator commands: ``flask --app app machines …``, ``store init`` and ``reconcile``."""

from __future__ import annotations

import json
from datetime import timedelta

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from arcade.errors import SettingsError, StoreError
from arcade.machines import describe
from arcade.services import services
from arcade.wire import is_valid_machine_id

machines_cli = AppGroup("machines", help="Register and manage cabinets.")
store_cli = AppGroup("store", help="Prepare the store.")
deliveries_cli = AppGroup("deliveries", help="The delivery relay: grants owed to cabinets.")


def _machine_id(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not is_valid_machine_id(value):
        raise click.BadParameter("use 1 to 64 letters, digits, '_' or '-'")
    return value


@machines_cli.command("add")
@click.argument("machine_id", callback=_machine_id)
@click.option("--name", help="A name an operator recognises.")
@click.option("--price-id", help="The Stripe Price this machine sells (default: STRIPE_PRICE_ID).")
@click.option(
    "--credits-per-unit",
    type=click.IntRange(1, 1000),
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
        _, token = svc.registry.register(
            machine_id, name=name, price_id=price_id, credits_per_unit=credits_per_unit
        )
        public_key = svc.signer.public_key()
    except (StoreError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from exc
    if token_only:
        click.echo(token)
        return
    click.echo(f"Registered {machine_id}. Keep the token: it is not shown again.")
    click.echo(f"The cabinet checks coinpulses with the API's public key {public_key}")
    click.echo(
        json.dumps({"machine_id": machine_id, "token": token, "pulse_public_key": public_key})
    )


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


def register(app: Flask) -> None:
    """Attach the operator commands to ``app``."""
    app.cli.add_command(machines_cli)
    app.cli.add_command(store_cli)
    app.cli.add_command(reconcile_command)
    app.cli.add_command(deliveries_cli)
