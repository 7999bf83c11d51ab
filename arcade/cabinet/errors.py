"""Every exception the cabinet raises on purpose; each message is for the person running it."""

from __future__ import annotations


class CabinetError(Exception):
    """Base of the cabinet's own exceptions."""


class CabinetSettingsError(CabinetError):
    """A setting is missing or malformed; the message names the flag or variable."""


class CoinActionError(CabinetError):
    """The coin action cannot run (a missing library, a pin that cannot be opened)."""


class ApiUnreachable(CabinetError):
    """The API did not answer: refused, timed out, or the connection broke."""

    def __init__(self, reason: str):
        super().__init__(f"the API did not answer ({reason})")
        self.reason = reason
