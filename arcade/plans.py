"""Operators manage pricing plans and a machine's game settings (SPEC "Pricing plans").

Saving a plan stores its next version (never changing an earlier one: payments are credited by
the version in force when their Checkout Session was created), makes the Stripe Prices it asks
for, and gives each bundle of each machine it prices its Payment Link, with the text that says
what the player gets. Every change is recorded with who made it and when. The CLI, the admin
JSON API and the dashboard all call this module.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from typing import Any

from arcade.clock import iso, utc_now
from arcade.errors import (
    ArcadeError,
    BadRequest,
    PaymentRequestRefused,
    StoreError,
    UnknownMachine,
)
from arcade.links import LinkService
from arcade.logs import log_event
from arcade.payments import StripeGateway
from arcade.pricing import (
    DEFAULT_PLAN,
    Bundle,
    BundleDraft,
    Plan,
    check_reachable,
    offer_text,
    parse_credits_per_game,
    parse_plan,
    parse_timezone,
    plan_of,
)
from arcade.store.base import ChangeRecord, Machine, PaymentLink, PlanVersion, Store, link_key

logger = logging.getLogger(__name__)

# A new version that keeps losing to concurrent saves is given up after this many tries.
SAVE_ATTEMPTS = 10
# Who makes a change, as the record says it.
BY_ADMIN_SESSION = "admin session"
BY_ADMIN_API = "admin api"


def owner_name(owner: str) -> str:
    """Return how a plan's owner is shown: a machine id, or ``default``."""
    return "default" if owner == DEFAULT_PLAN else owner


def describe_version(version: PlanVersion) -> dict[str, Any]:
    """Return a plan version as operators see it (amounts in the currency's smallest unit)."""
    return {
        "owner": owner_name(version.owner),
        "version": version.version,
        "created_at": iso(version.created_at),
        "created_by": version.created_by,
        "plan": Plan.from_json(version.plan).as_dict(),
    }


def describe_change(change: ChangeRecord) -> dict[str, Any]:
    """Return a recorded change as operators see it."""
    return {"at": iso(change.at), "by": change.by, "what": json.loads(change.what)}


class PlanService:
    """Read and change pricing plans and machines' game settings."""

    def __init__(
        self, store: Store, gateway: StripeGateway, links: LinkService, *, max_quantity: int
    ):
        self.store = store
        self.gateway = gateway
        self.links = links
        self.max_quantity = max_quantity

    # --- reading ------------------------------------------------------------------------------
    def show(self, owner: str, *, versions: int = 20) -> dict[str, Any]:
        """Return a plan's current version and its history, newest first. Raises
        UnknownMachine for a machine that is not registered, StoreError."""
        self._owner_exists(owner)
        listed = self.store.list_plan_versions(owner, versions)
        return {
            "owner": owner_name(owner),
            "current": describe_version(listed[0]) if listed else None,
            "versions": [
                {k: v for k, v in describe_version(version).items() if k != "plan"}
                for version in listed
            ],
        }

    def in_force(self, machine: Machine) -> tuple[PlanVersion, Plan] | None:
        """Return the plan version that prices the machine's sales now (its own, else the
        default plan's), or None when it sells at its single price."""
        return plan_of(self.store, machine.machine_id)

    def changes(self, subject: str, limit: int = 50) -> list[dict[str, Any]]:
        """Return the recorded changes of a machine (or ``*``, the default plan), newest
        first."""
        return [describe_change(c) for c in self.store.list_changes(subject, limit)]

    # --- changing -----------------------------------------------------------------------------
    def save(self, owner: str, body: Any, *, by: str) -> dict[str, Any]:
        """Store the plan an operator sent as the owner's next version and give its bundles
        their Payment Links; return the version and what happened to the links.

        Raises BadRequest for a plan that is not valid (each problem named), UnknownMachine,
        PaymentProviderError when Stripe failed while making a Price (nothing is stored then),
        StoreError. Every stored link of each machine the version prices whose price it does
        not sell is switched off at Stripe and retired (``links.retired`` counts them; a
        retired link at a price the version sells again is switched back on). A link Stripe
        failed to make, update or switch off is listed under ``links.problems``: the version
        is stored, the player's page makes a missing link later, and the next save tries
        again to switch off a link that is still on.
        """
        self._owner_exists(owner)
        draft = parse_plan(body, max_quantity=self.max_quantity)
        bundles = [self._priced(bundle, f"bundles[{i}]") for i, bundle in enumerate(draft.bundles)]
        prices = [bundle.price_id for bundle in bundles]
        if len(set(prices)) != len(prices):
            raise BadRequest(
                "two bundles came to the same Stripe Price: each bundle is its own Price",
                code="invalid_plan",
            )
        plan = draft.with_prices(bundles)
        check_reachable(plan, self.max_quantity)
        version = self._store_version(owner, plan, by)
        self._record(owner, by, {"plan_version": version.version})
        log_event(
            logger,
            "plan_saved",
            owner=owner_name(owner),
            version=version.version,
            by=by,
            bundles=len(plan.bundles),
        )
        links = self._sync_links(owner, plan)
        return describe_version(version) | {"links": links}

    def configure(
        self,
        machine_id: str,
        *,
        credits_per_game: Any = None,
        timezone: Any = None,
        by: str,
    ) -> dict[str, Any]:
        """Set a machine's credits per game and time zone (None keeps what it has); return its
        settings. Raises BadRequest, UnknownMachine, StoreError."""
        machine = self._machine(machine_id)
        if credits_per_game is None and timezone is None:
            raise BadRequest(
                "send credits_per_game, timezone or both", code="invalid_machine_settings"
            )
        per_game = (
            parse_credits_per_game(credits_per_game)
            if credits_per_game is not None
            else machine.credits_per_game
        )
        zone = parse_timezone(timezone) if timezone is not None else machine.timezone
        self.store.update_machine(machine_id, credits_per_game=per_game, timezone=zone)
        what = {
            name: {"from": before, "to": after}
            for name, before, after in (
                ("credits_per_game", machine.credits_per_game or 1, per_game or 1),
                ("timezone", machine.timezone or "UTC", zone or "UTC"),
            )
            if before != after
        }
        if what:
            self._record(machine_id, by, what)
            log_event(logger, "machine_configured", machine_id=machine_id, by=by, changed=what)
        if "timezone" in what:
            # The links' text names the zone of their happy hours.
            priced = plan_of(self.store, machine_id)
            if priced is not None:
                self._sync_machine(self._machine(machine_id), priced[1], {})
        return {
            "machine_id": machine_id,
            "credits_per_game": per_game or 1,
            "timezone": zone or "UTC",
        }

    # --- inside -------------------------------------------------------------------------------
    def _owner_exists(self, owner: str) -> None:
        if owner != DEFAULT_PLAN:
            self._machine(owner)

    def _machine(self, machine_id: str) -> Machine:
        machine = self.store.get_machine(machine_id)
        if machine is None:
            raise UnknownMachine(machine_id)
        return machine

    def _priced(self, draft: BundleDraft, where: str) -> Bundle:
        """Return a bundle with its Stripe Price: the one named (checked with Stripe), or one
        made from the amount and currency."""
        if draft.price_id is not None:
            price = self.gateway.find_price(draft.price_id)
            if price is None:
                raise BadRequest(
                    f"{where}.price_id: Stripe has no price {draft.price_id}", code="invalid_plan"
                )
            if not price.active or not price.unit_amount:
                raise BadRequest(
                    f"{where}.price_id: price {draft.price_id} is not an active price with an"
                    " amount per unit",
                    code="invalid_plan",
                )
        else:
            try:
                price = self.gateway.create_price(
                    unit_amount=draft.amount or 0,
                    currency=draft.currency or "usd",
                    product_name=draft.name,
                )
            except PaymentRequestRefused as exc:
                # Stripe is the authority on which currencies and amounts it charges.
                raise BadRequest(
                    f"{where}: Stripe refused a Price of {draft.amount} in"
                    f" {(draft.currency or 'usd').upper()}: check the currency and the amount"
                    " (at least Stripe's minimum charge)",
                    code="invalid_plan",
                ) from exc
        return Bundle(
            name=draft.name,
            price_id=price.price_id,
            credits=draft.credits,
            unit_amount=price.unit_amount or 0,
            currency=price.currency,
        )

    def _store_version(self, owner: str, plan: Plan, by: str) -> PlanVersion:
        """Store the owner's next version; it comes into force now, and never before the
        version it follows (clocks of two instances may differ a little)."""
        for _ in range(SAVE_ATTEMPTS):
            latest = self.store.get_plan_version(owner)
            now = utc_now()
            if latest is not None:
                now = max(now, latest.created_at + timedelta(microseconds=1))
            version = PlanVersion(
                owner=owner,
                version=(latest.version if latest else 0) + 1,
                created_at=now,
                created_by=by,
                plan=plan.to_json(),
            )
            if self.store.put_plan_version(version):
                return version
        raise StoreError("the plan kept changing while it was saved; try again")

    def _record(self, subject: str, by: str, what: dict[str, Any]) -> None:
        self.store.record_change(
            ChangeRecord(
                change_id=uuid.uuid4().hex,
                subject=subject,
                at=utc_now(),
                by=by,
                what=json.dumps(what, sort_keys=True),
            )
        )

    def _sync_links(self, owner: str, plan: Plan) -> dict[str, Any]:
        """Give every bundle of every machine the plan prices its Payment Link, bring the
        text of links made earlier up to date, and retire the links whose price the plan does
        not sell. Failures are listed, not raised."""
        machines = self.store.list_machines() if owner == DEFAULT_PLAN else [self._machine(owner)]
        report: dict[str, Any] = {"machines": 0, "made": 0, "updated": 0}
        for machine in machines:
            # Another save may have come in since this one stored its version: each machine is
            # brought in line with the version in force now, never an older one, so two saves
            # racing end with the links of the newest.
            try:
                priced = plan_of(self.store, machine.machine_id)
            except ArcadeError as exc:
                self._problem(report, machine, None, exc)
                continue
            if owner == DEFAULT_PLAN and priced is not None and priced[0].owner != DEFAULT_PLAN:
                continue  # it sells by a plan of its own, which the default plan does not touch
            report["machines"] += 1
            self._sync_machine(machine, priced[1] if priced else plan, report)
        return report

    def welcome(self, machine: Machine) -> dict[str, Any] | None:
        """Give a machine just registered the Payment Links of the plan in force (the default
        plan's, unless it has its own); return what happened to them as ``save`` does, or None
        when no plan is in force. Failures (the store's too: the machine is registered) are
        listed under ``problems``, never raised; the player's page makes a missing link
        later."""
        try:
            priced = plan_of(self.store, machine.machine_id)
        except ArcadeError as exc:
            return {"machines": 1, "made": 0, "updated": 0, "problems": [str(exc)]}
        if priced is None:
            return None
        report: dict[str, Any] = {"machines": 1, "made": 0, "updated": 0}
        self._sync_machine(machine, priced[1], report)
        return report

    def _sync_machine(self, machine: Machine, plan: Plan, report: dict[str, Any]) -> None:
        """Bring one machine's links in line with ``plan``, the version now in force: each
        stored link at a bundle's price gets that bundle's text (and sells again if it was
        retired), each other one is switched off at Stripe and retired, and each bundle
        without a link of its own gets one. Failures are listed in ``report``."""
        try:
            stored = self.store.list_links(machine.machine_id)
        except ArcadeError as exc:
            self._problem(report, machine, None, exc)
            return
        for link in stored:
            bundle = plan.bundle_for(link.price_id)
            try:
                if bundle is None:
                    if link.retired_at is None and self._retire(machine, link):
                        report["retired"] = report.get("retired", 0) + 1
                else:
                    self._keep_selling(machine, plan, bundle, link)
                    report["updated"] = report.get("updated", 0) + 1
            except ArcadeError as exc:
                self._problem(report, machine, bundle, exc, link)
        have = {link.key for link in stored}
        for bundle in plan.bundles:
            if link_key(machine.machine_id, bundle.price_id, 0) in have:
                continue
            try:
                made = self.links.bundle_link(machine, plan, bundle)
                report["made"] = report.get("made", 0) + 1
                # A newer version that does not sell this price may have come in meanwhile.
                if not self._sold_now(machine, made.price_id) and self._retire(machine, made):
                    report["retired"] = report.get("retired", 0) + 1
            except ArcadeError as exc:
                self._problem(report, machine, bundle, exc)

    def _sold_now(self, machine: Machine, price_id: str) -> bool:
        """Tell whether the version in force for the machine now has a bundle at ``price_id``
        (read afresh: a save racing this one may have stored a newer version). Raises
        StoreError."""
        priced = plan_of(self.store, machine.machine_id)
        return priced is not None and priced[1].bundle_for(price_id) is not None

    def _retire(self, machine: Machine, link: PaymentLink) -> bool:
        """Mark retired a link whose price buys nothing under the plan in force, then switch it
        off at Stripe; return whether it was retired.

        Marked first, so presence (which leaves retired links alone, and looks again after
        switching a link on) cannot switch it back on behind this; checked against the
        version in force once more after marking, so a save that came in meanwhile and sells
        the price again keeps it. Raises PaymentProviderError (the mark is taken back: the next
        save tries again), StoreError.
        """
        self.store.set_link_retired(link, utc_now())
        if self._sold_now(machine, link.price_id):
            self.store.set_link_retired(link, None)
            return False
        try:
            self.gateway.set_link_active(link.link_id, False)
        except ArcadeError:
            self.store.set_link_retired(link, None)
            raise
        log_event(
            logger,
            "payment_link_retired",
            machine_id=machine.machine_id,
            payment_link_id=link.link_id,
            price_id=link.price_id,
            quantity=link.quantity,
        )
        return True

    def _keep_selling(
        self, machine: Machine, plan: Plan, bundle: Bundle, link: PaymentLink
    ) -> None:
        """Give a link at a bundle's price that bundle's text; a retired one sells again, and
        is switched on at Stripe unless presence holds the machine's links off (its next good
        heartbeat switches it on). Raises PaymentProviderError, StoreError.

        A link brought back is unmarked first and the version in force is read again once it
        is on: a newer save that does not sell its price, racing this one, either sees it
        unmarked and retires it, or is seen here and the link is retired again (the mirror of
        ``_retire``).
        """
        text = offer_text(plan, bundle, machine.timezone or "UTC")
        reviving = link.retired_at is not None
        revive = reviving and machine.links_active != 0
        if reviving:
            self.store.set_link_retired(link, None)
        try:
            self.gateway.set_link_text(link.link_id, text, active=True if revive else None)
        except ArcadeError:
            if reviving:
                self.store.set_link_retired(link, link.retired_at)  # as it was
            raise
        if not reviving:
            return
        if not self._sold_now(machine, link.price_id):
            self._retire(machine, link)
            return
        log_event(
            logger,
            "payment_link_restored",
            machine_id=machine.machine_id,
            payment_link_id=link.link_id,
            price_id=link.price_id,
            active=revive,
        )

    @staticmethod
    def _problem(
        report: dict[str, Any],
        machine: Machine,
        bundle: Bundle | None,
        exc: ArcadeError,
        link: PaymentLink | None = None,
    ) -> None:
        """List a link that could not be made, updated or retired, and log it."""
        what = bundle.name if bundle is not None else link.link_id if link is not None else None
        problem = f"{machine.machine_id} {what}: {exc}" if what else f"{machine.machine_id}: {exc}"
        report.setdefault("problems", []).append(problem)
        log_event(
            logger,
            "plan_link_failed",
            level=logging.WARNING,
            machine_id=machine.machine_id,
            price_id=bundle.price_id if bundle is not None else link.price_id if link else None,
            payment_link_id=link.link_id if link is not None else None,
            error=str(exc),
        )
