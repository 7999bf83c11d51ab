"""What reaches a real ``python -m arcade.cabinet`` process from the API: a redirect is never
followed (the machine token stays with the API, a key from elsewhere is never pinned), and the
work it was for is kept and sent once the API answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import TlsBroker
from tests.support.cabinet_process import TOKEN, RunningCabinet, request, wait_until
from tests.support.http_server import LoopbackServer

# What the game software posts to the cabinet's door when a game ends.
GAME_OVER = (
    b"POST /game-over HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
)


class Recorder:
    """A loopback HTTP server that records (method, path, Authorization) and answers each
    call with what ``answer(path)`` returns: (status, headers, JSON body)."""

    def __init__(self, answer: Any):
        self.calls: list[tuple[str, str, str | None]] = []
        self.answer = answer
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with recorder._lock:
                    recorder.calls.append(
                        (self.command, self.path, self.headers.get("Authorization"))
                    )
                status, headers, body = recorder.answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = LoopbackServer(Handler, name="recorder")
        self.url = self._server.url

    def paths(self) -> list[str]:
        with self._lock:
            return [path for _, path, _ in self.calls]

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def elsewhere() -> Iterator[Recorder]:
    """Another server, where a redirect points: it hands out a key of its own."""
    other_key = {"alg": "Ed25519", "public_key": "A" * 43}
    server = Recorder(lambda _path: (200, {}, other_key))
    yield server
    server.close()


@pytest.fixture
def redirecting_api(elsewhere: Recorder) -> Iterator[Recorder]:
    """An API that answers every call with a 302 to ``elsewhere`` until ``.answer`` changes."""
    api = Recorder(lambda path: (302, {"Location": f"{elsewhere.url}{path}"}, {}))
    yield api
    api.close()


def test_a_redirect_never_takes_the_token_elsewhere_and_the_game_over_is_kept(
    broker: TlsBroker, tmp_path: Path, redirecting_api: Recorder, elsewhere: Recorder
):
    """GIVEN an API address that answers 302 to another server WHEN the game ends THEN the
    cabinet follows no redirect (the other server never sees its token, nor any call), tries
    again, and sends the game over once the API answers."""
    cabinet = RunningCabinet(broker, tmp_path, api_url=redirecting_api.url)
    try:
        cabinet.pay(1)
        status, body = request(cabinet.port, GAME_OVER)
        assert status == 202, body
        wait_until(lambda: redirecting_api.paths().count("/gameover") >= 2)
        time.sleep(0.5)  # room for a redirect to be followed, were it followed

        redirecting_api.answer = lambda _path: (200, {}, {"message": "Game over signal sent"})
        wait_until(lambda: cabinet.events("gameover_sent") != [], timeout=10)
    finally:
        cabinet.close()

    assert elsewhere.calls == []
    assert {auth for _, path, auth in redirecting_api.calls if path == "/gameover"} == {
        f"Bearer {TOKEN}"
    }
    retries = [line for line in cabinet.events("api_retry") if line["path"] == "/gameover"]
    assert retries and {line["reason"] for line in retries} == {"redirected"}


def test_a_pulse_key_behind_a_redirect_is_never_pinned(
    broker: TlsBroker, tmp_path: Path, redirecting_api: Recorder, elsewhere: Recorder
):
    """GIVEN no pinned key and an API address that redirects GET /pulse-key to another server
    WHEN the cabinet starts THEN it never asks that server, pins nothing, and stays out of
    order, asking the API again."""
    cabinet = RunningCabinet(
        broker, tmp_path, api_url=redirecting_api.url, pin_key=False, ready=False
    )
    try:
        wait_until(lambda: redirecting_api.paths().count("/pulse-key") >= 3)
        status = cabinet.status()
    finally:
        cabinet.close()

    assert elsewhere.calls == []
    assert cabinet.events("pulse_key_pinned") == []
    assert status["out_of_order"] is True
    assert "pulse key" in status["reason"]


class Trickler:
    """A loopback HTTP server that answers each call 503 and then a byte every half second,
    without end: in its headers (``where="head"``) or in a body it promised (``"body"``), the
    connection kept open or, as most servers answer urllib's ``Connection: close``, to be
    closed after it (``"closing body"``)."""

    def __init__(self, where: str):
        self.calls: list[str] = []
        self.done = threading.Event()
        trickler = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the standard library's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                trickler.calls.append(self.path)
                head = b"HTTP/1.1 503 Service Unavailable\r\n"
                if where == "closing body":
                    head += b"Connection: close\r\n"
                if where in ("body", "closing body"):
                    head += b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
                try:
                    self.wfile.write(head)
                    while not trickler.done.wait(0.5):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                except OSError:
                    pass  # the cabinet cut the connection

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = LoopbackServer(Handler, name="trickler")
        self.url = self._server.url

    def close(self) -> None:
        self.done.set()
        self._server.close()


@pytest.mark.parametrize("where", ["head", "body", "closing body"])
def test_an_api_answering_a_byte_at_a_time_keeps_neither_sigterm_nor_the_game_over(
    broker: TlsBroker, tmp_path: Path, where: str
):
    """GIVEN an API address that answers a byte every half second without end WHEN the game
    ends and the cabinet gets SIGTERM THEN it exits 0 within its API timeout (a read timeout
    bounds one read, so the call, and the stop waiting for it, never ended), and the game over
    is kept: sent once a working API answers after the restart."""
    slow = Trickler(where)
    cabinet = RunningCabinet(broker, tmp_path, api_url=slow.url)
    try:
        cabinet.pay(1)
        status, body = request(cabinet.port, GAME_OVER)
        assert status == 202, body
        wait_until(lambda: "/gameover" in slow.calls)
        time.sleep(1)

        started = time.monotonic()
        cabinet.process.terminate()
        code = cabinet.process.wait(timeout=30)
        took = time.monotonic() - started
    finally:
        cabinet.close()
        slow.close()
    api = Recorder(lambda _path: (200, {}, {"message": "Game over signal sent"}))
    again = RunningCabinet(broker, tmp_path, api_url=api.url)
    try:
        wait_until(lambda: "/gameover" in api.paths(), timeout=10)
    finally:
        again.close()
        api.close()

    assert code == 0
    assert took < 8


def test_a_success_cut_short_by_the_deadline_is_no_answer_within_the_timeout():
    """GIVEN an API that sends a 200's head at once (``Connection: close``, as most servers
    answer urllib) and then its body a byte every half second WHEN the cabinet asks it THEN the
    call ends within its timeout as unreachable, not as a 200 with an empty body (the timer
    was cancelled with the connection before the body was read: it took 50 s)."""
    from arcade.cabinet.api import ApiClient, ApiUnreachable

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's naming
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            try:
                for _ in range(100):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.5)
            except OSError:
                pass  # cut by the client

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = LoopbackServer(Handler, name="slow-200")
    try:
        client = ApiClient(server.url, TOKEN, timeout=1.5)
        started = time.monotonic()
        with pytest.raises(ApiUnreachable):
            client.get("/machines/cab-door")
        took = time.monotonic() - started
    finally:
        server.close()
    assert took < 4
