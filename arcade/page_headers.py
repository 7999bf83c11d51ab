"""Security headers on every answer the app draws itself (SPEC "HTTP", "Operators").

The /admin pages and the player's page are HTML styled inline and drawn from one origin,
with one script: the question a Refund button asks first (``ASK_FIRST``), allowed by its
hash. A page of another site may not frame them (clickjacking an operator's Refund or Make a
new token button), a browser may not guess another type for any answer, and nothing on a
page may load or post anywhere else. Decided here, once, for every route and error page,
through ``python app.py`` and Lambda alike.
"""

from __future__ import annotations

import base64
import hashlib

from flask import Flask, Response

# The one script the pages run, as a form's onsubmit: a refund asks first (a mis-tap on a
# phone would send money back). The question's words travel in the form's data-ask, so this
# text is the same on every row and the policy allows it by its hash alone ('unsafe-hashes'
# is how an event handler attribute is allowed), never any other script.
ASK_FIRST = (
    "return confirm(this.dataset.ask.replace('{amount}', "
    "this.amount.value || this.amount.placeholder))"
)
_ASK_FIRST_HASH = base64.b64encode(hashlib.sha256(ASK_FIRST.encode()).digest()).decode()
# That script alone; the pages' <style> blocks and style="" attributes; the QR codes are
# inline SVG; forms post to these pages only; no other site may frame them.
PAGE_POLICY = (
    f"default-src 'none'; script-src 'unsafe-hashes' 'sha256-{_ASK_FIRST_HASH}'; "
    "style-src 'unsafe-inline'; img-src 'self' data:; "
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
    app.jinja_env.globals["ask_first"] = ASK_FIRST
    app.after_request(add_security_headers)
