"""The API's logging: the shared JSON lines (``arcade.common.logs``), refusals rate-limited.

``log_event``, ``JsonLineFormatter`` and ``RateLimited`` are the shared ones, re-exported so
every server module imports its logging from here.
"""

from __future__ import annotations

import logging

from arcade.common.logs import JsonLineFormatter, RateLimited, log_event
from arcade.common.logs import configure_logging as configure_json_lines

__all__ = ["REFUSALS", "JsonLineFormatter", "RateLimited", "configure_logging", "log_event"]

# Libraries whose INFO lines repeat our own events: stripe logs every request, waitress its
# start-up line (arcade.serve logs "serving" with the address).
QUIET_LIBRARIES = ("stripe", "waitress")

REFUSALS = RateLimited()


def configure_logging(level: int = logging.INFO) -> None:
    """Send every log record to stderr as a JSON line (idempotent); for entry points only."""
    configure_json_lines(level, quiet=QUIET_LIBRARIES)
