"""Thin Blueprints: parse, authorise, call a service, shape the answer."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from arcade.errors import BadRequest

# SPEC "HTTP": JSON nested deeper than this is a 400, whoever sends it.
MAX_JSON_DEPTH = 32
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


def json_body() -> dict[str, Any]:
    """Return the request's JSON object, or raise BadRequest in plain words.

    Deep nesting is refused before it can exhaust the parser's recursion, so no body, however
    built, reaches a route as anything but a dict or a 400.
    """
    raw = request.get_data(cache=True)
    if _nesting(raw) > MAX_JSON_DEPTH:
        raise BadRequest(
            f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_json"
        )
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return body


def _nesting(raw: bytes) -> int:
    """Return the deepest bracket nesting in a JSON text, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest
