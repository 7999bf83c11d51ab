"""The game's door to the cabinet: a tiny HTTP server on 127.0.0.1.

``POST /game-over`` records a game over (one credit used) and answers 202 at once; sending it to
the API happens in the background, with retries. ``GET /credits`` (and ``HEAD``) tells the
credits left. Any other method is a 405, any other path a 404, a request that is not HTTP a
400; every answer is JSON, one request per connection.

Only programs on the cabinet may knock (``arcade.cabinet.callers`` says who: loopback ``Host``
names, no other origin; 403 otherwise), so a web page shown on the cabinet cannot spend its
credits. A POST must also be one a plain HTML form cannot send (``Content-Type:
application/json``, or an ``X-Requested-With`` header): a browser asks before sending such a
request to another origin, and this door never says yes (415 otherwise).

Idle or slow connections cost no thread and cannot pile up: connections are served by one
asyncio loop, a whole request must arrive within REQUEST_SECONDS, and past MAX_CONNECTIONS still
waiting for their request the oldest is closed (file descriptors are the cabinet's: its broker
link and state file need some too).
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from arcade.cabinet.callers import SINGLE_HEADERS, refusal, split_target
from arcade.common.logs import RateLimited, log_event

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
MAX_BODY_BYTES = 4096
MAX_LINE_BYTES = 8192  # the request line and each header line
MAX_HEAD_BYTES = 32768  # the request line and all headers together
# A program on the cabinet sends its whole request at once; one not in within this is dropped.
REQUEST_SECONDS = 5.0
MAX_CONNECTIONS = 128
LISTEN_BACKLOG = 128  # a burst of connections waits here instead of having its SYNs dropped
FORBIDDEN = "only programs on this cabinet may call it"
VERSION_PATTERN = re.compile(r"HTTP/1\.[01]")
Route = Callable[[], tuple[int, dict[str, Any]]]


class LocalServer:
    """Serve the game's calls on a background thread until ``close``.

    Raises OSError from the constructor when the port cannot be bound.
    """

    def __init__(
        self,
        port: int,
        *,
        game_over: Callable[[], dict[str, Any]],
        status: Callable[[], dict[str, Any]],
    ):
        self._routes: dict[tuple[str, str], Route] = {
            ("POST", "/game-over"): lambda: (202, game_over()),
            ("GET", "/credits"): lambda: (200, status()),
        }
        # Bound here, so a port in use is the constructor's error and not the thread's.
        self._socket = socket.create_server((LOOPBACK, port), backlog=LISTEN_BACKLOG)
        self.port = int(self._socket.getsockname()[1])
        self._refusals = RateLimited()
        # Connections whose request is not read yet, oldest first (used on the loop's thread).
        self._waiting: dict[int, asyncio.StreamWriter] = {}
        self._writers: set[asyncio.StreamWriter] = set()  # every open connection
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="cabinet-http", daemon=True)

    def start(self) -> None:
        """Start serving; raises what starting the asyncio server raised (after ``close``)."""
        self._thread.start()
        opening = asyncio.start_server(self._connection, sock=self._socket, limit=MAX_LINE_BYTES)
        try:
            self._server = asyncio.run_coroutine_threadsafe(opening, self._loop).result(10)
        except BaseException:
            self.close()
            raise
        log_event(logger, "local_http_listening", host=LOOPBACK, port=self.port)

    def close(self) -> None:
        """Stop serving, drop open connections and release the port."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        elif not self._loop.is_closed():
            self._loop.close()  # never started
        self._socket.close()

    # --- the loop's thread ----------------------------------------------------------------------
    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            if self._server is not None:
                self._server.close()
            # Dropped, not cancelled: each connection's task then ends as for a caller that
            # hung up (asyncio logs an ERROR for a cancelled one).
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = asyncio.all_tasks(loop)
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=REQUEST_SECONDS))
            loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._waiting) >= MAX_CONNECTIONS:
            # A program on the cabinet sends its request as it connects: the connection that
            # has waited longest is the idle one, so a flood of them never locks the game out.
            oldest = next(iter(self._waiting))
            self._waiting.pop(oldest).transport.abort()
        self._waiting[id(writer)] = writer
        self._writers.add(writer)
        try:
            answer = await self._serve(reader, writer)
            writer.write(answer)
            await asyncio.wait_for(writer.drain(), REQUEST_SECONDS)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # gone, too slow, or dropped for a newer one: nobody to answer
        finally:
            self._waiting.pop(id(writer), None)
            self._writers.discard(writer)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        """Read one request (within REQUEST_SECONDS) and return the bytes of its answer."""
        read = await asyncio.wait_for(self._read(reader), REQUEST_SECONDS)
        self._waiting.pop(id(writer), None)  # read whole: no longer idle
        if isinstance(read, bytes):
            return read
        route = self._routes[(read.route_method, read.path)]
        try:
            status, body = await asyncio.get_running_loop().run_in_executor(None, route)
        except Exception as exc:  # the state file failing, say: an answer, not a trace
            log_event(
                logger,
                "local_http_failed",
                level=logging.ERROR,
                path=read.path,
                exception=type(exc).__name__,
            )
            status, body = 503, {"error": "the cabinet could not do it now", "code": "failed"}
        return _answer(status, body, head_only=read.method == "HEAD")

    async def _read(self, reader: asyncio.StreamReader) -> _Request | bytes:
        """Return the request once read whole, or the answer that refuses it."""
        try:
            request = await _read_head(reader)
        except _BadRequest as bad:
            return _answer(
                bad.status, {"error": "not an HTTP request this door reads", "code": "bad_request"}
            )
        answer = self._decide(request)
        if answer is not None:
            return answer
        length = _content_length(request.headers)
        if isinstance(length, bytes):
            return length
        await reader.readexactly(length)  # the body carries nothing the door needs
        return request

    def _decide(self, request: _Request) -> bytes | None:
        """Return the answer that refuses ``request`` before its body is read, or None."""
        head_only = request.method == "HEAD"
        refused = refusal(
            version=request.version,
            authority=request.authority,
            headers={name: request.headers.get_all(name) or [] for name in SINGLE_HEADERS},
            port=self.port,
        )
        if refused is not None:
            self._refused(request, refused.reason)
            text = FORBIDDEN if refused.status == 403 else f"bad request: {refused.reason}"
            return _answer(refused.status, {"error": text, "code": refused.code}, head_only)
        if (request.route_method, request.path) not in self._routes:
            allowed = {method for method, path in self._routes if path == request.path}
            if not allowed:
                return _answer(404, {"error": "no such route", "code": "not_found"}, head_only)
            allowed |= {"HEAD"} if "GET" in allowed else set()
            return _answer(
                405,
                {"error": "method not allowed", "code": "method_not_allowed"},
                head_only,
                allow=", ".join(sorted(allowed)),
            )
        if request.method == "POST" and not _not_a_form(request.headers):
            self._refused(request, "a content type a plain form can send")
            return _answer(
                415,
                {
                    "error": "send Content-Type: application/json (a plain form cannot)",
                    "code": "unsupported_media_type",
                },
            )
        return None

    def _refused(self, request: _Request, reason: str) -> None:
        headers = request.headers
        self._refusals.log(
            logger,
            "local_http_refused",
            reason=reason,
            method=request.method[:16],
            path=request.path[:100],
            host=(headers.get("Host") or "")[:100],
            origin=(headers.get("Origin") or "")[:100],
        )


@dataclass(frozen=True)
class _Request:
    method: str
    authority: str | None  # named by an absolute-form target
    path: str
    version: str
    headers: http.client.HTTPMessage

    @property
    def route_method(self) -> str:
        return "GET" if self.method == "HEAD" else self.method


class _BadRequest(Exception):
    def __init__(self, status: int = 400):
        super().__init__(status)
        self.status = status


async def _read_head(reader: asyncio.StreamReader) -> _Request:
    """Read the request line and headers; raise _BadRequest when they are not HTTP/1.x."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError) as exc:
            raise _BadRequest(431 if lines else 414) from exc
        if not line.endswith(b"\n"):
            raise asyncio.IncompleteReadError(line, None)  # closed mid-request
        size += len(line)
        if size > MAX_HEAD_BYTES:
            raise _BadRequest(431)
        if line in (b"\r\n", b"\n") and lines:
            break
        lines.append(line)
    words = lines[0].decode("latin-1").rstrip("\r\n").split(" ")
    if len(words) != 3 or not VERSION_PATTERN.fullmatch(words[2]):
        raise _BadRequest()
    method, target, version = words
    if not method.isascii() or not method.isalpha() or not target:
        raise _BadRequest()
    try:
        headers = http.client.parse_headers(io.BytesIO(b"".join(lines[1:]) + b"\r\n"))
    except http.client.HTTPException as exc:  # more than 100 header lines
        raise _BadRequest(431) from exc
    authority, path = split_target(target)
    return _Request(method.upper(), authority, path, version, headers)


def _content_length(headers: http.client.HTTPMessage) -> int | bytes:
    """Return the body's length, or the answer refusing it (missing, malformed, too large)."""
    if headers.get("Transfer-Encoding") is not None:
        return _answer(411, {"error": "send Content-Length", "code": "length_required"})
    lengths = headers.get_all("Content-Length") or []
    digits = lengths[0].strip() if lengths else "0"
    if len(lengths) > 1 or not re.fullmatch(r"[0-9]+", digits):
        return _answer(400, {"error": "bad Content-Length", "code": "bad_request"})
    if len(digits) > len(str(MAX_BODY_BYTES)) or int(digits) > MAX_BODY_BYTES:
        return _answer(413, {"error": "body too large", "code": "body_too_large"})
    return int(digits)


def _not_a_form(headers: http.client.HTTPMessage) -> bool:
    """Tell whether a POST carries what no plain HTML form can: a JSON type or a custom header."""
    types = headers.get_all("Content-Type") or []
    media_type = types[0].split(";", 1)[0] if len(types) == 1 else ""
    return (
        media_type.strip().lower() == "application/json"
        or headers.get("X-Requested-With") is not None
    )


def _answer(
    status: int, body: dict[str, Any], head_only: bool = False, *, allow: str | None = None
) -> bytes:
    """Return an HTTP/1.0 answer carrying ``body`` as JSON (its headers only for HEAD)."""
    data = json.dumps(body).encode()
    lines = [
        f"HTTP/1.0 {status} {HTTPStatus(status).phrase}",
        "Server: arcade-cabinet",
        "Content-Type: application/json",
        # Never read as a script or a style sheet by a page that includes it, never cached.
        "X-Content-Type-Options: nosniff",
        "Cache-Control: no-store",
        "Connection: close",
        f"Content-Length: {len(data)}",
    ]
    if allow is not None:
        lines.append(f"Allow: {allow}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head if head_only else head + data
