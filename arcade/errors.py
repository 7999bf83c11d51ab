"""Every exception the service raises on purpose, and how each one reads to a person."""

from __future__ import annotations


class ArcadeError(Exception):
    """Base of the project's own exceptions."""


# --- store ----------------------------------------------------------------------------------
class StoreError(ArcadeError):
    """The store could not be reached or refused an operation."""


class MachineExists(StoreError):
    """A machine with this id is already registered."""

    def __init__(self, machine_id: str):
        super().__init__(f"machine {machine_id} is already registered")
        self.machine_id = machine_id


# Said of a request for an unknown machine, and of a payment that names one.
NOT_REGISTERED = "machine {} is not registered"


class UnknownMachine(StoreError):
    """No machine with this id is registered."""

    def __init__(self, machine_id: str):
        super().__init__(NOT_REGISTERED.format(machine_id))
        self.machine_id = machine_id


# --- settings -------------------------------------------------------------------------------
class SettingsError(ArcadeError):
    """A setting is missing or malformed; the message names it."""


# --- broker ---------------------------------------------------------------------------------
class BrokerUnavailable(ArcadeError):
    """The MQTT broker could not be reached, refused us, or did not acknowledge in time."""


class PublishCancelled(ArcadeError):
    """A message was not sent because what it announced was withdrawn meanwhile."""


class PublishRefused(BrokerUnavailable):
    """The broker answered a publish with an error reason code (MQTT 5 PUBACK ≥ 0x80)."""


# --- stripe ---------------------------------------------------------------------------------
class UnknownPayment(ArcadeError):
    """No payment with this id is on record (or, naming a machine, was granted to it)."""

    def __init__(self, payment_id: str, machine_id: str | None = None):
        super().__init__(
            f"machine {machine_id} has no payment {payment_id}"
            if machine_id is not None
            else f"there is no payment {payment_id}"
        )


class MachineOffline(ArcadeError):
    """A machine that sends heartbeats has not reported in: nobody may pay for it now."""


class GameOverInProgress(ArcadeError):
    """A game over with this Idempotency-Key is being sent by another request right now."""


class PaymentProviderError(ArcadeError):
    """Stripe failed or refused a call; the message is ours, never the library's."""


class PaymentRequestRefused(PaymentProviderError):
    """Stripe answered that the request itself is invalid (a 4xx InvalidRequestError): asking
    again will not help, what was sent must change."""


class InvalidSignature(ArcadeError):
    """A webhook body whose Stripe-Signature is missing, wrong or stale."""


class InvalidEvent(ArcadeError):
    """A signed event that lacks what its type must carry (a Checkout Session's id)."""


# --- HTTP -----------------------------------------------------------------------------------
class ApiError(ArcadeError):
    """An answer to an HTTP client: status, snake_case code and a sentence for a person."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class TooManyRequests(ApiError):
    status = 429
    code = "too_many_requests"


class ServiceUnavailable(ApiError):
    status = 503
    code = "unavailable"
