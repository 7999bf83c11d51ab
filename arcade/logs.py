"""The API's logging: the shared JSON lines (``arcade.common.logs``), refusals rate-limited.

``log_event``, ``JsonLineFormatter`` and ``RateLimited`` are the shared ones, re-exported so
every server module imports its logging from here.
"""

from __future__ import annotations

import logging

from arcade.common.logs import JsonLineFormatter, RateLimited, log_event
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
# start-up line (arcade.serve logs "serving" with the address); botocore says where it found
# credentials and endpoints, a line before the one sentence of a start-up problem.
QUIET_LIBRARIES = ("stripe", "waitress", "botocore")

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
