"""One JSON line per event, with the ids that tie a payment to its coinpulse.

The API and the cabinet write the same lines: ``{"ts", "level", "logger", "event", <fields>}``
for an event logged with ``log_event``, ``{"ts", "level", "logger", "message"}`` for a library's
own record. Fields stay JSON values (objects nest as objects); anything else is its ``str``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

# One encoder for every line: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


class JsonLineFormatter(logging.Formatter):
    """Format each record as one JSON object; never include a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields is not None:
            line["event"] = record.getMessage()
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        # Exception text may carry library internals or secrets: name the type only.
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
        return _ENCODER.encode(line)


def log_event(
    logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Log ``event`` with ``fields`` as one JSON line."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})


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


def configure_logging(level: int = logging.INFO, *, quiet: Iterable[str] = ()) -> None:
    """Send every log record to stderr as a JSON line (idempotent); for entry points only.

    ``quiet`` names loggers held at WARNING: libraries whose INFO lines repeat our own events.
    """
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonLineFormatter) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLineFormatter())
        root.handlers = [handler]
        root.setLevel(level)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
