"""Typed values read from the environment, each bad one named in a sentence, never raised.

The API (``arcade.config``) and the cabinet (``arcade.cabinet.settings``) read their variables
with this one reader, so a variable means the same thing, and is refused in the same words, on
both sides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import SplitResult, urlsplit

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
Value = TypeVar("Value", int, float)


class EnvReader:
    """Read typed values from ``env``, collecting in ``problems`` a sentence for each bad one.

    Each sentence names the variable: ``"<NAME> must be <rule>"``. A bad value counts as unset
    (the default is returned), so one reading finds every problem at once.
    """

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []

    def problem(self, sentence: str) -> None:
        """Add a problem found by the caller (a rule between variables, say)."""
        self.problems.append(sentence)

    def text(self, name: str, *aliases: str) -> str | None:
        """Return the first of ``name`` and ``aliases`` set to more than white space, stripped."""
        for key in (name, *aliases):
            value = self.env.get(key, "").strip()
            if value:
                return value
        return None

    def flag(self, name: str, *, default: bool) -> bool:
        """Return true for 1/true/yes/on, false for 0/false/no/off (any case), else default."""
        value = self.text(name)
        if value is None:
            return default
        if value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        self.problem(f"{name} must be true or false")
        return default

    def integer(self, name: str, *aliases: str, default: int, low: int, high: int) -> int:
        """Return a whole number from ``low`` to ``high`` (both included), else default."""
        return self._between(name, aliases, int, "a whole number", default, low, high)

    def number(self, name: str, *, default: float, low: float, high: float) -> float:
        """Return a number from ``low`` to ``high`` (both included; never NaN), else default."""
        return self._between(name, (), float, "a number", default, low, high)

    def _between(
        self,
        name: str,
        aliases: tuple[str, ...],
        parse: Callable[[str], Value],
        described: str,
        default: Value,
        low: Value,
        high: Value,
    ) -> Value:
        return self.checked(
            name,
            *aliases,
            parse=parse,
            accept=lambda number: low <= number <= high,
            rule=f"{described} from {low} to {high}",
            default=default,
        )

    def checked(
        self,
        name: str,
        *aliases: str,
        parse: Callable[[str], Value],
        accept: Callable[[Value], bool],
        rule: str,
        default: Value,
    ) -> Value:
        """Return ``parse(value)`` when it parses and ``accept`` holds, else default.

        ``rule`` says what is accepted, for people: the problem is ``"<name> must be <rule>"``.
        """
        value = self.text(name, *aliases)
        if value is None:
            return default
        try:
            parsed = parse(value)
        except ValueError:
            parsed = None
        if parsed is None or not accept(parsed):
            self.problem(f"{name} must be {rule}")
            return default
        return parsed


def http_address(text: str) -> SplitResult | None:
    """Return the parts of ``text`` when it is an http:// or https:// address whose host is
    one (``is_host``) and whose port, if it gives one, is from 1 to 65535; else None
    (urlsplit's ValueError for a bracket left open or a port no socket has included). Whether
    a login in it is allowed, and where plain http may go, is the caller's to say."""
    try:
        parts = urlsplit(text)
        hostname = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not hostname or not is_host(hostname):
        return None
    return parts if port is None or port > 0 else None


# A DNS name (labels of letters, digits, - and _), with or without its final dot.
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")


def is_host(host: str) -> bool:
    """Return True for an IP address or a DNS name (no port, path, space, control or login in
    it): the one rule for every host a setting names (broker, Stripe stand-in, cabinet's API)."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _HOST_NAME.fullmatch(host) is not None
