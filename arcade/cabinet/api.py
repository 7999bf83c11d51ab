"""The cabinet's calls to the API, with capped exponential back-off and jitter.

Connection failures, timeouts, 408, 429 and 5xx are retried; any other 4xx (a wrong token,
an unknown machine) is final, since asking again cannot change the answer.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arcade.cabinet.errors import ApiUnreachable, CabinetSettingsError
from arcade.common.env import http_address
from arcade.common.logs import log_event

logger = logging.getLogger(__name__)

# 409: a game over with the same Idempotency-Key is still being sent by the API.
RETRYABLE_4XX = frozenset({408, 409, 429})
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait between attempts, and for how long to keep trying."""

    first_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    # Seconds after which a call gives up (the work stays queued); None: until it succeeds.
    give_up_after: float | None = None

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the wait after failed attempt number ``attempt``: half fixed, half random."""
        ceiling = min(self.max_delay, self.first_delay * self.multiplier ** (attempt - 1))
        return (rng or random).uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not secrets


@dataclass(frozen=True)
class Answer:
    """What the API answered, or ``status=None`` when it never did."""

    status: int | None
    body: dict[str, Any]
    attempts: int
    outcome: str  # "ok", "rejected" (final 4xx), "gave_up", "stopped"

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def called(self, ok: str, rejected: str, otherwise: str) -> str:
        """Return the word for this outcome: ``ok``, ``rejected``, else ``otherwise``."""
        return {"ok": ok, "rejected": rejected}.get(self.outcome, otherwise)


def retry(
    attempt: Callable[[], str | None],
    *,
    policy: RetryPolicy,
    stop: threading.Event,
    event: str,
    log_ids: dict[str, Any],
    may_give_up: bool = True,
    rng: random.Random | None = None,
) -> tuple[int, str]:
    """Call ``attempt`` until it returns None (done), with ``policy``'s back-off between calls.

    ``attempt`` returns None when there is nothing more to try, else the reason to try again
    (logged as ``event`` with ``log_ids``, the attempt's number and the wait in seconds).
    Returns (attempts made, "done" | "gave_up" | "stopped"): "gave_up" once the next wait would
    pass ``policy.give_up_after`` (only when ``may_give_up``), "stopped" when ``stop`` is set
    during a wait.
    """
    started = time.monotonic()
    number = 0
    while True:
        number += 1
        reason = attempt()
        if reason is None:
            return number, "done"
        delay = policy.delay(number, rng)
        elapsed = time.monotonic() - started
        limit = policy.give_up_after if may_give_up else None
        if limit is not None and elapsed + delay > limit:
            return number, "gave_up"
        log_event(
            logger,
            event,
            level=logging.WARNING,
            attempt=number,
            reason=reason,
            retry_in=round(delay, 3),
            **log_ids,
        )
        if stop.wait(delay):
            return number, "stopped"


def is_retryable(status: int) -> bool:
    """Tell whether an HTTP status is worth asking again for."""
    return status >= 500 or status in RETRYABLE_4XX


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: urllib would send the machine token (``Authorization``) on to
    whatever host the ``Location`` names, over plain http too, and turn a POST into a GET that
    some other server may answer 200 (a game over counted as sent that the API never got)."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


class _DeadlineResponse(http.client.HTTPResponse):
    """An answer that stops its connection's deadline timer once the caller closes it."""

    def close(self) -> None:
        super().close()
        cutoff = getattr(self, "_cutoff", None)
        if cutoff is not None:
            cutoff.cancel()


class _Deadline(http.client.HTTPConnection):
    """Cut the connection once its whole exchange (connect, request, answer) has taken its
    ``timeout``: a socket timeout bounds each read alone, so an answer that trickled in a
    byte at a time held a caller's thread, and the cabinet's SIGTERM, without end."""

    response_class = _DeadlineResponse

    def connect(self) -> None:
        timer = threading.Timer(self.timeout, self._cut)
        timer.daemon = True
        self._cutoff = timer
        timer.start()
        super().connect()
        # urllib drops its hold on the socket before the answer is read; keep one to cut.
        self._held = self.sock

    def _cut(self) -> None:
        held = getattr(self, "_held", None) or self.sock
        if held is not None:
            # shutdown wakes a read blocked in another thread (close would not); a socket
            # already closed raises OSError, which means the exchange is over anyway.
            with contextlib.suppress(OSError):
                held.shutdown(socket.SHUT_RDWR)

    def getresponse(self) -> http.client.HTTPResponse:
        # An answer that closes the connection (HTTP/1.0, or "Connection: close", which most
        # servers send back to urllib's) makes getresponse close it before the body is read:
        # the timer moves to the response, cancelled once the caller has closed that.
        cutoff, self._cutoff = getattr(self, "_cutoff", None), None
        try:
            response = super().getresponse()
        except BaseException:
            if cutoff is not None:
                cutoff.cancel()
            raise
        response._cutoff = cutoff  # type: ignore[attr-defined]
        return response

    def close(self) -> None:
        cutoff = getattr(self, "_cutoff", None)
        if cutoff is not None:
            cutoff.cancel()
        super().close()


class _DeadlineHTTPS(_Deadline, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(_Deadline, req, **kwargs)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(_DeadlineHTTPS, req, **kwargs)


class ApiClient:
    """Call the API with the machine's token: JSON in, JSON out.

    A redirect is never followed: it raises ApiUnreachable("redirected") and the call is tried
    again later, as when the API is down (the API's endpoints never redirect; an address that
    does, http:// behind an https-only proxy say, needs --api-url fixed). Each call, answer
    included, ends within ``timeout`` seconds (ApiUnreachable after that), however slowly the
    other end sends.
    """

    def __init__(self, api_url: str, token: str | None, *, timeout: float = 5.0):
        parts = http_address(api_url)  # a bracket left open, a bad port: a sentence
        if parts is None:
            raise CabinetSettingsError("--api-url must be an http:// or https:// address")
        if parts.username is not None or parts.password is not None:
            # The token is the cabinet's credential; urllib would take the login for the host
            # name and retry forever. Named by the rule alone: the sentence is printed.
            raise CabinetSettingsError("--api-url must not hold a login (the token is sent)")
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(
            _NoRedirects, _DeadlineHTTPHandler, _DeadlineHTTPSHandler
        )

    def post(
        self, path: str, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST once; return (status, JSON body) or raise ApiUnreachable."""
        headers = {"Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return self._send("POST", path, json.dumps(body).encode(), headers, token=True)

    def get(self, path: str, *, token: bool = True) -> tuple[int, dict[str, Any]]:
        """GET once, with the token unless ``token`` is False; return (status, JSON body)."""
        return self._send("GET", path, None, {}, token=token)

    def _send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str],
        *,
        token: bool,
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Accept": "application/json", **headers}
        if token and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            self.api_url + path, data=data, headers=headers, method=method
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, _json(_whole_answer(response))
        except urllib.error.HTTPError as exc:
            with exc:
                if 300 <= exc.code < 400:
                    raise ApiUnreachable("redirected") from exc
                # The status decides what an error answer means; its body only says why.
                return exc.code, _json(exc.read(MAX_ANSWER_BYTES))
        except urllib.error.URLError as exc:
            raise ApiUnreachable(type(exc.reason).__name__) from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise ApiUnreachable(type(exc).__name__) from exc

    def post_with_retry(
        self,
        path: str,
        body: dict[str, Any],
        *,
        policy: RetryPolicy,
        stop: threading.Event,
        log_ids: dict[str, Any],
        idempotency_key: str | None = None,
        final: Callable[[int], bool] | None = None,
        rng: random.Random | None = None,
    ) -> Answer:
        """POST until the API accepts, refuses for good, ``policy`` gives up, or ``stop`` is set.

        ``final(status)`` tells which error answers end the attempts ("rejected"); by default
        every 4xx but 408, 409 and 429.
        """
        is_final = final or (lambda status: not is_retryable(status))
        last: dict[str, Any] = {"status": None, "body": {}, "outcome": None}

        def attempt() -> str | None:
            last.update(status=None, body={})
            try:
                # Every attempt carries the same key, so one the API handled but whose answer
                # was lost counts once.
                status, answer = self.post(path, body, idempotency_key=idempotency_key)
            except ApiUnreachable as exc:
                return exc.reason
            last.update(status=status, body=answer)
            if 200 <= status < 300:
                last["outcome"] = "ok"
                return None
            if is_final(status):
                last["outcome"] = "rejected"
                return None
            return f"http_{status}"

        attempts, outcome = retry(
            attempt,
            policy=policy,
            stop=stop,
            event="api_retry",
            log_ids={"path": path, **log_ids},
            rng=rng,
        )
        return Answer(last["status"], last["body"], attempts, last["outcome"] or outcome)


def _whole_answer(response: Any) -> bytes:
    """Return a 2xx answer's body, at most ``MAX_ANSWER_BYTES``; raise
    http.client.IncompleteRead when it ended before its Content-Length (the deadline cut it,
    or the server closed early): a success cut short is no answer, never a 200 with an empty
    body (a pulse key, a state the cabinet would act on)."""
    raw = response.read(MAX_ANSWER_BYTES)
    left = getattr(response, "length", None)  # what Content-Length still promised
    if left and len(raw) < MAX_ANSWER_BYTES:
        raise http.client.IncompleteRead(raw, left)
    return raw


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}
