"""Pick the store back end named by ``DATABASE_URL``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn

from arcade.errors import StoreError
from arcade.logs import log_event

if TYPE_CHECKING:
    from arcade.store.base import Store

logger = logging.getLogger(__name__)

MALFORMED_URL = "DATABASE_URL must be sqlite:///path.db or dynamodb://TABLE"
LAMBDA_SQLITE_REFUSAL = (
    "DATABASE_URL is a sqlite: store, refused in Lambda: credits would live in one"
    " instance's /tmp and be lost; use dynamodb://TABLE"
)


def refusal(url: str, *, in_lambda: bool = False) -> str | None:
    """Return why ``url`` names no store this process may use, or None when it names one."""
    from arcade.config import is_store_url

    if not is_store_url(url):
        return MALFORMED_URL
    if url.startswith("sqlite:///") and in_lambda:
        return LAMBDA_SQLITE_REFUSAL
    return None


def log_refusal(url: str, *, in_lambda: bool = False) -> None:
    """Log an error at start-up when Lambda was given a SQLite store (a malformed URL is
    already a setting problem): the first request that needs the store fails with it."""
    if refusal(url, in_lambda=in_lambda) == LAMBDA_SQLITE_REFUSAL:
        log_event(logger, "store_refused", level=logging.ERROR, reason=LAMBDA_SQLITE_REFUSAL)


def open_store(url: str, *, in_lambda: bool = False) -> Store:
    """Return the store for ``sqlite:///path.db`` or ``dynamodb://TABLE``.

    A refused URL gives a store whose every use raises StoreError with the reason, so a
    command or request says it in one sentence instead of failing at import.
    """
    reason = refusal(url, in_lambda=in_lambda)
    if reason is not None:
        return RefusedStore(reason)  # type: ignore[return-value]
    if url.startswith("sqlite:///"):
        from arcade.store.sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"))
    from arcade.store.dynamodb import DynamoStore

    return DynamoStore(url.removeprefix("dynamodb://"))


class RefusedStore:
    """Stands where a store was refused: every use fails with the reason, in plain words."""

    def __init__(self, reason: str):
        self.reason = reason

    def __getattr__(self, name: str) -> NoReturn:
        raise StoreError(self.reason)

    def close(self) -> None:
        """Hold nothing."""
