"""Security headers on every answer the app draws itself (SPEC "HTTP", "Operators").

The /admin pages and the player's page are HTML with no script, styled inline and drawn
from one origin: a page of another site may not frame them (clickjacking an operator's
Refund or Make a new token button), a browser may not guess another type for any answer, and
nothing on a page may load or post anywhere else. Decided here, once, for every route and
error page, through ``python app.py`` and Lambda alike.
"""

from __future__ import annotations

from flask import Flask, Response

# No script at all; the pages' <style> blocks and style="" attributes; the QR codes are
# inline SVG; forms post to these pages only; no other site may frame them.
PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# Media types a browser renders as a document (an SVG opened on its own may run script).
DOCUMENTS = ("text/html", "image/svg+xml")


def add_security_headers(response: Response) -> Response:
    """Set nosniff on every answer, and on documents the page policy, DENY framing and no
    Referer to other sites (a player's page links to Stripe)."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype in DOCUMENTS:
        headers.setdefault("Content-Security-Policy", PAGE_POLICY)
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "same-origin")
    return response


def init_app(app: Flask) -> None:
    app.after_request(add_security_headers)
