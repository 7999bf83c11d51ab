"""Thin Blueprints: parse, authorise, call a service, shape the answer."""

from __future__ import annotations

from typing import Any

from flask import request

from arcade.errors import BadRequest


def json_body() -> dict[str, Any]:
    """Return the request's JSON object, or raise BadRequest in plain words."""
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return body
