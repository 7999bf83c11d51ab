"""The game's door to the cabinet: a tiny HTTP server on 127.0.0.1.

``POST /game-over`` records a game over (one credit used) and answers 202 at once; sending it to
the API happens in the background, with retries. ``GET /credits`` tells the credits left.

Only programs on the cabinet may knock: a ``Host`` other than a loopback name (a DNS-rebound
page) and a cross-site request (an ``Origin`` other than this door's own, ``Origin: null``,
``Sec-Fetch-Site: cross-site``) get a 403, so a web page shown on the cabinet cannot spend its
credits. A POST must also be one a plain HTML form cannot send (``Content-Type:
application/json``, or an ``X-Requested-With`` header): a browser asks before sending such a
request to another origin, and this door never says yes (415 otherwise).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from arcade.common.logs import log_event

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
MAX_BODY_BYTES = 4096


class LocalServer:
    """Serve the game's calls on a background thread until ``close``."""

    def __init__(
        self,
        port: int,
        *,
        game_over: Callable[[], dict[str, Any]],
        status: Callable[[], dict[str, Any]],
    ):
        routes: dict[tuple[str, str], Callable[[], tuple[int, dict[str, Any]]]] = {
            ("POST", "/game-over"): lambda: (202, game_over()),
            ("GET", "/credits"): lambda: (200, status()),
        }
        self._server = ThreadingHTTPServer((LOOPBACK, port), _handler(routes))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="cabinet-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        log_event(logger, "local_http_listening", host=LOOPBACK, port=self.port)

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


def _handler(routes: dict[tuple[str, str], Callable[[], tuple[int, dict[str, Any]]]]):
    paths = {path for _, path in routes}

    class Handler(BaseHTTPRequestHandler):
        server_version = "arcade-cabinet"

        def do_GET(self) -> None:  # noqa: N802 - the standard library's naming
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

        def _route(self, method: str) -> None:
            if not self._from_this_cabinet():
                log_event(
                    logger,
                    "local_http_refused",
                    level=logging.WARNING,
                    host=(self.headers.get("Host") or "")[:100],
                    origin=(self.headers.get("Origin") or "")[:100],
                )
                self._answer(
                    403,
                    {"error": "only programs on this cabinet may call it", "code": "forbidden"},
                )
                return
            if method == "POST" and not self._not_a_form():
                self._answer(
                    415,
                    {
                        "error": "send Content-Type: application/json (a plain form cannot)",
                        "code": "unsupported_media_type",
                    },
                )
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self._answer(400, {"error": "bad Content-Length", "code": "bad_request"})
                return
            if length > MAX_BODY_BYTES:
                self._answer(413, {"error": "body too large", "code": "body_too_large"})
                return
            self.rfile.read(length)  # the body carries nothing we need; drain it
            path = self.path.split("?", 1)[0]
            route = routes.get((method, path))
            if route is not None:
                try:
                    answer = route()
                except Exception as exc:  # the state file failing, say: an answer, not a trace
                    log_event(
                        logger,
                        "local_http_failed",
                        level=logging.ERROR,
                        path=path,
                        exception=type(exc).__name__,
                    )
                    answer = (500, {"error": "the cabinet could not do it", "code": "failed"})
                self._answer(*answer)
            elif path in paths:
                self._answer(405, {"error": "method not allowed", "code": "method_not_allowed"})
            else:
                self._answer(404, {"error": "no such route", "code": "not_found"})

        def _not_a_form(self) -> bool:
            media_type = (self.headers.get("Content-Type") or "").split(";", 1)[0]
            return (
                media_type.strip().lower() == "application/json"
                or self.headers.get("X-Requested-With") is not None
            )

        def _from_this_cabinet(self) -> bool:
            host = self.headers.get("Host")
            if host is not None:
                name = host.strip().lower()
                name = name.rsplit(":", 1)[0] if not name.endswith("]") else name
                if name not in LOOPBACK_NAMES:
                    return False
            origin = self.headers.get("Origin")
            port = self.server.server_address[1]
            if origin is not None and origin not in (
                f"http://127.0.0.1:{port}",
                f"http://localhost:{port}",
            ):
                return False
            return (self.headers.get("Sec-Fetch-Site") or "").lower() != "cross-site"

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log_event(logger, "local_http_request", level=logging.DEBUG, line=format % args)

    return Handler
