"""Time: aware UTC datetimes inside the code, and the one text form instants take outside it.

Records hold ``datetime`` instants; the stores write them with ``iso`` (ISO 8601 UTC strings
that sort in time order) and read them back with ``parse_iso``. What leaves the process (JSON
answers, log lines, pages) writes instants with ``iso`` too, so the text is the same everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

# The longest IANA zone name is 32 characters (America/Argentina/ComodRivadavia); a longer
# text is nobody's zone, and one over the file system's name limit made zoneinfo raise OSError.
MAX_ZONE_NAME = 64
# Names the zone database answers that are no place's time: "localtime" is whatever the host
# is set to, "Factory" and "posixrules" are placeholders of the database itself.
NOT_PLACES = frozenset({"localtime", "Factory", "posixrules"})


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Return ``moment`` as ``2026-11-22T10:00:00.123456Z`` (fixed width, so it sorts).

    ``isoformat`` always writes four digits of year, where ``strftime("%Y")`` writes ``1`` for
    the year 1 on Linux; it is also the faster of the two. Raises ValueError for a naive
    datetime: ``astimezone`` would take it for this machine's local time, silently.
    """
    if moment.tzinfo is None:
        raise ValueError(f"a naive datetime is no instant: {moment.isoformat()} has no zone")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def iso_or_none(moment: datetime | None) -> str | None:
    """Return ``iso(moment)``, or None for None (an optional instant on its way out)."""
    return None if moment is None else iso(moment)


def iso_seconds(moment: datetime) -> str:
    """Return ``moment`` as ``2026-11-22T10:00:00Z``, the coinpulse's timestamp form (four
    digits of year always, as ``iso`` writes them)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def from_unix(seconds: int | float) -> datetime:
    """Return the UTC datetime of a Unix timestamp."""
    return datetime.fromtimestamp(seconds, UTC)


def parse_iso(text: str) -> datetime:
    """Return the datetime of a string written by ``iso``; raise ValueError for any other."""
    if len(text) != 27 or text[-1] != "Z" or text[10] != "T":
        raise ValueError(f"not an instant written by iso(): {text[:40]!r}")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def later(moment: datetime, seconds: float) -> datetime:
    """Return ``moment`` plus ``seconds``."""
    return moment + timedelta(seconds=seconds)


def zone_named(name: object) -> ZoneInfo | None:
    """Return the IANA time zone called ``name``, or None when it names none.

    The one rule for every zone an operator or a caller names (a machine's ``timezone``, a
    report's ``tz``): a string of 1 to 64 characters that the zone database holds as a place.
    zoneinfo raises more than ZoneInfoNotFoundError for a name that is no zone: ValueError for
    ``../x`` or a NUL, IsADirectoryError for a folder of the database (``Europe``), OSError
    for a name over the file system's limit; each is None here, never a 500.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(name, str) or not 0 < len(name) <= MAX_ZONE_NAME or name in NOT_PLACES:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
