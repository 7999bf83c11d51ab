"""Pricing plans: bundles, bonus credits and happy hours, and the credits a purchase buys.

A plan is what an operator sells at a machine (or at every machine without a plan of its own,
the default plan): bundles, each a Stripe Price that buys so many credits per unit; bonus rules
(buy at least N units, get M credits more); and happy hours (days of the week and a local
start and end, in the machine's IANA time zone, when credits are multiplied or increased).

Plans are versioned and a version is never changed: a payment is credited by the version in
force when its Checkout Session was created. This module holds the rules (what a plan may
say, what it buys, what the player is told) once; it reads and writes nothing.

Amounts are integers in the currency's smallest unit (cents); times are ``datetime`` values
with a zone.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any

from arcade.clock import zone_named
from arcade.errors import BadRequest
from arcade.wire import CREDITS_PER_GAME_RULE, MAX_CREDITS, is_credits_per_game

if TYPE_CHECKING:
    from arcade.store.base import PlanVersion, Store

# A plan's owner when it is the default plan (never a machine id: '*' is not allowed in one).
DEFAULT_PLAN = "*"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# What one plan may hold: a player's page lists every bundle on one phone screen.
MAX_BUNDLES = 8
MAX_BONUSES = 5
MAX_HAPPY_HOURS = 14
MAX_NAME_LENGTH = 40
MAX_CREDITS_PER_BUNDLE_UNIT = 100
MAX_BONUS_CREDITS = 100
MAX_FACTOR = 10
MAX_EXTRA = 100
# Stripe accepts unit amounts up to 99,999,999 in the smallest unit of most currencies.
MAX_UNIT_AMOUNT = 99_999_999
PRICE_ID = re.compile(r"price_[A-Za-z0-9_]{1,250}")
CURRENCY = re.compile(r"[a-z]{3}")
CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")
# Stripe: a Payment Link's custom_text message is at most 1,200 characters.
MAX_CUSTOM_TEXT = 1200
BUNDLE_FIELDS = {"name", "credits", "price_id", "amount", "currency"}


@dataclass(frozen=True)
class Bundle:
    """What one Stripe Price buys: ``credits`` per unit, at ``unit_amount`` in ``currency``."""

    name: str
    price_id: str
    credits: int
    unit_amount: int
    currency: str


@dataclass(frozen=True)
class Bonus:
    """Buying at least ``min_units`` units in one payment gives ``credits`` more."""

    min_units: int
    credits: int


@dataclass(frozen=True)
class HappyHour:
    """From ``start`` (included) to ``end`` (excluded), local ``HH:MM``, on ``days``: credits
    times ``factor``, or plus ``extra``."""

    days: tuple[str, ...]
    start: str
    end: str
    factor: int | None = None
    extra: int | None = None

    def applies_at(self, local: datetime) -> bool:
        """Return whether a moment, already in the machine's zone, falls in this window."""
        if DAYS[local.weekday()] not in self.days:
            return False
        minute = local.hour * 60 + local.minute
        return _minutes(self.start) <= minute < _minutes(self.end)

    def boost(self, credits: int) -> int:
        """Return ``credits`` as this happy hour makes them."""
        if self.factor is not None:
            return credits * self.factor
        return credits + (self.extra or 0)

    def describe(self) -> str:
        """Return what it gives, for a person: ``credits ×2`` or ``+1 credit``."""
        if self.factor is not None:
            return f"credits ×{self.factor}"
        return f"+{self.extra} credit{'s' if self.extra != 1 else ''}"

    def when(self) -> str:
        """Return when it is, for a person: ``Fri, Sat 17:00–19:00``."""
        days = ", ".join(DAY_NAMES[DAYS.index(day)] for day in self.days)
        return f"{days} {self.start}–{self.end}"


@dataclass(frozen=True)
class Plan:
    """A version of a plan as stored: what it sells and what it gives on top."""

    bundles: tuple[Bundle, ...]
    bonuses: tuple[Bonus, ...] = ()
    happy_hours: tuple[HappyHour, ...] = ()

    def bundle_for(self, price_id: str | None) -> Bundle | None:
        """Return the bundle sold at this Price, or None when the plan does not sell it."""
        return next((b for b in self.bundles if b.price_id == price_id), None)

    def to_json(self) -> str:
        """Return the plan as the store keeps it."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> Plan:
        """Return a plan the store kept (written by ``to_json``)."""
        raw = json.loads(text)
        return Plan(
            bundles=tuple(Bundle(**b) for b in raw["bundles"]),
            bonuses=tuple(Bonus(**b) for b in raw.get("bonuses", [])),
            happy_hours=tuple(
                HappyHour(**(h | {"days": tuple(h["days"])})) for h in raw.get("happy_hours", [])
            ),
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the plan as the admin API shows it (amounts in the smallest unit)."""
        return {
            "bundles": [asdict(b) for b in self.bundles],
            "bonuses": [asdict(b) for b in self.bonuses],
            "happy_hours": [
                {k: v for k, v in asdict(h).items() if v is not None} | {"days": list(h.days)}
                for h in self.happy_hours
            ],
        }


@dataclass(frozen=True)
class Credits:
    """What a purchase buys under a plan, and why: ``base`` from the bundles, ``bonus`` from
    the one bonus rule met, then the one happy hour in force (``happy_hour``)."""

    credits: int
    units: int
    base: int
    bonus: int = 0
    happy_hour: HappyHour | None = None


@dataclass(frozen=True)
class BundleDraft:
    """A bundle as an operator asked for it: an existing Price, or an amount to make one."""

    name: str
    credits: int
    price_id: str | None = None
    amount: int | None = None
    currency: str | None = None


@dataclass(frozen=True)
class PlanDraft:
    """A plan as an operator sent it, checked; its bundles still need their Stripe Prices."""

    bundles: tuple[BundleDraft, ...]
    bonuses: tuple[Bonus, ...]
    happy_hours: tuple[HappyHour, ...]

    def with_prices(self, bundles: list[Bundle]) -> Plan:
        """Return the plan once every bundle has its Price (same order as the drafts)."""
        return Plan(tuple(bundles), self.bonuses, self.happy_hours)


# --- what a purchase buys ---------------------------------------------------------------------
def credits_for(
    plan: Plan, items: list[tuple[str | None, int]], *, at: datetime, zone: tzinfo
) -> Credits:
    """Return the credits ``items`` (price id, units) buy under ``plan`` at the instant ``at``.

    Only items at a Price of one of the plan's bundles count. One bonus (the richest rule met
    by all units bought) and one happy hour (the richest in force at ``at`` in the machine's
    zone) apply, once for the whole payment, never per item: a promotion never applies twice.
    """
    base = units = 0
    for price_id, quantity in items:
        bundle = plan.bundle_for(price_id)
        if bundle is not None and quantity > 0:
            base += quantity * bundle.credits
            units += quantity
    if units == 0:
        return Credits(0, 0, 0)
    bonus = max((b.credits for b in plan.bonuses if units >= b.min_units), default=0)
    credits = base + bonus
    happy = happy_hour_at(plan, at, zone, credits)
    return Credits(happy.boost(credits) if happy else credits, units, base, bonus, happy)


def happy_hour_at(plan: Plan, at: datetime, zone: tzinfo, credits: int = 1) -> HappyHour | None:
    """Return the happy hour in force at ``at`` in ``zone`` (the richest for ``credits`` when
    windows overlap), or None."""
    local = at.astimezone(zone)
    found = [h for h in plan.happy_hours if h.applies_at(local)]
    return max(found, key=lambda h: h.boost(credits), default=None)


def most_credits(plan: Plan, max_quantity: int) -> int:
    """Return the most credits one payment of one bundle can buy under ``plan``."""
    top = max(b.credits for b in plan.bundles) * max_quantity
    top += max((b.credits for b in plan.bonuses), default=0)
    return max([top, *(h.boost(top) for h in plan.happy_hours)])


# --- what the player is told ------------------------------------------------------------------
def offer_text(plan: Plan, bundle: Bundle, zone_name: str) -> str:
    """Return what a bundle's Payment Link says the player gets (its ``custom_text``)."""
    closing = "Credits go to the machine as soon as the payment succeeds."
    more = "More happy hours are listed on the machine's page."
    parts = [f"{bundle.name}: {_credits(bundle.credits)} for each one you buy."]
    for bonus in sorted(plan.bonuses, key=lambda b: b.min_units):
        parts.append(f"Buy {bonus.min_units} or more: +{_credits(bonus.credits)}.")
    for happy in plan.happy_hours:
        sentence = f"Happy hour {happy.when()} ({zone_name}): {happy.describe()}."
        # Whole sentences only: Stripe takes at most MAX_CUSTOM_TEXT characters.
        if len(" ".join([*parts, sentence, more, closing])) > MAX_CUSTOM_TEXT:
            parts.append(more)
            break
        parts.append(sentence)
    return " ".join([*parts, closing])


def _credits(count: int) -> str:
    return f"{count} credit{'s' if count != 1 else ''}"


# --- reading what operators send -------------------------------------------------------------
def parse_plan(body: Any, *, max_quantity: int) -> PlanDraft:
    """Return the plan an operator sent, checked; raise BadRequest naming what is wrong.

    ``{"bundles": [{"name", "credits", "price_id"} or {"name", "credits", "amount",
    "currency"}], "bonuses"?: [{"min_units", "credits"}], "happy_hours"?: [{"days", "start",
    "end", "factor" or "extra"}]}``; amounts in the currency's smallest unit (cents).
    """
    if not isinstance(body, dict):
        raise _bad("the plan must be a JSON object with bundles, bonuses and happy_hours")
    unknown = set(body) - {"bundles", "bonuses", "happy_hours"}
    if unknown:
        raise _bad(f"the plan has no field {sorted(unknown)[0]!r}")
    raw_bundles = body.get("bundles")
    if not isinstance(raw_bundles, list) or not 1 <= len(raw_bundles) <= MAX_BUNDLES:
        raise _bad(f"bundles must be a list of 1 to {MAX_BUNDLES} bundles")
    bundles = tuple(_bundle(raw, f"bundles[{i}]") for i, raw in enumerate(raw_bundles))
    names = [b.name.casefold() for b in bundles]
    if len(set(names)) != len(names):
        raise _bad("two bundles have the same name")
    prices = [b.price_id for b in bundles if b.price_id]
    if len(set(prices)) != len(prices):
        raise _bad("two bundles have the same price_id: each bundle is its own Price")
    bonuses = tuple(
        _bonus(raw, f"bonuses[{i}]", max_quantity)
        for i, raw in enumerate(_list(body, "bonuses", MAX_BONUSES))
    )
    if len({b.min_units for b in bonuses}) != len(bonuses):
        raise _bad("two bonuses have the same min_units")
    # Only the richest rule met applies: a rule for more units giving less would never apply,
    # and the player's page would promise what a purchase does not give.
    ordered = sorted(bonuses, key=lambda b: b.min_units)
    for fewer, more in zip(ordered, ordered[1:], strict=False):
        if more.credits <= fewer.credits:
            raise _bad(
                f"the bonus for {more.min_units} units (+{more.credits}) must give more credits"
                f" than the one for {fewer.min_units} units (+{fewer.credits})"
            )
    happy_hours = tuple(
        _happy_hour(raw, f"happy_hours[{i}]")
        for i, raw in enumerate(_list(body, "happy_hours", MAX_HAPPY_HOURS))
    )
    return PlanDraft(bundles, bonuses, happy_hours)


def check_reachable(plan: Plan, max_quantity: int) -> None:
    """Raise BadRequest when one payment under ``plan`` could buy more credits than a
    coinpulse may carry (``arcade.wire.MAX_CREDITS``)."""
    if most_credits(plan, max_quantity) > MAX_CREDITS:
        raise _bad(
            f"this plan could give more than {MAX_CREDITS} credits in one payment"
            f" ({max_quantity} units of its richest bundle, with bonus and happy hour):"
            " give fewer credits"
        )


def parse_credits_per_game(value: Any) -> int:
    """Return a machine's credits per game (1..MAX_CREDITS_PER_GAME); raise BadRequest."""
    if not is_credits_per_game(value):
        raise BadRequest(CREDITS_PER_GAME_RULE, code="invalid_credits_per_game")
    return value


def parse_timezone(value: Any) -> str:
    """Return an IANA time zone name a machine may use (``arcade.clock.zone_named``); raise
    BadRequest."""
    if zone_named(value) is not None:
        return value
    shown = repr(value)[:66]
    raise BadRequest(
        f"timezone must be an IANA time zone such as Europe/Paris, not {shown}",
        code="invalid_timezone",
    )


def machine_zone(name: str | None) -> tzinfo:
    """Return a machine's time zone (UTC when it has none, or one no longer known)."""
    return zone_named(name) or UTC


def _bundle(raw: Any, where: str) -> BundleDraft:
    if not isinstance(raw, dict):
        raise _bad(f"{where} must be an object with name, credits and a price")
    unknown = set(raw) - BUNDLE_FIELDS
    if unknown:
        raise _bad(f"{where} has no field {sorted(unknown)[0]!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise _bad(f"{where}.name must be 1 to {MAX_NAME_LENGTH} characters")
    if not name.isprintable():
        raise _bad(f"{where}.name must be printable text")
    credits = _number(raw.get("credits"), f"{where}.credits", 1, MAX_CREDITS_PER_BUNDLE_UNIT)
    price_id = raw.get("price_id")
    amount, currency = raw.get("amount"), raw.get("currency")
    if price_id is not None:
        if amount is not None or currency is not None:
            raise _bad(f"{where} gives price_id or amount and currency, not both")
        if not isinstance(price_id, str) or not PRICE_ID.fullmatch(price_id):
            raise _bad(f"{where}.price_id must be a Stripe price id (price_…)")
        return BundleDraft(name.strip(), credits, price_id=price_id)
    if amount is None or currency is None:
        raise _bad(f"{where} needs a price_id, or an amount (in cents) and a currency")
    amount = _number(amount, f"{where}.amount", 1, MAX_UNIT_AMOUNT)
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency.lower()):
        raise _bad(f"{where}.currency must be a three-letter currency code such as eur")
    return BundleDraft(name.strip(), credits, amount=amount, currency=currency.lower())


def _bonus(raw: Any, where: str, max_quantity: int) -> Bonus:
    if not isinstance(raw, dict) or set(raw) != {"min_units", "credits"}:
        raise _bad(f"{where} must be an object with min_units and credits")
    return Bonus(
        min_units=_number(raw["min_units"], f"{where}.min_units", 1, max_quantity),
        credits=_number(raw["credits"], f"{where}.credits", 1, MAX_BONUS_CREDITS),
    )


def _happy_hour(raw: Any, where: str) -> HappyHour:
    if not isinstance(raw, dict):
        raise _bad(f"{where} must be an object with days, start, end and factor or extra")
    unknown = set(raw) - {"days", "start", "end", "factor", "extra"}
    if unknown:
        raise _bad(f"{where} has no field {sorted(unknown)[0]!r}")
    days = raw.get("days")
    if (
        not isinstance(days, list)
        or not days
        or not all(isinstance(d, str) and d.lower() in DAYS for d in days)
    ):
        raise _bad(f"{where}.days must be a list of days: {', '.join(DAYS)}")
    chosen = tuple(d for d in DAYS if d in {d.lower() for d in days})
    start, end = raw.get("start"), raw.get("end")
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, str) or not CLOCK.fullmatch(value):
            raise _bad(f"{where}.{name} must be a local time HH:MM (00:00 to 24:00)")
    if _minutes(start) >= _minutes(end):
        raise _bad(
            f"{where} must end after it starts on the same day"
            " (a window past midnight is two windows: until 24:00, then from 00:00)"
        )
    factor, extra = raw.get("factor"), raw.get("extra")
    if (factor is None) == (extra is None):
        raise _bad(f"{where} gives a factor (credits ×) or an extra (credits +), one of them")
    if factor is not None:
        factor = _number(factor, f"{where}.factor", 2, MAX_FACTOR)
        return HappyHour(chosen, start, end, factor=factor)
    return HappyHour(chosen, start, end, extra=_number(extra, f"{where}.extra", 1, MAX_EXTRA))


def _list(body: dict[str, Any], name: str, most: int) -> list[Any]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > most:
        raise _bad(f"{name} must be a list of at most {most}")
    return value


def _number(value: Any, name: str, low: int, high: int) -> int:
    if not _whole(value) or not low <= value <= high:
        raise _bad(f"{name} must be a whole number from {low} to {high}")
    return value


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_plan")


def plan_of(
    store: Store, machine_id: str, at: datetime | None = None
) -> tuple[PlanVersion, Plan] | None:
    """Return the plan version that prices a machine's sales at ``at`` (an aware datetime;
    None: now): its own plan's, else the default plan's, or None when neither
    existed then, and the single-price rules apply. Raises StoreError."""
    for owner in (machine_id, DEFAULT_PLAN):
        version = store.get_plan_version(owner, at)
        if version is not None:
            return version, Plan.from_json(version.plan)
    return None
