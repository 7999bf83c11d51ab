"""Time as the ledger writes it: ISO 8601 UTC strings that sort in time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Return ``moment`` as ``2026-11-22T10:00:00.123456Z`` (fixed width, so it sorts)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_seconds(moment: datetime) -> str:
    """Return ``moment`` as ``2026-11-22T10:00:00Z``, the coinpulse's timestamp form."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_unix(seconds: int | float) -> datetime:
    """Return the UTC datetime of a Unix timestamp."""
    return datetime.fromtimestamp(seconds, UTC)


def parse_iso(text: str) -> datetime:
    """Return the datetime of a string written by ``iso``."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def later(moment: datetime, seconds: float) -> datetime:
    """Return ``moment`` plus ``seconds``."""
    return moment + timedelta(seconds=seconds)
