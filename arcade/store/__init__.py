"""Pick the store back end named by ``DATABASE_URL``."""

from __future__ import annotations

import logging
from typing import NoReturn

from arcade.errors import StoreError
from arcade.logs import log_event
from arcade.store.base import Store

logger = logging.getLogger(__name__)

MALFORMED_URL = "DATABASE_URL must be sqlite:///path.db or dynamodb://TABLE"
LAMBDA_SQLITE_REFUSAL = (
    "DATABASE_URL is a sqlite: store, refused in Lambda: credits would live in one"
    " instance's /tmp and be lost; use dynamodb://TABLE"
)


def open_store(url: str, *, in_lambda: bool = False) -> Store:
    """Return the store for ``sqlite:///path.db`` or ``dynamodb://TABLE``."""
    from arcade.config import is_store_url

    if not is_store_url(url):
        # Settings already named the problem; every use of the store names it again, so a
        # command or request says it in one sentence instead of failing at import.
        return RefusedStore(MALFORMED_URL)  # type: ignore[return-value]
    if url.startswith("sqlite:///"):
        if in_lambda:
            log_event(logger, "store_refused", level=logging.ERROR, reason=LAMBDA_SQLITE_REFUSAL)
            return RefusedStore(LAMBDA_SQLITE_REFUSAL)  # type: ignore[return-value]
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
