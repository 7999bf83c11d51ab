"""Stripe: webhook verification, prices, payment links and a session's line items.

The ``stripe`` library is imported on first use, not at import time, to keep the Lambda cold
start small. Every Stripe failure becomes our own ``PaymentProviderError`` with a sentence of
ours; the library's text (which may echo request data) never reaches a client or a log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arcade.errors import (
    InvalidSignature,
    PaymentProviderError,
    PaymentRequestRefused,
    SettingsError,
)
from arcade.logs import log_event

if TYPE_CHECKING:
    import stripe

    from arcade.config import Settings

logger = logging.getLogger(__name__)

SIGNATURE_TOLERANCE_SECONDS = 300
STRIPE_TIMEOUT_SECONDS = (2.0, 5.0)  # (connect, read)


def key_livemode(api_key: str | None) -> bool | None:
    """Return whether a Stripe key works in live mode (None when it is not a known kind).

    Stripe's secret and restricted keys name their mode: ``sk_live_``/``rk_live_`` and
    ``sk_test_``/``rk_test_``; every event carries the ``livemode`` of the mode it came from.
    """
    if not api_key:
        return None
    if api_key.startswith(("sk_live_", "rk_live_")):
        return True
    if api_key.startswith(("sk_test_", "rk_test_")):
        return False
    return None


def _price_of_first_item(link: Any) -> Price | None:
    """Return the Price of a created link's line item (``expand[]=line_items``), if there."""
    try:
        item = link.line_items.data[0]
        price = item.price
        return Price(
            price_id=price.id,
            unit_amount=getattr(price, "unit_amount", None),
            currency=getattr(price, "currency", None) or "usd",
            active=bool(getattr(price, "active", True)),
        )
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _retries(retries: int | None) -> dict[str, Any]:
    """Return request options that set the library's retries of one call, when given."""
    return {} if retries is None else {"max_network_retries": retries}


@dataclass(frozen=True)
class Price:
    price_id: str
    unit_amount: int | None
    currency: str
    active: bool


@dataclass(frozen=True)
class CreatedLink:
    link_id: str
    url: str
    price: Price | None = None  # its line item's Price, when Stripe sent it back expanded


class StripeGateway:
    """The calls this service makes to Stripe, through one StripeClient per process."""

    def __init__(self, settings: Settings, client: stripe.StripeClient | None = None):
        self.settings = settings
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> stripe.StripeClient:
        """Return the process's StripeClient, built on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build_client()
        return self._client

    def _build_client(self) -> stripe.StripeClient:
        self.settings.require("STRIPE_API_KEY")
        # A refused STRIPE_API_BASE sends calls nowhere rather than to Stripe itself.
        refused_base = self.settings.refusal("STRIPE_API_BASE")
        if refused_base:
            raise SettingsError(refused_base)
        import stripe

        # The library waits 80 s for an answer by default; three tries of that would outlast
        # the Lambda and the player. Connect and read bounds keep a webhook under ~25 s.
        options: dict[str, Any] = {
            "max_network_retries": 2,
            "http_client": stripe.RequestsClient(timeout=STRIPE_TIMEOUT_SECONDS),
        }
        if self.settings.stripe_api_base:
            options["base_addresses"] = {"api": self.settings.stripe_api_base}
        return stripe.StripeClient(self.settings.stripe_api_key or "", **options)

    # --- webhooks ---------------------------------------------------------------------------
    def verify_event(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """Return the event in ``payload`` after checking its Stripe-Signature over the bytes."""
        self.settings.require("STRIPE_WEBHOOK_SECRET")
        import stripe

        if not signature:
            raise InvalidSignature("the Stripe-Signature header is missing")
        try:
            stripe.WebhookSignature.verify_header(
                payload,
                signature,
                self.settings.stripe_webhook_secret,
                tolerance=SIGNATURE_TOLERANCE_SECONDS,
            )
            event = json.loads(payload)
        except (stripe.SignatureVerificationError, TypeError) as exc:
            # TypeError: the library's compare_digest on a signature that is not ASCII.
            raise InvalidSignature("the Stripe-Signature does not match or is too old") from exc
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InvalidSignature("the webhook body is not a signed JSON event") from exc
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise InvalidSignature("the webhook body is not a Stripe event")
        return event

    # --- prices and links -------------------------------------------------------------------
    def retrieve_price(self, price_id: str, *, retries: int | None = None) -> Price:
        """Return the price's unit amount and currency (``retries``: the library's retries of
        this one call, None for the client's default)."""
        options = _retries(retries)
        price = self._call(
            "price_retrieve",
            lambda: self.client.v1.prices.retrieve(price_id, options=options),  # type: ignore[arg-type]
        )
        return Price(
            price_id=price.id,
            unit_amount=getattr(price, "unit_amount", None),
            currency=getattr(price, "currency", None) or "usd",
            active=bool(getattr(price, "active", True)),
        )

    def find_price(self, price_id: str) -> Price | None:
        """Return an existing Price, or None when Stripe has none with this id (a 404).
        Raises PaymentProviderError when Stripe fails otherwise."""
        import stripe

        def fetch() -> Any:
            try:
                return self.client.v1.prices.retrieve(price_id)
            except stripe.InvalidRequestError as exc:
                if getattr(exc, "http_status", None) == 404:
                    return None
                raise

        price = self._call("price_retrieve", fetch)
        if price is None:
            return None
        return Price(
            price_id=price.id,
            unit_amount=getattr(price, "unit_amount", None),
            currency=getattr(price, "currency", None) or "usd",
            active=bool(getattr(price, "active", True)),
        )

    def create_price(
        self, *, unit_amount: int, currency: str, product_name: str, retries: int | None = None
    ) -> Price:
        """Create a one-time Price of ``unit_amount`` (smallest unit) with a product of that
        name; the same request gives the same Price (an idempotency key made of the
        parameters). Raises PaymentProviderError."""
        params: dict[str, Any] = {
            "unit_amount": unit_amount,
            "currency": currency,
            "product_data": {"name": product_name},
        }
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        price = self._call(
            "price_create",
            lambda: self.client.v1.prices.create(
                params,  # type: ignore[arg-type]
                options={"idempotency_key": f"arcade-price-{digest[:40]}", **_retries(retries)},  # type: ignore[typeddict-item]
            ),
        )
        return Price(
            price_id=price.id,
            unit_amount=getattr(price, "unit_amount", None),
            currency=getattr(price, "currency", None) or currency,
            active=bool(getattr(price, "active", True)),
        )

    def set_link_text(self, link_id: str, text: str, *, active: bool | None = None) -> None:
        """Replace what a Payment Link's page tells the player above its pay button
        (``custom_text.submit``), and switch it on or off in the same call when ``active`` is
        given. Raises PaymentProviderError."""
        params: dict[str, Any] = {"custom_text": {"submit": {"message": text}}}
        if active is not None:
            params["active"] = active
        self._call(
            "payment_link_update",
            lambda: self.client.v1.payment_links.update(link_id, params),  # type: ignore[arg-type]
        )

    def create_payment_link(
        self,
        *,
        machine_id: str,
        price_id: str,
        quantity: int | None,
        max_quantity: int,
        retries: int | None = None,
        text: str | None = None,
    ) -> CreatedLink:
        """Create a Payment Link for one machine; the same request always gives the same link.

        ``text`` is what its page tells the player (``custom_text.submit``), for a bundle of
        a pricing plan.
        """
        line_item: dict[str, Any] = {"price": price_id, "quantity": quantity or 1}
        if quantity is None:
            line_item["adjustable_quantity"] = {
                "enabled": True,
                "minimum": 1,
                "maximum": max_quantity,
            }
        params: dict[str, Any] = {
            "line_items": [line_item],
            "metadata": {"machine_id": machine_id},
            "payment_intent_data": {"metadata": {"machine_id": machine_id}},
            # The line item's Price comes back with the link: no second call for its amount.
            "expand": ["line_items"],
        }
        if text is not None:
            params["custom_text"] = {"submit": {"message": text}}
        # Same parameters, same key: a retry (ours, the library's or a concurrent request)
        # returns the link Stripe already made instead of making another.
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        idempotency_key = f"arcade-plink-{digest[:40]}"
        link = self._call(
            "payment_link_create",
            lambda: self.client.v1.payment_links.create(
                params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key, **_retries(retries)},  # type: ignore[typeddict-item]
            ),
        )
        return CreatedLink(link_id=link.id, url=link.url, price=_price_of_first_item(link))

    def refund(
        self, payment_intent: str, *, idempotency_key: str, amount: int | None = None
    ) -> str:
        """Refund a PaymentIntent (all of it, or ``amount``); return the refund's id.

        The idempotency key makes a repeated request refund once (Stripe "Idempotent
        requests"). Raises PaymentProviderError.
        """
        params: dict[str, Any] = {"payment_intent": payment_intent}
        if amount is not None:
            params["amount"] = amount
        refund = self._call(
            "refund_create",
            lambda: self.client.v1.refunds.create(
                params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            ),
        )
        return refund.id

    def set_link_active(self, link_id: str, active: bool) -> None:
        """Switch a Payment Link on or off: an inactive link's page takes no money. Raises
        PaymentProviderError."""
        self._call(
            "payment_link_update",
            lambda: self.client.v1.payment_links.update(link_id, {"active": active}),
        )

    def line_items(self, session_id: str) -> list[tuple[str | None, int]]:
        """Return a Checkout Session's line items as (price id, quantity) pairs."""

        def fetch() -> list[tuple[str | None, int]]:
            page = self.client.v1.checkout.sessions.line_items.list(session_id, {"limit": 100})
            return [
                (getattr(getattr(item, "price", None), "id", None), int(item.quantity or 0))
                for item in page.auto_paging_iter()
            ]

        return self._call("line_items_list", fetch)

    def completed_sessions(self, since: int, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Yield Stripe's complete Checkout Sessions created at or after ``since`` (Unix
        seconds), newest first, as plain dicts shaped like a webhook's ``data.object``.

        Pages (``page_size``, 1..100) are fetched as the caller iterates; a failure on any page
        raises ``PaymentProviderError`` there, after the sessions already yielded.
        """
        params: dict[str, Any] = {
            "created": {"gte": since},
            "status": "complete",
            "limit": page_size,
        }
        while True:
            page = self._call(
                "checkout_sessions_list",
                lambda: self.client.v1.checkout.sessions.list(params),  # noqa: B023
            )
            for session in page.data:
                yield session.to_dict()
            if not page.has_more or not page.data:
                return
            params = params | {"starting_after": page.data[-1].id}

    def _call(self, operation: str, call: Any) -> Any:
        import stripe

        try:
            return call()
        except SettingsError:
            raise
        except stripe.StripeError as exc:
            status = getattr(exc, "http_status", None)
            log_event(
                logger,
                "stripe_call_failed",
                level=logging.WARNING,
                operation=operation,
                error=type(exc).__name__,
                http_status=status,
                request_id=getattr(exc, "request_id", None),
            )
            if isinstance(exc, stripe.AuthenticationError):
                raise PaymentProviderError("Stripe refused STRIPE_API_KEY") from exc
            if isinstance(exc, stripe.InvalidRequestError):
                raise PaymentRequestRefused("Stripe refused the request") from exc
            raise PaymentProviderError("Stripe could not be reached or failed") from exc
