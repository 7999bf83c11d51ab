"""Who may use the cabinet's local HTTP door: programs on the cabinet, never a web page.

SPEC "Serving locally": the door answers only loopback ``Host`` names and refuses cross-site
requests with a 403, so a web page shown on the cabinet cannot spend its credits. Each rule
here closes one way a browser could be made to knock:

- DNS rebinding: a page whose own name now resolves to 127.0.0.1 sends its name as ``Host``.
  The name must be loopback by ``arcade.wire.is_loopback`` (``localhost``, 127.0.0.0/8,
  ``[::1]``; no lookup), with at most a numeric port. ``Host`` must be there exactly once
  (RFC 9112 3.2: an HTTP/1.1 request without one, or with two, is a 400); an HTTP/1.0 program
  may leave it out. An absolute-form target (``GET http://name/credits``) names the host
  itself, and that name is judged instead.
- Another origin: ``Origin`` (sent by browsers with every POST and every CORS request) must be
  the door's own ``http://127.0.0.1:<port>`` or ``http://localhost:<port>``; ``null`` (a
  sandboxed frame, a ``data:`` or ``file:`` page) is refused. A browser that sends no
  ``Origin`` still names the page in ``Referer``: one from elsewhere is refused too.
- ``Sec-Fetch-Site`` other than ``same-origin`` or ``none`` (the user typed the address):
  ``cross-site`` and ``same-site`` (another port, another subdomain) are other origins.
- A header these rules read given twice is refused (``Host`` with a 400, as RFC 9112 says; the
  others with a 403): which copy counts would be a guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from arcade.wire import is_loopback

# A Host value: a name or an IPv4 address, or an IPv6 address in brackets, then an optional
# numeric port. Anything else (userinfo, a path, a second colon, a port that is not digits) is
# not a Host a browser sends for this door.
HOST_PATTERN = re.compile(
    r"(?P<name>\[[0-9A-Fa-f:.]+\]|[^\s\[\]:@/\\?#]+)(?::(?P<port>[0-9]{1,5}))?"
)
SAFE_FETCH_SITES = frozenset({"same-origin", "none"})
SINGLE_HEADERS = ("Host", "Origin", "Referer", "Sec-Fetch-Site")  # Host first


@dataclass(frozen=True)
class Refusal:
    """Why a request is turned away: HTTP ``status``, the answer's ``code``, and ``reason``
    for the log (never anything the caller sent)."""

    status: int
    code: str
    reason: str


def split_target(target: str) -> tuple[str | None, str]:
    """Return (the authority named by an absolute-form target or None, the path).

    ``http://127.0.0.1:8765/credits?x`` gives ``("127.0.0.1:8765", "/credits")``; an
    origin-form target ``/credits?x`` gives ``(None, "/credits")``; a target that is neither
    (another scheme, one urlsplit cannot read) gives ``("", target)``, judged as an empty Host.
    """
    if target.startswith("/"):
        return None, target.split("?", 1)[0]
    try:
        parts = urlsplit(target)
    except ValueError:  # a bracket left open or holding a name: no host can be told from it
        return "", target
    if parts.scheme.lower() != "http":
        return "", target  # not a target this door serves: judged as an empty Host
    return parts.netloc, parts.path or "/"


def refusal(
    *,
    version: str,
    authority: str | None,
    headers: dict[str, Sequence[str]],
    port: int,
) -> Refusal | None:
    """Return why this request may not use the door, or None when it may.

    ``headers`` maps each name in SINGLE_HEADERS to every value received for it;
    ``authority`` is what an absolute-form target named (None for an origin-form one);
    ``port`` is the door's own port.
    """
    if len(headers.get("Host", ())) > 1:
        return Refusal(400, "bad_request", "Host given more than once")
    for name in SINGLE_HEADERS[1:]:
        if len(headers.get(name, ())) > 1:  # which one a browser meant cannot be told
            return Refusal(403, "forbidden", f"{name} given more than once")
    host = authority if authority is not None else _first(headers, "Host")
    if host is None:
        if version != "HTTP/1.0":
            return Refusal(400, "bad_request", "no Host")
    elif not is_loopback_host(host):
        return Refusal(403, "forbidden", "Host is not a loopback name")
    own = (f"http://127.0.0.1:{port}", f"http://localhost:{port}")
    origin = _first(headers, "Origin")
    if origin is not None and origin.strip() not in own:
        return Refusal(403, "forbidden", "Origin is another origin")
    referer = _first(headers, "Referer")
    if origin is None and referer is not None and _origin_of(referer) not in own:
        return Refusal(403, "forbidden", "Referer is another origin")
    site = _first(headers, "Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in SAFE_FETCH_SITES:
        return Refusal(403, "forbidden", "Sec-Fetch-Site is not same-origin")
    return None


def is_loopback_host(value: str) -> bool:
    """Tell whether a ``Host`` value names this computer: a loopback name, a numeric port."""
    match = HOST_PATTERN.fullmatch(value.strip())
    if match is None:
        return False
    port = match.group("port")
    if port is not None and not 0 < int(port) <= 65535:
        return False
    return is_loopback(match.group("name"))


def _first(headers: dict[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name, ())
    return values[0] if values else None


def _origin_of(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "http" or not parts.hostname:
        return None
    return f"http://{parts.hostname}:{port}" if port else f"http://{parts.hostname}"
