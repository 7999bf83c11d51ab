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

__all__ = ["REFUSALS", "JsonLineFormatter", "RateLimited", "configure_logging", "log_event"]

# Libraries whose INFO lines repeat our own events: stripe logs every request, waitress its
# start-up line (arcade.serve logs "serving" with the address).
QUIET_LIBRARIES = ("stripe", "waitress")


class RateLimited:
    """Let at most ``per_minute`` lines of one event through each minute; count the rest.

    Refused tokens and signatures are worth a warning each, but an anonymous flood must not
    fill a disk: past the limit, one line a minute says how many were left out.
    """

    def __init__(self, per_minute: int = 20):
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._window: dict[str, tuple[float, int, int]] = {}  # event -> (start, sent, dropped)

    def log(self, logger: logging.Logger, event: str, **fields: Any) -> None:
        """Log ``event`` as a warning unless its minute's allowance is spent."""
        now = time.monotonic()
        with self._lock:
            start, sent, dropped = self._window.get(event, (now, 0, 0))
            if now - start >= 60:
                if dropped:
                    log_event(
                        logger,
                        "log_lines_left_out",
                        level=logging.WARNING,
                        event_name=event,
                        count=dropped,
                    )
                start, sent, dropped = now, 0, 0
            if sent >= self.per_minute:
                self._window[event] = (start, sent, dropped + 1)
                return
            self._window[event] = (start, sent + 1, dropped)
        log_event(logger, event, level=logging.WARNING, **fields)


REFUSALS = RateLimited()


def configure_logging(level: int = logging.INFO) -> None:
    """Send every log record to stderr as a JSON line (idempotent); for entry points only."""
    configure_json_lines(level, quiet=QUIET_LIBRARIES)
