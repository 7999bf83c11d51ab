"""The machine registry: ids, tokens (stored hashed) and who may act for a machine."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import TYPE_CHECKING

from arcade.clock import iso, utc_now
from arcade.errors import BadRequest, ServiceUnavailable, Unauthorized, UnknownMachine
from arcade.logs import REFUSALS
from arcade.text import one_line
from arcade.wire import MACHINE_ID_RULE, is_valid_machine_id

if TYPE_CHECKING:
    from arcade.store.base import Machine, Store


def check_machine_id(value: object) -> str:
    """Return ``value`` when it is a valid machine id, else raise BadRequest."""
    if not is_valid_machine_id(value):
        raise BadRequest(f"machine_id must be {MACHINE_ID_RULE}", code="invalid_machine_id")
    return value  # type: ignore[return-value]


MAX_MACHINE_NAME = 80


def check_machine_name(value: object) -> str | None:
    """Return a machine's name as ``arcade.text.one_line`` tidies it (None stays None): 1 to
    ``MAX_MACHINE_NAME`` printable characters, as a grant's reason must be. It is shown on
    the /admin pages, the player's page and in ``machines list``. Raises BadRequest."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("name must be a string", code="invalid_name")
    name = one_line(value, MAX_MACHINE_NAME)
    if name is None:
        raise BadRequest(
            f"name must be 1 to {MAX_MACHINE_NAME} printable characters", code="invalid_name"
        )
    return name


def check_price_id(value: object) -> str | None:
    """Return a machine's Stripe Price id (None stays None): ``price_`` and letters, digits
    or ``_``, as a plan's bundle gives it. Raises BadRequest."""
    from arcade.pricing import PRICE_ID

    if value is None:
        return None
    if not isinstance(value, str) or not PRICE_ID.fullmatch(value):
        raise BadRequest("price_id must be a Stripe price id (price_…)", code="invalid_price_id")
    return value


def describe(machine: Machine) -> dict[str, object]:
    """Return what an operator may see of a machine (everything but its token hash)."""
    return {
        "machine_id": machine.machine_id,
        "name": machine.name,
        "price_id": machine.price_id,
        "credits_per_unit": machine.credits_per_unit,
        "credits_per_game": machine.credits_per_game or 1,
        "timezone": machine.timezone or "UTC",
        "created_at": iso(machine.created_at),
    }


def hash_token(token: str) -> str:
    """Return the stored form of a machine token.

    Tokens are 256 random bits, so one SHA-256 is enough: there is nothing to guess.
    """
    return hashlib.sha256(token_bytes(token)).hexdigest()


def token_bytes(token: str) -> bytes:
    """Return the bytes a presented token is compared by, whatever text it holds.

    A Lambda event's JSON may carry a lone surrogate (``"\\udc80"``) in a header, which
    ``str.encode()`` refuses with UnicodeEncodeError: a 500 for an anonymous caller (SPEC
    "HTTP": a token that cannot be ours is a 401).
    """
    return token.encode("utf-8", "surrogatepass")


def new_token() -> str:
    """Return a fresh machine token."""
    return "mt_" + secrets.token_urlsafe(32)


logger = logging.getLogger(__name__)


class Registry:
    """Register machines and decide whether a bearer token may act for one."""

    def __init__(self, store: Store, *, admin_api_key: str | None):
        self.store = store
        self.admin_api_key = admin_api_key

    def register(
        self,
        machine_id: str,
        *,
        name: str | None = None,
        price_id: str | None = None,
        credits_per_unit: int | None = None,
    ) -> tuple[Machine, str]:
        """Store a new machine and return it with its token (shown once). Raises BadRequest
        for an id, name or price id that cannot be one, MachineExists, StoreError."""
        from arcade.store.base import Machine

        check_machine_id(machine_id)
        name = check_machine_name(name)
        price_id = check_price_id(price_id)
        token = new_token()
        machine = Machine(
            machine_id=machine_id,
            token_hash=hash_token(token),
            created_at=utc_now(),
            name=name,
            price_id=price_id,
            credits_per_unit=credits_per_unit,
        )
        self.store.add_machine(machine)
        return machine, token

    def rotate_token(self, machine_id: str) -> str:
        """Give a machine a new token; the old one stops working at once."""
        token = new_token()
        self.store.update_machine(machine_id, token_hash=hash_token(token))
        return token

    def remove(self, machine_id: str) -> None:
        """Forget a machine (its payments stay on record)."""
        self.store.remove_machine(machine_id)

    def get(self, machine_id: str) -> Machine:
        """Return a registered machine, or raise UnknownMachine (a 404 unknown_machine)."""
        machine = self.store.get_machine(machine_id)
        if machine is None:
            raise UnknownMachine(machine_id)
        return machine

    def is_admin(self, authorization: str | None) -> bool:
        """Return True when the header carries the operator's ADMIN_API_KEY."""
        token = bearer_token(authorization)
        return bool(
            token
            and self.admin_api_key
            and hmac.compare_digest(token_bytes(token), self.admin_api_key.encode())
        )

    def authorise(self, machine_id: str, authorization: str | None) -> Machine:
        """Return the machine when the header carries its token or the admin key."""
        token = bearer_token(authorization)
        if token is None:
            _refused("missing_credentials", machine_id)
            raise Unauthorized(
                "send Authorization: Bearer <machine token>", code="missing_credentials"
            )
        machine = self.get(machine_id)
        if self.is_admin(authorization) or hmac.compare_digest(
            hash_token(token).encode(), machine.token_hash.encode()
        ):
            return machine
        _refused("invalid_credentials", machine_id)
        raise Unauthorized("the token is not valid for this machine", code="invalid_credentials")

    def require_admin(self, authorization: str | None) -> None:
        """Raise unless the header carries ADMIN_API_KEY (admin HTTP is off without one)."""
        if not self.admin_api_key:
            raise ServiceUnavailable(
                "admin endpoints are off: set ADMIN_API_KEY (32 characters or more)",
                code="admin_off",
            )
        if bearer_token(authorization) is None:
            _refused("missing_credentials", None)
            raise Unauthorized(
                "send Authorization: Bearer <ADMIN_API_KEY>", code="missing_credentials"
            )
        if not self.is_admin(authorization):
            _refused("invalid_credentials", None)
            raise Unauthorized("the admin key is not valid", code="invalid_credentials")


def _refused(code: str, machine_id: str | None) -> None:
    """Log a refused credential (never the credential), a limited number a minute."""
    from flask import has_request_context, request

    path = request.path if has_request_context() else None
    REFUSALS.log(logger, "credentials_refused", code=code, machine_id=machine_id, path=path)


def bearer_token(authorization: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
