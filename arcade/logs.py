"""The API's logging: the shared JSON lines (``arcade.common.logs``), refusals rate-limited.

``log_event`` and ``JsonLineFormatter`` are the shared ones, re-exported so every server module
imports its logging from here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from arcade.common.logs import JsonLineFormatter, log_event
from arcade.common.logs import configure_logging as configure_json_lines

__all__ = [
    "REFUSALS",
    "JsonLineFormatter",
    "LibraryFlood",
    "RateLimited",
    "configure_logging",
    "log_event",
]

# Libraries whose INFO lines repeat our own events: stripe logs every request, waitress its
# start-up line (arcade.serve logs "serving" with the address).
QUIET_LIBRARIES = ("stripe", "waitress")


class RateLimited:
    """Let at most ``per_minute`` lines of one kind through each minute; count the rest.

    Refused tokens and signatures, and failures an anonymous caller can cause at will (a QR
    code asked for while Stripe is down, a queue of requests), are worth a warning each, but a
    flood must not fill a disk: past the limit, one line a minute says how many were left out.
    A kind is an event's name, or ``key`` when one event comes in several kinds.
    """

    def __init__(self, per_minute: int = 20):
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._window: dict[str, tuple[float, int, int]] = {}  # kind -> (start, sent, dropped)

    def log(
        self, logger: logging.Logger, event: str, *, key: str | None = None, **fields: Any
    ) -> None:
        """Log ``event`` as a warning unless its kind's allowance for the minute is spent."""
        if self.allow(logger, event if key is None else f"{event}:{key}"):
            log_event(logger, event, level=logging.WARNING, **fields)

    def allow(self, logger: logging.Logger, kind: str) -> bool:
        """Return whether one more line of ``kind`` may go out this minute, and spend it.

        The first line of a new minute after lines were left out says how many on ``logger``.
        """
        now = time.monotonic()
        with self._lock:
            start, sent, dropped = self._window.get(kind, (now, 0, 0))
            left_out = 0
            if now - start >= 60:
                start, sent, left_out, dropped = now, 0, dropped, 0
            allowed = sent < self.per_minute
            self._window[kind] = (start, sent + allowed, dropped + (not allowed))
        if left_out:
            log_event(
                logger, "log_lines_left_out", level=logging.WARNING, event_name=kind, count=left_out
            )
        return allowed


REFUSALS = RateLimited()


class LibraryFlood(logging.Filter):
    """Hold a library's warnings to ``RateLimited``'s allowance, per message template.

    waitress warns once per request that has to queue ("Task queue depth is N") and each time
    the connection limit is reached: anonymous traffic decides how often, so unfiltered a
    flood of requests is a flood of lines.
    """

    def __init__(self, limiter: RateLimited | None = None):
        super().__init__()
        self.limiter = limiter or RateLimited()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.levelno >= logging.ERROR:
            return True
        kind = f"{record.name}: {record.msg}"  # the template, not the text with its numbers
        return self.limiter.allow(logging.getLogger("arcade.logs"), kind)


# Libraries whose warnings a caller can provoke once per request.
FLOODING_LIBRARIES = ("waitress", "waitress.queue")


def configure_logging(level: int = logging.INFO) -> None:
    """Send every log record to stderr as a JSON line (idempotent); for entry points only."""
    configure_json_lines(level, quiet=QUIET_LIBRARIES)
    for name in FLOODING_LIBRARIES:
        library = logging.getLogger(name)
        if not any(isinstance(f, LibraryFlood) for f in library.filters):
            library.addFilter(LibraryFlood())
