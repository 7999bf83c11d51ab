"""Time as the ledger writes it: ISO 8601 UTC strings that sort in time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Return ``moment`` as ``2026-11-22T10:00:00.123456Z`` (fixed width, so it sorts).

    ``isoformat`` always writes four digits of year, where ``strftime("%Y")`` writes ``1`` for
    the year 1 on Linux; it is also the faster of the two.
    """
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def iso_seconds(moment: datetime) -> str:
    """Return ``moment`` as ``2026-11-22T10:00:00Z``, the coinpulse's timestamp form."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
