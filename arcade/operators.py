"""What operators see and do with the money: payments, revenue, resend, refund, manual grants,
and whether every dependency answers (SPEC "Operators (admin key)").

The HTTP routes, the CLI and the ``/admin`` pages all call this module, so each reads the same
way whichever door an operator uses. The rules about money stay in ``arcade.ledger``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from arcade import wire
from arcade.clock import iso, iso_or_none, parse_iso, utc_now, zone_named
from arcade.errors import (
    BadRequest,
    BrokerUnavailable,
    Conflict,
    PaymentProviderError,
    SettingsError,
    StoreError,
    UnknownPayment,
)
from arcade.ledger import Ledger, describe_payment
from arcade.logs import log_event
from arcade.payment_states import DELIVERED, STATUSES
from arcade.store.base import Payment, PaymentQuery, Store
from arcade.text import one_line

logger = logging.getLogger(__name__)

# ``GET /payments?status=unconfirmed``: delivered, not confirmed within CONFIRM_WITHIN_SECONDS.
UNCONFIRMED = "unconfirmed"
LISTED_STATUSES = (*STATUSES, UNCONFIRMED)
MAX_PAGE = 200
DEFAULT_PAGE = 50
# A revenue report covers at most this many days (one query over the journal).
MAX_REPORT_DAYS = 400
DEFAULT_REPORT_DAYS = 30
# The Stripe part of the readiness check is remembered this long (one call a minute at most).
STRIPE_CHECK_SECONDS = 60
MAX_MANUAL_CREDITS = wire.MAX_CREDITS  # what a cabinet accepts in one coinpulse
MAX_REASON_LENGTH = 200
# How the revenue report names sales made without a pricing plan (the single price).
NO_BUNDLE = "(single price)"


# Stripe's zero-decimal currencies: their amounts are already whole units (Stripe "Currencies").
ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    | {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
# Stripe's three-decimal currencies: 1000 is one dinar (Stripe "Currencies").
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def decimals(currency: str) -> int:
    """Return how many digits of an amount in ``currency``'s smallest unit follow the point."""
    code = currency.lower()
    return 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2


def money(amount: int, currency: str) -> str:
    """Return an amount in the currency's smallest unit as a person reads it: ``1.50 USD``."""
    return f"{major(amount, currency)} {currency.upper()}"


def major(amount: int, currency: str) -> str:
    """Return an amount in the currency's smallest unit in whole units: ``1.50`` (``150`` for
    a zero-decimal currency such as JPY, ``1.500`` for a three-decimal one such as BHD)."""
    places = decimals(currency)
    if places == 0:
        return str(amount)
    sign = "-" if amount < 0 else ""
    unit = 10**places
    return f"{sign}{abs(amount) // unit}.{abs(amount) % unit:0{places}d}"


def from_major(text: str, currency: str) -> int | None:
    """Return what a person typed (``1.5``, ``1,50``, ``2``) in the currency's smallest unit,
    or None when it is not an amount with at most the currency's decimals."""
    text = text.strip().replace(",", ".")
    places = decimals(currency)
    pattern = r"[0-9]{1,9}" if places == 0 else rf"[0-9]{{1,9}}(\.[0-9]{{1,{places}}})?"
    if not re.fullmatch(pattern, text):
        return None
    whole, _, fraction = text.partition(".")
    return int(whole) * 10**places + (int(fraction.ljust(places, "0")) if places else 0)


# --- reading what operators send ---------------------------------------------------------------
def zone(name: str | None) -> tzinfo:
    """Return the IANA time zone ``name`` (None or empty: UTC; ``arcade.clock.zone_named``);
    raise BadRequest for any other text."""
    found = zone_named(name or "UTC")
    if found is None:
        raise BadRequest(
            f"tz must be an IANA time zone such as Europe/Paris, not {str(name)[:64]!r}",
            code="invalid_tz",
        )
    return found


def instant(value: str | None, name: str, *, tz: tzinfo, end: bool = False) -> datetime | None:
    """Return an ISO 8601 instant or date as an aware UTC datetime, or None when absent.

    A date is the start of that day in ``tz``, or with ``end`` the start of the next day, so
    ``until=2026-11-29`` takes in all of the 29th. An instant without an offset is read in
    ``tz``. Raises BadRequest naming the parameter.
    """
    if value is None or value == "":
        return None
    return _instant(value, name, tz=tz, end=end)


def _instant(value: str, name: str, *, tz: tzinfo, end: bool) -> datetime:
    """Return what ``instant`` does for a value that is there."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if end:
                day += timedelta(days=1)
            moment = datetime(day.year, day.month, day.day, tzinfo=tz)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=tz)
        # In UTC the first or last day of the calendar may fall outside it.
        year = moment.astimezone(UTC).year
    except (ValueError, OverflowError) as exc:
        raise BadRequest(
            f"{name} must be an ISO 8601 date (2026-11-29) or instant (2026-11-29T10:00:00Z)",
            code=f"invalid_{name}",
        ) from exc
    # Money older than 1970 or past 9998 is a typing mistake.
    if not 1970 <= year <= 9998:
        raise BadRequest(f"{name} must be between 1970 and 9998", code=f"invalid_{name}")
    return moment.astimezone(UTC)


def check_payment_id(payment_id: Any) -> str:
    """Return ``payment_id`` when it can be one (``wire.PAYMENT_ID_PATTERN``: 1 to 255
    printable ASCII characters); raise BadRequest ``invalid_payment_id``. Decided here for the
    JSON API, the /admin forms and the CLI alike: a made-up id is never looked up, nor
    repeated back at any length."""
    if not isinstance(payment_id, str) or not wire.PAYMENT_ID_PATTERN.fullmatch(payment_id):
        raise BadRequest("that is not a payment id", code="invalid_payment_id")
    return payment_id


def page_size(value: Any) -> int:
    """Return a page size from a query parameter (1..MAX_PAGE); raise BadRequest."""
    if value is None or value == "":
        return DEFAULT_PAGE
    limit = whole_number(str(value))
    if limit is None or not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE}", code="invalid_limit")
    return limit


def whole_number(text: str) -> int | None:
    """Return ``text`` as a whole number when it is 1 to 12 ASCII digits, else None (``"²"``
    and ``"٣"`` are digits to ``str.isdigit`` but not to a person typing an amount)."""
    return int(text) if re.fullmatch(r"[0-9]{1,12}", text) else None


def encode_cursor(payment: Payment) -> str:
    """Return the opaque cursor that continues a listing after ``payment`` (its created_at as
    ``iso`` text and its id, so cursors handed out before keep working)."""
    raw = json.dumps([iso(payment.created_at), payment.payment_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(value: str | None) -> tuple[datetime, str] | None:
    """Return the ``(created_at, payment_id)`` a cursor holds; raise BadRequest."""
    if value is None or value == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        created_at, payment_id = json.loads(raw)
        if not isinstance(created_at, str) or not isinstance(payment_id, str):
            raise ValueError("not a pair of strings")
        after = parse_iso(created_at)
    except (ValueError, TypeError, RecursionError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest(
            "cursor must be a next_cursor from an earlier answer", code="invalid_cursor"
        ) from exc
    return after, payment_id


def manual_grant_request(credits: Any, reason: Any) -> tuple[int, str]:
    """Return the credits (1..1000) and reason (1..200 characters) of a manual grant."""
    if (
        isinstance(credits, bool)
        or not isinstance(credits, int)
        or not 1 <= credits <= MAX_MANUAL_CREDITS
    ):
        raise BadRequest(
            f"credits must be a whole number from 1 to {MAX_MANUAL_CREDITS}",
            code="invalid_credits",
        )
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest(
            "reason must say why the credits are given (a jammed coin mechanism, …)",
            code="invalid_reason",
        )
    line = one_line(reason, MAX_REASON_LENGTH)
    if line is None:
        raise BadRequest(
            f"reason must be at most {MAX_REASON_LENGTH} printable characters",
            code="invalid_reason",
        )
    return credits, line


@dataclass(frozen=True)
class Check:
    """One part of ``GET /status/ready``: ``ok``, or a sentence saying what is wrong."""

    name: str
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class Operators:
    """The operator's view of the money, over the store, the ledger and Stripe."""

    def __init__(self, services: Any):
        """``services`` is the app's ``arcade.services.Services``."""
        self.svc = services
        self._stripe_check: tuple[float, str | None] | None = None
        self._stripe_lock = threading.Lock()

    @property
    def store(self) -> Store:
        return self.svc.store

    @property
    def ledger(self) -> Ledger:
        return self.svc.ledger

    # --- payments ---------------------------------------------------------------------------
    def payments(
        self,
        *,
        status: str | None = None,
        machine_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Return ``{"payments": [...], "next_cursor": str | None}``, newest first.

        ``since`` and ``until`` are aware datetimes (``instant``); ``status`` one of
        ``LISTED_STATUSES``. Raises BadRequest for an unknown status or cursor, StoreError.
        """
        if status is not None and status not in LISTED_STATUSES:
            raise BadRequest(
                f"status must be one of {', '.join(LISTED_STATUSES)}", code="invalid_status"
            )
        delivered_before = None
        if status == UNCONFIRMED:
            status = DELIVERED
            delivered_before = utc_now() - timedelta(
                seconds=self.svc.settings.confirm_within_seconds
            )
        found, more = self.store.query_payments(
            PaymentQuery(
                status=status,
                machine_id=machine_id,
                since=since,
                until=until,
                delivered_before=delivered_before,
                after=decode_cursor(cursor),
                limit=limit,
            )
        )
        return {
            "payments": [self.describe(p) for p in found],
            "next_cursor": encode_cursor(found[-1]) if more and found else None,
        }

    def describe(self, payment: Payment) -> dict[str, Any]:
        """Return a payment as ``GET /payments`` lists it."""
        shown = describe_payment(payment)
        return {
            **shown,
            "machine_id": payment.machine_id,
            "reason": shown.get("reason"),
            "unconfirmed": self.ledger.is_unconfirmed(payment),
            "delivered_at": iso_or_none(payment.delivered_at),
            "credited_at": iso_or_none(payment.credited_at),
        }

    def payment(self, payment_id: str) -> Payment:
        """Return a stored payment; raise BadRequest (not an id), UnknownPayment."""
        payment = self.store.get_payment(check_payment_id(payment_id))
        if payment is None:
            raise UnknownPayment(payment_id)
        return payment

    def unmatched(self, limit: int = DEFAULT_PAGE) -> dict[str, Any]:
        """Return ``{"refunds": [{"payment_intent", "amount_refunded", "disputed",
        "recorded_at"}]}``: refunds and disputes Stripe reported for a payment not on record
        (kept by PaymentIntent until its Checkout Session comes), newest first. Raises
        StoreError."""
        return {
            "refunds": [
                {
                    "payment_intent": intent.payment_intent,
                    "amount_refunded": intent.amount_refunded,
                    "disputed": intent.disputed_at is not None,
                    "recorded_at": iso_or_none(intent.updated_at),
                }
                for intent in self.store.list_unmatched_intents(limit)
            ]
        }

    # --- revenue ----------------------------------------------------------------------------
    def revenue(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        group: str = "day",
        tz: str | None = None,
    ) -> dict[str, Any]:
        """Return ``{"rows": [{"day"|"machine_id", "currency", "gross", "refunded", "net",
        "payments"}], ...}`` in the currency's smallest unit.

        ``since``/``until`` are what the operator typed (dates or instants, read in ``tz``);
        by default the last 30 days including today. A sale counts on the day its Checkout
        Session was created, a refund on the day it was recorded. Raises BadRequest, StoreError.
        """
        if group not in ("day", "machine", "bundle"):
            raise BadRequest("group must be day, machine or bundle", code="invalid_group")
        where = zone(tz)
        today = utc_now().astimezone(where).date()
        first_day = today - timedelta(days=DEFAULT_REPORT_DAYS - 1)
        start = _instant(since or first_day.isoformat(), "since", tz=where, end=False)
        end = _instant(until or today.isoformat(), "until", tz=where, end=True)
        if end <= start:
            raise BadRequest("until must be after since", code="invalid_until")
        if end - start > timedelta(days=MAX_REPORT_DAYS):
            raise BadRequest(
                f"a report covers at most {MAX_REPORT_DAYS} days", code="invalid_since"
            )
        totals: dict[tuple[str, str], dict[str, Any]] = defaultdict(
            lambda: {"gross": 0, "refunded": 0, "sales": set(), "credits": 0}
        )
        for entry in self.store.list_revenue(start, end):
            if group == "day":
                label = entry.at.astimezone(where).date().isoformat()
            elif group == "bundle":
                label = entry.bundle or NO_BUNDLE
            else:
                label = entry.machine_id
            row = totals[(label, entry.currency)]
            row["gross"] += entry.gross
            row["refunded"] += entry.refunded
            row["credits"] += entry.credits
            if entry.gross > 0:
                row["sales"].add(entry.payment_id)
        key = {"day": "day", "machine": "machine_id", "bundle": "bundle"}[group]
        rows = [
            {
                key: label,
                "currency": currency,
                "gross": row["gross"],
                "refunded": row["refunded"],
                "net": row["gross"] - row["refunded"],
                "payments": len(row["sales"]),
            }
            # Per bundle, the credits its sales bought: the plays it sold.
            | ({"credits": row["credits"]} if group == "bundle" else {})
            for (label, currency), row in sorted(totals.items())
        ]
        return {
            "since": iso(start),
            "until": iso(end),
            "group": group,
            "tz": getattr(where, "key", "UTC"),
            "rows": rows,
        }

    # --- acting on payments -----------------------------------------------------------------
    def resend(self, payment_id: str) -> dict[str, Any]:
        """Publish a grant's coinpulse again; return ``{"payment_id", "result", "status"}``.

        Raises BadRequest (not a payment id), UnknownPayment, Conflict, BrokerUnavailable,
        PublishRefused, SettingsError, StoreError (``Ledger.resend``).
        """
        outcome = self.ledger.resend(check_payment_id(payment_id))
        payment = self.payment(payment_id)
        return {"payment_id": payment_id, "result": outcome.result, "status": payment.status}

    def refund(
        self, payment_id: str, *, amount: Any = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Ask Stripe to refund a payment (all that is left, or ``amount``).

        The idempotency key is the caller's, else ``refund-<id>-<refunded so far>-<amount>``:
        a request repeated before Stripe's ``charge.refunded`` arrives refunds once. The
        payment's status follows that event. Raises UnknownPayment, BadRequest, Conflict,
        PaymentProviderError, StoreError.
        """
        payment = self.payment(payment_id)
        if not payment.payment_intent:
            raise Conflict(
                f"payment {payment_id} took no money through Stripe: nothing to refund",
                code="nothing_to_refund",
            )
        left = payment.amount - payment.amount_refunded
        if left <= 0:
            raise Conflict(
                f"payment {payment_id} is already refunded in full", code="nothing_to_refund"
            )
        if amount is None:
            amount = left
        if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= left:
            raise BadRequest(
                f"amount must be a whole number from 1 to {left} (smallest currency unit)",
                code="invalid_amount",
            )
        key = idempotency_key or f"refund-{payment_id}-{payment.amount_refunded}-{amount}"
        refund_id = self.svc.gateway.refund(
            payment.payment_intent, idempotency_key=key, amount=amount
        )
        log_event(
            logger,
            "refund_requested",
            payment_id=payment_id,
            machine_id=payment.machine_id,
            refund_id=refund_id,
            amount=amount,
            currency=payment.currency,
        )
        return {
            "payment_id": payment_id,
            "refund_id": refund_id,
            "amount": amount,
            "currency": payment.currency,
            "status": payment.status,
            "message": "Stripe is refunding; the status follows its charge.refunded event",
        }

    def grant(
        self, machine_id: str, credits: int, reason: str, *, key: str | None = None
    ) -> dict[str, Any]:
        """Grant credits by hand; return the payment as listed, with ``delivered``.

        Raises NotFound for an unknown machine, Conflict, StoreError.
        """
        self.svc.registry.get(machine_id)
        payment, outcome = self.ledger.grant_manually(machine_id, credits, reason, key=key)
        return {**self.describe(payment), "result": outcome.result}

    # --- readiness --------------------------------------------------------------------------
    def readiness(self) -> list[Check]:
        """Check each dependency for real: a probe published and PUBACKed, a store write and
        read, Stripe's key and default price (one call, remembered 60 s); and, only when there
        are any, the settings that stop some other part (a malformed one, no webhook secret)."""
        checks = [self._check_broker(), self._check_store(), self._check_stripe()]
        settings = self._check_settings(checks)
        return checks if settings.ok else [*checks, settings]

    def _check_settings(self, checks: list[Check]) -> Check:
        """Return the settings problems that none of ``checks`` names already (the broker
        check names a refused or malformed broker, the Stripe check a refused key or base)."""
        settings = self.svc.settings
        said = [check.problem for check in checks if check.problem]
        found = [p for p in settings.problems if not any(p in problem for problem in said)]
        webhooks = settings.unusable("STRIPE_WEBHOOK_SECRET")
        if webhooks and webhooks not in found:
            found.append(webhooks)
        return Check("settings", "; ".join(found) or None)

    def _check_broker(self) -> Check:
        settings = self.svc.settings
        topic = f"{settings.topic_prefix}/_probe"
        try:
            self.svc.publisher.publish(
                topic, {"probe": iso(utc_now())}, log_ids={"source": "readiness"}
            )
        except (BrokerUnavailable, SettingsError) as exc:
            return Check("broker", str(exc))
        return Check("broker")

    def _check_store(self) -> Check:
        nonce = secrets.token_hex(8)
        try:
            self.store.put_value("readiness_probe", nonce)
            if self.store.get_value("readiness_probe") != nonce:
                return Check("store", "the store did not give back what was written")
        except StoreError as exc:
            return Check("store", str(exc))
        return Check("store")

    def _check_stripe(self) -> Check:
        with self._stripe_lock:
            now = time.monotonic()
            if self._stripe_check is None or now - self._stripe_check[0] >= STRIPE_CHECK_SECONDS:
                self._stripe_check = (now, self._stripe_problem())
            return Check("stripe", self._stripe_check[1])

    def _stripe_problem(self) -> str | None:
        settings = self.svc.settings
        unusable = settings.unusable("STRIPE_API_KEY", "STRIPE_PRICE_ID")
        if unusable:
            return unusable
        try:
            price = self.svc.gateway.retrieve_price(settings.stripe_price_id, retries=0)
        except PaymentProviderError as exc:
            return f"STRIPE_PRICE_ID {settings.stripe_price_id}: {exc}"
        except SettingsError as exc:
            return str(exc)
        if not price.active:
            return f"STRIPE_PRICE_ID {settings.stripe_price_id} is archived in Stripe"
        if price.unit_amount is None:
            return f"STRIPE_PRICE_ID {settings.stripe_price_id} has no fixed unit amount"
        return None
