"""One JSON error shape for every failure: {"error": sentence, "code": snake_case}."""

from __future__ import annotations

import logging

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from arcade.errors import (
    ApiError,
    BrokerUnavailable,
    GameOverInProgress,
    MachineExists,
    MachineOffline,
    PaymentProviderError,
    PublishRefused,
    SettingsError,
    StoreError,
    UnknownMachine,
    UnknownPayment,
)
from arcade.logs import RateLimited, log_event

logger = logging.getLogger(__name__)

HTTP_CODES = {
    400: ("bad_request", "the request could not be read"),
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "this route does not take that method"),
    413: ("body_too_large", "the body is over 256 KiB"),
    415: ("unsupported_media_type", "send the body as JSON"),
    431: ("headers_too_large", "the request's headers are too large"),
    500: ("internal_error", "something went wrong on our side"),
    501: ("not_implemented", "the request uses an HTTP feature this server does not support"),
}


# status, code, and whether the failure is worth a log line (an operator must act on it).
OWN_ERRORS: dict[type[Exception], tuple[int, str, bool]] = {
    SettingsError: (503, "not_configured", True),
    BrokerUnavailable: (503, "broker_unavailable", True),
    PublishRefused: (503, "mqtt_publish_refused", True),
    PaymentProviderError: (502, "stripe_error", True),
    MachineExists: (409, "machine_exists", False),
    GameOverInProgress: (409, "game_over_in_progress", False),
    MachineOffline: (409, "machine_offline", False),
    UnknownPayment: (404, "unknown_payment", False),
    UnknownMachine: (404, "unknown_machine", False),
    StoreError: (503, "store_unavailable", True),
}


def error_body(status: int, code: str, message: str):
    """Return a Flask response tuple in the project's error shape."""
    return {"error": message, "code": code}, status


def register_error_handlers(app: Flask) -> None:
    """Answer every error as JSON, with our words and no trace."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return error_body(exc.status, exc.code, exc.message)

    def answer_with(status: int, code: str, logged: bool):
        def answer(exc: Exception):
            if logged:
                _log(code, exc)
            return error_body(status, code, str(exc))

        return answer

    # Our own exceptions carry sentences written for a person; the most specific class wins.
    for kind, (status, code, logged) in OWN_ERRORS.items():
        app.register_error_handler(kind, answer_with(status, code, logged))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path == "/admin" or request.path.startswith("/admin/"):
            # A method no /admin route takes (PUT /admin/login) fails before the admin
            # Blueprint is known: the operator's pages answer with a page, not JSON.
            from arcade.admin import http_error as page_error

            return page_error(exc)
        status = exc.code or 500
        code, message = HTTP_CODES.get(status, ("http_error", "the request failed"))
        body, _ = error_body(status, code, message)
        # Keep werkzeug's headers that matter to the client, e.g. Allow on a 405.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return body, status, headers

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        # The type name only: an exception's text can carry library internals or secrets.
        log_event(
            logger,
            "unexpected_error",
            level=logging.ERROR,
            path=request.path,
            error=type(exc).__name__,
        )
        return error_body(500, *HTTP_CODES[500])


# Anyone can ask for a QR code while Stripe is down, or call while the store is: each such
# answer is worth a warning, a limited number a minute of each code (SPEC "HTTP").
FAILURES = RateLimited()


def _log(code: str, exc: Exception) -> None:
    FAILURES.log(logger, "request_failed", key=code, path=request.path, code=code, reason=str(exc))
