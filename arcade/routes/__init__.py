"""Thin Blueprints: parse, authorise, call a service, shape the answer."""

from __future__ import annotations

import re
from typing import Any

from flask import Response, request

from arcade.common.jsontext import NotJson, TooDeep, load_json
from arcade.errors import BadRequest

IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,255}")


def idempotency_key() -> str | None:
    """Return the request's Idempotency-Key header (None when absent); raise BadRequest when it
    is not 1 to 255 visible ASCII characters."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest(
            "Idempotency-Key must be 1 to 255 visible characters", code="invalid_idempotency_key"
        )
    return key


def qr_kind(kind: str) -> str:
    """Return ``kind`` when a QR code is made in it (``arcade.qr.MEDIA_TYPES``); raise
    BadRequest naming the two there are."""
    from arcade import qr

    if kind not in qr.MEDIA_TYPES:
        raise BadRequest("the QR code comes as qr.png or qr.svg", code="invalid_format")
    return kind


# How long a browser or a cabinet may keep a QR code before asking again (seconds).
QR_MAX_AGE_SECONDS = 300


def qr_response(url: str, kind: str, *, vary: str | None = None) -> Response:
    """Return the QR code of ``url`` as ``kind`` (``qr_kind``), with an ETag and
    ``QR_MAX_AGE_SECONDS`` of public caching (``vary``: the request header ``url`` was made
    from); 304 when the request already holds it.

    Anyone may ask, so a request never waits for QR codes being drawn for others: a 429 when
    ``arcade.qr`` is busy, a 400 for an address too long to be a QR code.
    """
    from arcade import qr
    from arcade.errors import TooManyRequests

    tag = qr.etag(url, kind)
    headers = {"ETag": tag, "Cache-Control": f"public, max-age={QR_MAX_AGE_SECONDS}"}
    if vary:
        headers["Vary"] = vary
    if request.if_none_match.contains_weak(tag.strip('"')):
        return Response(status=304, headers=headers)
    try:
        # An image that varies with a request header is of an address the caller chose.
        image = qr.render(url, kind, wait=False, chosen_by_caller=vary is not None)
    except qr.TooLong as exc:
        raise BadRequest(
            f"{exc}: ask with this server's own host name", code="address_too_long"
        ) from exc
    except qr.Busy as exc:
        raise TooManyRequests(f"{exc} right now: try again in a moment") from exc
    return Response(image, mimetype=qr.MEDIA_TYPES[kind], headers=headers)


def json_body() -> dict[str, Any]:
    """Return the request's JSON object, or raise BadRequest in plain words.

    Deep nesting is refused before it can exhaust the parser's recursion, so no body, however
    built, reaches a route as anything but a dict or a 400.
    """
    try:
        body = load_json(request.get_data(cache=True))
    except TooDeep as exc:
        raise BadRequest(str(exc), code="invalid_json") from exc
    except NotJson:
        body = None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return body
