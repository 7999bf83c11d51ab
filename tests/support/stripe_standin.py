"""A loopback HTTP server that answers like Stripe's API, and builders for webhook payloads.

The application talks to it with the real ``stripe`` library::

    stripe.StripeClient(standin.api_key, base_addresses={"api": standin.url})

It knows prices, payment links (with idempotency keys) and Checkout Sessions with their line
items (retrieved one by one, or listed with Stripe's filters and paging), answers errors in
Stripe's shape, records every request, and can be told to fail, drop connections or answer
slowly, on every request or only on some. Request bodies are form-encoded exactly as
stripe-python sends them; ``RecordedRequest.params`` holds them decoded into nested dicts and
lists with the values left as the strings that went over the wire ("true", "2").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import operator
import re
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

from tests.support.http_server import LoopbackServer

API_KEY = "sk_test_standin"
API_VERSION = stripe.api_version
_ALPHABET = string.ascii_letters + string.digits


def _random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _now() -> int:
    return int(time.time())


# --- form decoding ---------------------------------------------------------------------------

_KEY_PART = re.compile(r"\[([^\]]*)\]")


def _listify(value: Any) -> Any:
    """Turn dicts whose keys are all indexes ("0", "1", ...) into lists, recursively."""
    if not isinstance(value, dict):
        return value
    converted = {key: _listify(item) for key, item in value.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def decode_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Decode Stripe-style form pairs (``a[b][0][c]=v``) into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head] + (_KEY_PART.findall("[" + rest) if rest else [])
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        last = parts[-1]
        if last == "":  # "expand[]=x" style: append
            last = str(len(node))
        node[last] = value
    return _listify(root)


# --- errors ---------------------------------------------------------------------------------


class StripeError(Exception):
    """An error answer in Stripe's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self, request_id: str) -> dict[str, Any]:
        """Return the JSON body Stripe sends for this error."""
        error: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            error["param"] = self.param
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}?t={_now()}"
        return {"error": error}


def _missing(param: str) -> StripeError:
    return StripeError(
        400, f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def _invalid(param: str, message: str, code: str = "parameter_invalid_integer") -> StripeError:
    return StripeError(400, message, code=code, param=param)


def _no_such(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def _positive_int(value: Any, param: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _invalid(param, f"Invalid integer: {value}") from None
    if number < minimum or (maximum is not None and number > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise _invalid(
            param, f"This value must be at least {minimum}{upper}.", code="parameter_invalid"
        )
    return number


def _boolean(value: Any, param: str) -> bool:
    if value in ("true", True):
        return True
    if value in ("false", False):
        return False
    raise _invalid(param, f"Invalid boolean: {value}", code="parameter_invalid")


# --- object builders ------------------------------------------------------------------------


def price(
    *,
    id: str | None = None,
    unit_amount: int,
    currency: str = "usd",
    product: str | None = None,
    active: bool = True,
    nickname: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return a one-time Price shaped like Stripe's."""
    return {
        "id": id or _random_id("price_"),
        "object": "price",
        "active": active,
        "billing_scheme": "per_unit",
        "created": _now(),
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": None,
        "metadata": dict(metadata or {}),
        "nickname": nickname,
        "product": product or _random_id("prod_", 14),
        "recurring": None,
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
    }


def line_item(
    price_object: Mapping[str, Any],
    quantity: int,
    *,
    discount: int = 0,
    description: str = "Arcade credits",
) -> dict[str, Any]:
    """Return a Checkout line item (``item``) for quantity units of price_object."""
    subtotal = int(price_object["unit_amount"]) * quantity
    return {
        "id": _random_id("li_"),
        "object": "item",
        "adjustable_quantity": None,
        "amount_discount": discount,
        "amount_subtotal": subtotal,
        "amount_tax": 0,
        "amount_total": subtotal - discount,
        "currency": price_object["currency"],
        "description": description,
        "metadata": {},
        "price": dict(price_object),
        "quantity": quantity,
    }


CHECKOUT_MODES = ("payment", "setup", "subscription")


def checkout_session(
    *,
    id: str | None = None,
    payment_link: str | None = None,
    client_reference_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    amount_subtotal: int,
    amount_total: int | None = None,
    currency: str = "usd",
    payment_status: str = "paid",
    status: str = "complete",
    payment_intent: str | None = None,
    discount: int = 0,
    created: int | None = None,
    mode: str = "payment",
    livemode: bool = False,
) -> dict[str, Any]:
    """Return a ``checkout.session`` as a webhook carries it (no line items: Stripe omits them).

    mode "payment" gets a ``pi_…`` payment_intent unless one is given; "subscription" gets a
    ``sub_…`` subscription and "setup" a ``seti_…`` setup_intent, with payment_intent None.
    """
    if mode not in CHECKOUT_MODES:
        raise ValueError(f"mode must be one of {', '.join(CHECKOUT_MODES)}, not {mode!r}")
    created = created or _now()
    total = amount_subtotal - discount if amount_total is None else amount_total
    if mode == "payment":
        payment_intent = payment_intent or _random_id("pi_")
    return {
        "id": id or _random_id("cs_live_" if livemode else "cs_test_", 58),
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": False,
        "amount_subtotal": amount_subtotal,
        "amount_total": total,
        "automatic_tax": {"enabled": False, "liability": None, "status": None},
        "billing_address_collection": "auto",
        "cancel_url": None,
        "client_reference_id": client_reference_id,
        "client_secret": None,
        "consent": None,
        "consent_collection": None,
        "created": created,
        "currency": currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": None,
        "customer_creation": "if_required",
        "customer_details": {
            "address": None,
            "email": "player@example.com",
            "name": "Test Player",
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "discounts": [],
        "expires_at": created + 86400,
        "invoice": None,
        "invoice_creation": {"enabled": False, "invoice_data": None},
        "livemode": livemode,
        "locale": "auto",
        "metadata": dict(metadata or {}),
        "mode": mode,
        "payment_intent": payment_intent,
        "payment_link": payment_link,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "payment_status": payment_status,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": _random_id("seti_") if mode == "setup" else None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": status,
        "submit_type": "auto" if mode == "payment" else None,
        "subscription": _random_id("sub_") if mode == "subscription" else None,
        "success_url": "https://stripe.com",
        "total_details": {"amount_discount": discount, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": None,
    }


def charge(
    *,
    payment_intent: str,
    amount: int,
    amount_refunded: int,
    currency: str = "usd",
    refunded: bool | None = None,
    id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    created: int | None = None,
    livemode: bool = False,
) -> dict[str, Any]:
    """Return a ``charge`` as ``charge.refunded`` carries it; refunded defaults to a full refund."""
    return {
        "id": id or _random_id("ch_"),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": _random_id("txn_"),
        "billing_details": {
            "address": None,
            "email": "player@example.com",
            "name": "Test Player",
            "phone": None,
        },
        "calculated_statement_descriptor": "ARCADE PAY",
        "captured": True,
        "created": created or _now(),
        "currency": currency,
        "customer": None,
        "description": None,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": livemode,
        "metadata": dict(metadata or {}),
        "on_behalf_of": None,
        "outcome": {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": payment_intent,
        "payment_method": _random_id("pm_"),
        "payment_method_details": {
            "card": {"brand": "visa", "country": "US", "last4": "4242", "funding": "credit"},
            "type": "card",
        },
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": None,
        "refunded": amount_refunded >= amount if refunded is None else refunded,
        "review": None,
        "shipping": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }


def event(
    type: str,
    data_object: Mapping[str, Any],
    *,
    id: str | None = None,
    created: int | None = None,
    previous_attributes: Mapping[str, Any] | None = None,
    api_version: str = API_VERSION,
    livemode: bool = False,
    account: str | None = None,
) -> dict[str, Any]:
    """Return a Stripe ``event`` wrapping data_object, as a webhook delivers it.

    account names the connected account (``acct_…``) a Connect event came from; Stripe sends
    the top-level ``account`` key only on such events, so None leaves it out.
    """
    data: dict[str, Any] = {"object": dict(data_object)}
    if previous_attributes is not None:
        data["previous_attributes"] = dict(previous_attributes)
    wrapped: dict[str, Any] = {
        "id": id or _random_id("evt_"),
        "object": "event",
        "api_version": api_version,
        "created": created or _now(),
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type,
    }
    if account is not None:
        wrapped["account"] = account
    return wrapped


def dispute(
    *,
    charge: str,
    payment_intent: str,
    amount: int,
    currency: str = "usd",
    reason: str = "fraudulent",
    status: str = "needs_response",
    id: str | None = None,
    livemode: bool = False,
    created: int | None = None,
) -> dict[str, Any]:
    """Return a ``dispute`` as ``charge.dispute.created`` carries it."""
    created = created or _now()
    return {
        "id": id or _random_id("dp_"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge,
        "created": created,
        "currency": currency,
        "enhanced_eligibility_types": [],
        "evidence": {
            "access_activity_log": None,
            "billing_address": None,
            "cancellation_policy": None,
            "customer_communication": None,
            "customer_email_address": None,
            "customer_name": None,
            "customer_purchase_ip": None,
            "product_description": None,
            "receipt": None,
            "refund_policy": None,
            "service_date": None,
            "service_documentation": None,
            "uncategorized_file": None,
            "uncategorized_text": None,
        },
        "evidence_details": {
            "due_by": created + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": livemode,
        "metadata": {},
        "payment_intent": payment_intent,
        "payment_method_details": {
            "card": {"brand": "visa", "case_type": "chargeback", "network_reason_code": "10.4"},
            "type": "card",
        },
        "reason": reason,
        "status": status,
    }


def sign_payload(payload: bytes | str, secret: str, timestamp: int | None = None) -> str:
    """Return the ``Stripe-Signature`` header Stripe would send for payload."""
    body = payload.encode() if isinstance(payload, str) else payload
    ts = _now() if timestamp is None else timestamp
    signed = f"{ts}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


# --- the server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in received."""

    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """Return a header by case-insensitive name."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)

    @property
    def idempotency_key(self) -> str | None:
        """Return the request's Idempotency-Key header."""
        return self.header("Idempotency-Key")


@dataclass
class _Failure:
    status: int
    error_type: str
    message: str
    code: str | None
    should_retry: bool | None
    drop: bool = False
    count: int = 1
    method: str | None = None
    path_prefix: str | None = None
    after: int = 0

    def matches(self, request: RecordedRequest) -> bool:
        """Tell whether this failure applies to request (its method and path prefix)."""
        if self.method is not None and request.method != self.method:
            return False
        return self.path_prefix is None or request.path.startswith(self.path_prefix)


def _failure_target(path: str | None) -> tuple[str | None, str | None]:
    """Split "GET /v1/x" or "/v1/x" into (method or None, path prefix or None)."""
    if path is None:
        return None, None
    method, _, prefix = path.strip().rpartition(" ")
    if not prefix.startswith("/"):
        raise ValueError(f'path must look like "GET /v1/..." or "/v1/...", not {path!r}')
    return (method.strip().upper() or None), prefix


@dataclass
class _Replay:
    fingerprint: str
    body: dict[str, Any]


@dataclass
class _Answer:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


PAYMENT_LINK_PARAMS = frozenset(
    {
        "after_completion",
        "allow_promotion_codes",
        "application_fee_amount",
        "application_fee_percent",
        "automatic_tax",
        "billing_address_collection",
        "consent_collection",
        "currency",
        "custom_fields",
        "custom_text",
        "customer_creation",
        "expand",
        "inactive_message",
        "invoice_creation",
        "line_items",
        "metadata",
        "name_collection",
        "on_behalf_of",
        "optional_items",
        "payment_intent_data",
        "payment_method_collection",
        "payment_method_types",
        "phone_number_collection",
        "restrictions",
        "shipping_address_collection",
        "shipping_options",
        "submit_type",
        "subscription_data",
        "tax_id_collection",
        "transfer_data",
    }
)
LINE_ITEM_PARAMS = frozenset({"price", "quantity", "adjustable_quantity"})
PRICE_PARAMS = frozenset(
    {"currency", "unit_amount", "product", "product_data", "nickname", "metadata", "expand"}
)
# The currencies Stripe charges in (Stripe "Supported currencies", presentment): a Price in
# any other is refused as "Invalid currency".
_CURRENCY_CODES = (
    "usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl"
    " bsd bwp byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd"
    " fkp gbp gel gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs"
    " khr kmf krw kwd kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk"
    " mxn myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub"
    " rwf sar sbd scr sek sgd shp sle sos srd std szl thb tjs tnd top try ttd twd tzs uah"
    " ugx uyu uzs vnd vuv wst xaf xcd xof xpf yer zar zmw"
)
PRESENTMENT_CURRENCIES = frozenset(_CURRENCY_CODES.split())
PAYMENT_INTENT_DATA_PARAMS = frozenset(
    {
        "capture_method",
        "description",
        "metadata",
        "setup_future_usage",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "transfer_group",
    }
)
MAX_ADJUSTABLE_QUANTITY = 999
SESSION_LIST_PARAMS = frozenset(
    {
        "created",
        "customer",
        "customer_account",
        "customer_details",
        "ending_before",
        "expand",
        "limit",
        "payment_intent",
        "payment_link",
        "starting_after",
        "status",
        "subscription",
    }
)
SESSION_STATUSES = ("open", "complete", "expired")
RANGE_OPERATORS: dict[str, Callable[[int, int], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


class StripeStandIn:
    """Serve a small, strict imitation of Stripe's v1 API on 127.0.0.1."""

    def __init__(self, *, api_key: str = API_KEY, keep_alive: bool = False):
        """Prepare an empty stand-in; keep_alive=True speaks HTTP/1.1 with persistent connections.

        The default answers each request with ``Connection: close`` so that clients which are
        never closed leave no sockets behind (pytest turns their ResourceWarning into errors).
        """
        self.api_key = api_key
        self.keep_alive = keep_alive
        self.latency = 0.0
        self._lock = threading.RLock()
        self._prices: dict[str, dict[str, Any]] = {}
        self._links: dict[str, dict[str, Any]] = {}
        self._link_items: dict[str, list[dict[str, Any]]] = {}
        self._sessions: dict[str, dict[str, Any]] = {}
        self._session_items: dict[str, list[dict[str, Any]]] = {}
        self._idempotency: dict[str, _Replay] = {}
        self._refunds: list[dict[str, Any]] = []
        self._failures: list[_Failure] = []
        self._requests: list[RecordedRequest] = []
        self._server: LoopbackServer | None = None

    # life cycle

    @property
    def url(self) -> str:
        """Return the base address to give stripe as ``base_addresses={"api": url}``."""
        if self._server is None:
            raise RuntimeError("the Stripe stand-in is not started")
        return self._server.url

    @property
    def port(self) -> int:
        """Return the port the stand-in listens on."""
        if self._server is None:
            raise RuntimeError("the Stripe stand-in is not started")
        return self._server.port

    def start(self) -> StripeStandIn:
        """Start serving in a daemon thread."""
        if self._server is not None:
            return self
        handler = type(
            "Handler",
            (_Handler,),
            {"standin": self, "protocol_version": "HTTP/1.1" if self.keep_alive else "HTTP/1.0"},
        )
        self._server = LoopbackServer(handler, name="stripe-standin")
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> StripeStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def client(self, **options: Any) -> stripe.StripeClient:
        """Return a StripeClient pointed at the stand-in (options go to StripeClient)."""
        options.setdefault("max_network_retries", 0)
        return stripe.StripeClient(self.api_key, base_addresses={"api": self.url}, **options)

    # test set-up

    def add_price(
        self,
        price_id: str,
        unit_amount: int,
        currency: str = "usd",
        product: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Register a one-time Price and return it."""
        created = price(id=price_id, unit_amount=unit_amount, currency=currency, product=product)
        created.update(fields)
        with self._lock:
            self._prices[price_id] = created
        return dict(created)

    def add_checkout_session(
        self,
        session_id: str | None = None,
        line_items: Iterable[tuple[str, int]] = (),
        *,
        payment_link: str | None = None,
        client_reference_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        payment_status: str = "paid",
        discount: int = 0,
        currency: str | None = None,
        payment_intent: str | None = None,
        created: int | None = None,
        mode: str = "payment",
        livemode: bool = False,
        status: str = "complete",
        amount_total: int | None = None,
    ) -> dict[str, Any]:
        """Register a Checkout Session with line items [(price_id, quantity)], complete by default.

        The discount is taken off the first line item. Returns the session, ready to wrap in
        ``event("checkout.session.completed", session)``. A livemode session is served only
        to a live key (``sk_live_…``), as Stripe does.
        """
        with self._lock:
            items = self._line_items_for(line_items, discount)
            subtotal = sum(item["amount_subtotal"] for item in items)
            session = checkout_session(
                id=session_id,
                payment_link=payment_link,
                client_reference_id=client_reference_id,
                metadata=metadata,
                amount_subtotal=subtotal,
                amount_total=amount_total,
                currency=currency or (items[0]["currency"] if items else "usd"),
                payment_status=payment_status,
                status=status,
                payment_intent=payment_intent,
                discount=discount,
                created=created,
                mode=mode,
                livemode=livemode,
            )
            self._store_session(session, items)
        return dict(session)

    def add_session(
        self, session: Mapping[str, Any], line_items: Iterable[tuple[str, int]] = ()
    ) -> dict[str, Any]:
        """Register a session built by the test, as is, with line items [(price_id, quantity)].

        The session needs an ``id``; it is listed by its ``created`` and filtered by its own
        fields, and registering an id again replaces the earlier session.
        """
        stored = dict(session)
        if not stored.get("id"):
            raise ValueError("the session needs an id")
        with self._lock:
            self._store_session(stored, self._line_items_for(line_items, 0))
        return dict(stored)

    def _line_items_for(
        self, line_items: Iterable[tuple[str, int]], discount: int
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for index, (price_id, quantity) in enumerate(line_items):
            if price_id not in self._prices:
                raise KeyError(f"add_price({price_id!r}, ...) first")
            share = discount if index == 0 else 0
            items.append(line_item(self._prices[price_id], quantity, discount=share))
        return items

    def _store_session(self, session: dict[str, Any], items: list[dict[str, Any]]) -> None:
        # Re-inserting keeps the dict in registration order, which breaks ties in the list.
        self._sessions.pop(session["id"], None)
        self._sessions[session["id"]] = session
        self._session_items[session["id"]] = items

    @property
    def payment_links(self) -> list[dict[str, Any]]:
        """Return the payment links created so far, oldest first."""
        with self._lock:
            return [dict(link) for link in self._links.values()]

    # failure injection and inspection

    def fail_next(
        self,
        status: int = 500,
        count: int = 1,
        error_type: str = "api_error",
        message: str = "An unknown error occurred",
        *,
        code: str | None = None,
        should_retry: bool | None = None,
        path: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer the next count API requests (any path, unless path is given) with this error.

        should_retry sets Stripe's ``Stripe-Should-Retry`` header, which the library obeys
        over the status code. path ("GET /v1/checkout/sessions" or "/v1/checkout/sessions")
        is a prefix a request's method and path must match for the failure to apply; after
        lets that many matching requests succeed first. Failures queued earlier apply first.
        """
        self._queue_failure(
            _Failure(status, error_type, message, code, should_retry), count, path, after
        )

    def drop_next(self, count: int = 1, *, path: str | None = None, after: int = 0) -> None:
        """Close the connection without answering the next count requests.

        path and after pick the requests as they do for ``fail_next``.
        """
        self._queue_failure(_Failure(0, "", "", None, None, drop=True), count, path, after)

    def _queue_failure(self, failure: _Failure, count: int, path: str | None, after: int) -> None:
        if after < 0:
            raise ValueError("after must be 0 or more")
        if count < 1:
            return
        failure.method, failure.path_prefix = _failure_target(path)
        failure.count, failure.after = count, after
        with self._lock:
            self._failures.append(failure)

    def _take_failure(self, request: RecordedRequest) -> _Failure | None:
        """Return the failure that applies to request, or count request as let through."""
        matching = [f for f in self._failures if f.matches(request)]
        due = next((f for f in matching if f.after == 0), None)
        if due is None:
            for waiting in matching:
                waiting.after -= 1
            return None
        due.count -= 1
        if due.count == 0:
            self._failures.remove(due)
        return due

    @property
    def requests(self) -> list[RecordedRequest]:
        """Return a copy of the requests received so far."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """Return the recorded requests with this method and path (path may end with '*')."""
        prefix = path[:-1] if path.endswith("*") else None
        return [
            r
            for r in self.requests
            if r.method == method.upper()
            and (r.path.startswith(prefix) if prefix is not None else r.path == path)
        ]

    def reset_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    # request handling (called from handler threads)

    def _handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Answer:
        parts = urlsplit(raw_path)
        path = parts.path
        if method == "POST":
            params = decode_form(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        else:
            params = decode_form(parse_qsl(parts.query, keep_blank_values=True))
        recorded = RecordedRequest(method, path, params, headers, body)
        with self._lock:
            self._requests.append(recorded)
            failure = self._take_failure(recorded)
        if self.latency > 0:
            time.sleep(self.latency)
        if failure is not None:
            if failure.drop:
                return _Answer(0, None, drop=True)
            error = StripeError(
                failure.status, failure.message, type=failure.error_type, code=failure.code
            )
            if failure.should_retry is not None:
                error.headers["Stripe-Should-Retry"] = str(failure.should_retry).lower()
            return self._error_answer(error)
        try:
            self._authenticate(recorded)
            return self._route(recorded)
        except StripeError as error:
            return self._error_answer(error)

    def _error_answer(self, error: StripeError) -> _Answer:
        request_id = _random_id("req_", 14)
        headers = {"Request-Id": request_id, **error.headers}
        return _Answer(error.status, error.body(request_id), headers)

    def _authenticate(self, request: RecordedRequest) -> None:
        authorization = request.header("Authorization") or ""
        if not authorization:
            raise StripeError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY').",
            )
        scheme, _, key = authorization.partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(key.strip(), self.api_key):
            shown = key.strip()
            masked = (shown[:8] + "*" * 12 + shown[-4:]) if len(shown) > 12 else "****"
            raise StripeError(401, f"Invalid API Key provided: {masked}", code="api_key_invalid")

    def _route(self, request: RecordedRequest) -> _Answer:
        method, path = request.method, request.path
        segments = path.strip("/").split("/")
        match (method, segments):
            case ("GET", ["v1", "prices", price_id]):
                return self._ok(self._get_price(price_id))
            case ("POST", ["v1", "prices"]):
                return self._create_price(request)
            case ("POST", ["v1", "payment_links"]):
                return self._create_payment_link(request)
            case ("POST", ["v1", "payment_links", link_id]):
                return self._ok(self._update_payment_link(link_id, request.params))
            case ("POST", ["v1", "refunds"]):
                return self._create_refund(request)
            case ("GET", ["v1", "payment_links", link_id]):
                return self._ok(self._get_payment_link(link_id, request.params))
            case ("GET", ["v1", "payment_links", link_id, "line_items"]):
                self._get_payment_link(link_id, {})
                with self._lock:
                    items = list(self._link_items.get(link_id, []))
                return self._ok(self._list(items, path, request.params))
            case ("GET", ["v1", "checkout", "sessions"]):
                return self._ok(self._list_sessions(path, request.params))
            case ("GET", ["v1", "checkout", "sessions", session_id]):
                return self._ok(self._get_session(session_id))
            case ("GET", ["v1", "checkout", "sessions", session_id, "line_items"]):
                self._get_session(session_id)
                with self._lock:
                    items = list(self._session_items.get(session_id, []))
                return self._ok(self._list(items, path, request.params))
        raise StripeError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
        )

    @staticmethod
    def _ok(body: dict[str, Any], headers: Mapping[str, str] | None = None) -> _Answer:
        return _Answer(200, body, {"Request-Id": _random_id("req_", 14), **(headers or {})})

    def _get_price(self, price_id: str) -> dict[str, Any]:
        with self._lock:
            found = self._prices.get(price_id)
        if found is None:
            raise _no_such("price", price_id)
        return dict(found)

    def _get_payment_link(self, link_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            found = self._links.get(link_id)
            items = list(self._link_items.get(link_id, []))
        if found is None:
            raise _no_such("payment_link", link_id, param="payment_link")
        link = dict(found)
        if "line_items" in _expand(params):
            link["line_items"] = self._list(items, f"/v1/payment_links/{link_id}/line_items", {})
        return link

    @property
    def _livemode(self) -> bool:
        return self.api_key.startswith(("sk_live_", "rk_live_"))

    def _get_session(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            found = self._sessions.get(session_id)
        if found is None:
            raise _no_such("checkout.session", session_id, param="session")
        if bool(found.get("livemode")) != self._livemode:
            # Stripe keeps live and test objects apart and says so when the key's mode is wrong.
            exists, used = ("live", "test") if found.get("livemode") else ("test", "live")
            raise StripeError(
                404,
                f"No such checkout.session: '{session_id}'; a similar object exists in {exists} "
                f"mode, but a {used} mode key was used to make this request.",
                code="resource_missing",
                param="session",
            )
        return dict(found)

    def _list_sessions(self, url: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Answer "List all Checkout Sessions": filtered, newest first, paged."""
        for name in params:
            if name not in SESSION_LIST_PARAMS:
                raise _invalid(name, f"Received unknown parameter: {name}", "parameter_unknown")
        expand = _expand(params)
        for path in expand:
            if path != "data.line_items":
                raise _invalid(
                    "expand",
                    f"This property cannot be expanded ({path}); the stand-in expands only "
                    "data.line_items.",
                    "parameter_invalid",
                )
        wanted = _session_filters(params)
        with self._lock:
            # Newest first; the stable sort keeps later registrations first on equal created.
            sessions = sorted(
                reversed(list(self._sessions.values())),
                key=lambda session: int(session.get("created") or 0),
                reverse=True,
            )
            chosen = [
                dict(session)
                for session in sessions
                if bool(session.get("livemode")) == self._livemode
                and all(keep(session) for keep in wanted)
            ]
            items = {
                session["id"]: list(self._session_items.get(session["id"], []))
                for session in chosen
            }
        answer = self._list(chosen, url, params, kind="checkout.session")
        if "data.line_items" in expand:
            for session in answer["data"]:
                session["line_items"] = self._list(
                    items[session["id"]], f"{url}/{session['id']}/line_items", {}
                )
        return answer

    @staticmethod
    def _list(
        items: list[dict[str, Any]],
        url: str,
        params: Mapping[str, Any],
        *,
        kind: str = "item",
    ) -> dict[str, Any]:
        limit = _positive_int(params.get("limit", 10), "limit", maximum=100)
        after = params.get("starting_after")
        before = params.get("ending_before")
        if after and before:
            raise StripeError(
                400,
                "You may only specify one of these parameters: ending_before, starting_after.",
                code="parameters_exclusive",
                param="ending_before",
            )
        ids = [item["id"] for item in items]
        if before:
            # The page just before the cursor, still in list order; has_more looks further back.
            if before not in ids:
                raise _no_such(kind, str(before), param="ending_before")
            end = ids.index(before)
            start = max(0, end - limit)
            return {"object": "list", "data": items[start:end], "has_more": start > 0, "url": url}
        start = 0
        if after:
            if after not in ids:
                raise _no_such(kind, str(after), param="starting_after")
            start = ids.index(after) + 1
        page = items[start : start + limit]
        return {
            "object": "list",
            "data": page,
            "has_more": start + limit < len(items),
            "url": url,
        }

    def _create_price(self, request: RecordedRequest) -> _Answer:
        """Create a one-time Price from ``unit_amount``, ``currency`` and ``product`` or
        ``product_data[name]``, once per idempotency key."""
        params = request.params
        for name in params:
            if name not in PRICE_PARAMS:
                raise _invalid(name, f"Received unknown parameter: {name}", "parameter_unknown")
        if "currency" not in params:
            raise _missing("currency")
        currency = params["currency"]
        if not isinstance(currency, str) or currency not in PRESENTMENT_CURRENCIES:
            raise _invalid("currency", f"Invalid currency: {currency}", "parameter_invalid")
        if "unit_amount" not in params:
            raise _missing("unit_amount")
        unit_amount = _positive_int(params["unit_amount"], "unit_amount", minimum=0)
        product = params.get("product")
        product_data = params.get("product_data")
        if (product is None) == (product_data is None):
            raise StripeError(
                400,
                "You must specify either `product` or `product_data` when creating a price.",
                code="parameter_missing",
                param="product",
            )
        if product_data is not None:
            if not isinstance(product_data, dict) or not product_data.get("name"):
                raise _missing("product_data[name]")
            product = _random_id("prod_", 14)
        fingerprint = _fingerprint(request)
        key = request.idempotency_key
        with self._lock:
            replay = self._replay(key, fingerprint)
            if replay is not None:
                return self._ok(dict(replay.body), {"Idempotent-Replayed": "true"})
            created = price(
                unit_amount=unit_amount,
                currency=currency,
                product=str(product),
                nickname=params.get("nickname"),
                metadata=_metadata(params.get("metadata"), "metadata"),
            )
            self._prices[created["id"]] = created
            if key:
                self._idempotency[key] = _Replay(fingerprint, created)
        return self._ok(dict(created))

    def _update_payment_link(self, link_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Update a Payment Link; the stand-in knows ``active``, ``metadata`` and
        ``custom_text``."""
        for name in params:
            if name not in ("active", "metadata", "custom_text"):
                raise _invalid(name, f"Received unknown parameter: {name}", "parameter_unknown")
        with self._lock:
            found = self._links.get(link_id)
            if found is None:
                raise _no_such("payment_link", link_id, param="payment_link")
            if "active" in params:
                found["active"] = _boolean(params["active"], "active")
            if "metadata" in params:
                found["metadata"] = _metadata(params["metadata"], "metadata")
            if "custom_text" in params:
                found["custom_text"] = _custom_text(params["custom_text"], found["custom_text"])
            return dict(found)

    def _replay(self, key: str | None, fingerprint: str) -> _Replay | None:
        """Return the answer kept for an idempotency key, or None for a new key; refuse a key
        reused with other parameters, as Stripe does. Call with the lock held."""
        replay = self._idempotency.get(key) if key else None
        if replay is not None and replay.fingerprint != fingerprint:
            raise StripeError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request.",
                type="idempotency_error",
            )
        return replay

    def _create_refund(self, request: RecordedRequest) -> _Answer:
        """Refund a PaymentIntent of a registered Checkout Session, once per idempotency key."""
        params = request.params
        key = request.idempotency_key
        for name in params:
            if name not in ("payment_intent", "charge", "amount", "reason", "metadata"):
                raise _invalid(name, f"Received unknown parameter: {name}", "parameter_unknown")
        intent = params.get("payment_intent")
        if not intent:
            raise _missing("payment_intent")
        fingerprint = _fingerprint(request)
        with self._lock:
            replay = self._replay(key, fingerprint)
            if replay is not None:
                return self._ok(dict(replay.body), {"Idempotent-Replayed": "true"})
            sessions = [s for s in self._sessions.values() if s.get("payment_intent") == intent]
            if not sessions:
                raise _no_such("payment_intent", str(intent), param="payment_intent")
            session = sessions[0]
            paid = int(session.get("amount_total") or 0)
            already = sum(r["amount"] for r in self._refunds if r["payment_intent"] == intent)
            amount = _positive_int(params.get("amount", paid - already), "amount")
            if already + amount > paid:
                raise StripeError(
                    400,
                    f"Refund amount ({amount}) is greater than unrefunded amount on charge",
                    code="amount_too_large",
                    param="amount",
                )
            refund = {
                "id": _random_id("re_"),
                "object": "refund",
                "amount": amount,
                "charge": _random_id("ch_"),
                "created": _now(),
                "currency": session.get("currency", "usd"),
                "metadata": _metadata(params.get("metadata"), "metadata"),
                "payment_intent": intent,
                "reason": params.get("reason"),
                "status": "succeeded",
            }
            self._refunds.append(refund)
            if key:
                self._idempotency[key] = _Replay(fingerprint, refund)
        return self._ok(dict(refund), {"Idempotency-Key": key} if key else {})

    @property
    def refunds(self) -> list[dict[str, Any]]:
        """Return the refunds made so far, oldest first."""
        with self._lock:
            return [dict(refund) for refund in self._refunds]

    def _create_payment_link(self, request: RecordedRequest) -> _Answer:
        params = request.params
        key = request.idempotency_key
        fingerprint = _fingerprint(request)
        with self._lock:
            replay = self._replay(key, fingerprint)
            if replay is not None:
                return self._ok(
                    dict(replay.body), {"Idempotent-Replayed": "true", "Idempotency-Key": key}
                )
            link, items = self._build_payment_link(params)
            self._links[link["id"]] = link
            self._link_items[link["id"]] = items
            answer = dict(link)
            if "line_items" in _expand(params):
                answer["line_items"] = self._list(
                    items, f"/v1/payment_links/{link['id']}/line_items", {}
                )
            if key:
                self._idempotency[key] = _Replay(fingerprint, answer)
        headers = {"Idempotency-Key": key} if key else {}
        return self._ok(dict(answer), headers)

    def _build_payment_link(
        self, params: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        for name in params:
            if name not in PAYMENT_LINK_PARAMS:
                raise _invalid(name, f"Received unknown parameter: {name}", "parameter_unknown")
        raw_items = params.get("line_items")
        if not raw_items:
            raise _missing("line_items")
        if not isinstance(raw_items, list):
            raise _invalid("line_items", "Invalid array", "parameter_invalid")
        items: list[dict[str, Any]] = []
        currency: str | None = None
        for index, raw in enumerate(raw_items):
            prefix = f"line_items[{index}]"
            if not isinstance(raw, dict):
                raise _invalid(prefix, "Invalid object", "parameter_invalid")
            for name in raw:
                if name not in LINE_ITEM_PARAMS:
                    raise _invalid(
                        f"{prefix}[{name}]",
                        f"Received unknown parameter: {prefix}[{name}]",
                        "parameter_unknown",
                    )
            price_id = raw.get("price")
            if not price_id:
                raise _missing(f"{prefix}[price]")
            with self._lock:
                found = self._prices.get(price_id)
            if found is None:
                raise _no_such("price", price_id, param=f"{prefix}[price]")
            if currency is not None and found["currency"] != currency:
                raise _invalid(
                    f"{prefix}[price]",
                    "All prices on a payment link must have the same currency.",
                    "parameter_invalid",
                )
            currency = found["currency"]
            if "quantity" not in raw:
                raise _missing(f"{prefix}[quantity]")
            quantity = _positive_int(raw["quantity"], f"{prefix}[quantity]")
            item = line_item(found, quantity)
            adjustable = raw.get("adjustable_quantity")
            if adjustable is not None:
                item["adjustable_quantity"] = _adjustable(adjustable, quantity, prefix)
            items.append(item)

        metadata = _metadata(params.get("metadata"), "metadata")
        intent_data = params.get("payment_intent_data") or {}
        if not isinstance(intent_data, dict):
            raise _invalid("payment_intent_data", "Invalid object", "parameter_invalid")
        for name in intent_data:
            if name not in PAYMENT_INTENT_DATA_PARAMS:
                raise _invalid(
                    f"payment_intent_data[{name}]",
                    f"Received unknown parameter: payment_intent_data[{name}]",
                    "parameter_unknown",
                )
        custom_text = _custom_text(
            params.get("custom_text"),
            {
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
        )
        link_id = _random_id("plink_")
        link: dict[str, Any] = {
            "id": link_id,
            "object": "payment_link",
            "active": True,
            "after_completion": {
                "hosted_confirmation": {"custom_message": None},
                "type": "hosted_confirmation",
            },
            "allow_promotion_codes": params.get("allow_promotion_codes") == "true",
            "application": None,
            "application_fee_amount": None,
            "application_fee_percent": None,
            "automatic_tax": {"enabled": False, "liability": None},
            "billing_address_collection": params.get("billing_address_collection", "auto"),
            "consent_collection": None,
            "currency": currency,
            "custom_fields": [],
            "custom_text": custom_text,
            "customer_creation": params.get("customer_creation", "if_required"),
            "inactive_message": None,
            "invoice_creation": {"enabled": False, "invoice_data": None},
            "livemode": False,
            "metadata": metadata,
            "on_behalf_of": None,
            "payment_intent_data": {
                "capture_method": intent_data.get("capture_method"),
                "description": intent_data.get("description"),
                "metadata": _metadata(intent_data.get("metadata"), "payment_intent_data[metadata]"),
                "setup_future_usage": None,
                "statement_descriptor": intent_data.get("statement_descriptor"),
                "statement_descriptor_suffix": intent_data.get("statement_descriptor_suffix"),
                "transfer_group": intent_data.get("transfer_group"),
            },
            "payment_method_collection": "always",
            "payment_method_types": None,
            "phone_number_collection": {"enabled": False},
            "restrictions": None,
            "shipping_address_collection": None,
            "shipping_options": [],
            "submit_type": params.get("submit_type", "auto"),
            "subscription_data": None,
            "tax_id_collection": {"enabled": False, "required": "never"},
            "transfer_data": None,
            "url": "https://buy.stripe.com/test_" + _random_id("", 14),
        }
        return link, items


_SessionTest = Callable[[Mapping[str, Any]], bool]


def _fingerprint(request: RecordedRequest) -> str:
    """Return what an idempotency key is bound to: the method, path and parameters."""
    return json.dumps([request.method, request.path, request.params], sort_keys=True)


def _session_filters(params: Mapping[str, Any]) -> list[_SessionTest]:
    """Turn the list's filter parameters into tests a session must pass."""
    tests: list[_SessionTest] = []
    for name in ("customer", "customer_account", "payment_intent", "payment_link", "subscription"):
        if name in params:
            value = params[name]
            if not isinstance(value, str):
                raise _invalid(name, "Invalid string", "parameter_invalid")
            tests.append(lambda session, name=name, value=value: session.get(name) == value)
    if "status" in params:
        status = params["status"]
        if status not in SESSION_STATUSES:
            raise _invalid(
                "status",
                f"Invalid status: must be one of {', '.join(SESSION_STATUSES)}",
                "parameter_invalid",
            )
        tests.append(lambda session: session.get("status") == status)
    if "customer_details" in params:
        details = params["customer_details"]
        if not isinstance(details, dict):
            raise _invalid("customer_details", "Invalid object", "parameter_invalid")
        for key in details:
            if key != "email":
                raise _invalid(
                    f"customer_details[{key}]",
                    f"Received unknown parameter: customer_details[{key}]",
                    "parameter_unknown",
                )
        if "email" not in details:
            raise _missing("customer_details[email]")
        email = details["email"]
        tests.append(lambda session: (session.get("customer_details") or {}).get("email") == email)
    if "created" in params:
        created = params["created"]
        if not isinstance(created, dict):
            exact = _positive_int(created, "created", minimum=0)
            tests.append(lambda session: int(session.get("created") or 0) == exact)
        else:
            for op, bound in created.items():
                compare = RANGE_OPERATORS.get(op)
                if compare is None:
                    raise _invalid(
                        f"created[{op}]",
                        f"Received unknown parameter: created[{op}]",
                        "parameter_unknown",
                    )
                limit = _positive_int(bound, f"created[{op}]", minimum=0)
                tests.append(
                    lambda session, compare=compare, limit=limit: compare(
                        int(session.get("created") or 0), limit
                    )
                )
    return tests


def _expand(params: Mapping[str, Any]) -> list[str]:
    expand = params.get("expand") or []
    return [expand] if isinstance(expand, str) else list(expand)


def _metadata(value: Any, param: str) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise _invalid(param, "Invalid hash", "parameter_invalid")
    if len(value) > 50:
        raise _invalid(param, "Metadata can have at most 50 keys.", "parameter_invalid")
    for key, item in value.items():
        if len(key) > 40:
            raise _invalid(f"{param}[{key}]", "Metadata keys are at most 40 characters.")
        if not isinstance(item, str) or len(item) > 500:
            raise _invalid(f"{param}[{key}]", "Metadata values are at most 500 characters.")
    return {key: item for key, item in value.items() if item != ""}


def _custom_text(value: Any, current: Mapping[str, Any]) -> dict[str, Any]:
    """Return a Payment Link's ``custom_text`` after setting the parts in ``value`` (each
    ``{"message": …}`` of at most 1,200 characters, or "" to clear it), as Stripe checks it."""
    result = dict(current)
    if value in (None, ""):
        return result
    if not isinstance(value, dict):
        raise _invalid("custom_text", "Invalid hash", "parameter_invalid")
    for part, text in value.items():
        if part not in result:
            raise _invalid(
                f"custom_text[{part}]",
                f"Received unknown parameter: custom_text[{part}]",
                "parameter_unknown",
            )
        if text == "":
            result[part] = None
            continue
        message = text.get("message") if isinstance(text, dict) else None
        if not isinstance(message, str) or not message or len(message) > 1200:
            raise _invalid(
                f"custom_text[{part}][message]",
                "The message must be 1 to 1200 characters.",
                "parameter_invalid",
            )
        result[part] = {"message": message}
    return result


def _adjustable(value: Any, quantity: int, prefix: str) -> dict[str, Any]:
    param = f"{prefix}[adjustable_quantity]"
    if not isinstance(value, dict):
        raise _invalid(param, "Invalid object", "parameter_invalid")
    if "enabled" not in value:
        raise _missing(f"{param}[enabled]")
    enabled = _boolean(value["enabled"], f"{param}[enabled]")
    minimum = _positive_int(value.get("minimum", 0), f"{param}[minimum]", minimum=0)
    maximum = _positive_int(
        value.get("maximum", MAX_ADJUSTABLE_QUANTITY),
        f"{param}[maximum]",
        maximum=MAX_ADJUSTABLE_QUANTITY,
    )
    if minimum > maximum or not minimum <= quantity <= maximum:
        raise _invalid(
            param,
            "The quantity must be between adjustable_quantity minimum and maximum.",
            "parameter_invalid",
        )
    return {"enabled": enabled, "maximum": maximum, "minimum": minimum}


class _Handler(BaseHTTPRequestHandler):
    """Hand each request to the StripeStandIn and write its answer."""

    standin: StripeStandIn

    def version_string(self) -> str:
        """Name the server as Stripe's edge does."""
        return "nginx"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name: value for name, value in self.headers.items()}
        answer = self.standin._handle(self.command, self.path, headers, body)
        if answer.drop:
            self.close_connection = True
            return
        data = json.dumps(answer.body, indent=2).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Stripe-Version", API_VERSION)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if not self.standin.keep_alive:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    do_GET = _serve
    do_POST = _serve
    do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""
