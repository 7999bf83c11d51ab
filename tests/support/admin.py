"""Logging an operator into the /admin pages through a Flask test client."""

from __future__ import annotations

import re
from typing import Any

from tests.support.app import ADMIN_KEY


def csrf_of(page: bytes) -> str:
    """Return the CSRF token a page's forms carry."""
    found = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1).decode()


def login(client: Any, key: str = ADMIN_KEY, **environ: Any) -> Any:
    """Send the login form with ``key`` and its CSRF token; return the answer."""
    token = csrf_of(client.get("/admin/login", **environ).data)
    return client.post("/admin/login", data={"key": key, "csrf_token": token}, **environ)
