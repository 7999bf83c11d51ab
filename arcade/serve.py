"""``python app.py``: report the settings by name, then serve on PORT until SIGTERM or SIGINT.

waitress serves (SPEC "Serving locally"): a connection costs a worker thread only once its
request has fully arrived, so idle or slow connections never hold the threads that answer
Stripe, and a connection idle for ``CHANNEL_TIMEOUT_SECONDS`` is closed. Either signal stops
accepting connections, lets every request already received finish and its answer go out (a
webhook half-way through its grant is answered), stops the delivery relay, then exits 0.
"""

from __future__ import annotations

import logging
import resource
import signal
import sys
import threading
import time
from typing import Any

from flask import Flask

from arcade import MAX_BODY_BYTES
from arcade.errors import ArcadeError
from arcade.logs import log_event

logger = logging.getLogger("arcade.serve")

WORKER_THREADS = 16
CHANNEL_TIMEOUT_SECONDS = 30
# How long in-flight requests may take to finish after SIGTERM: the slowest webhook (a
# line-items call Stripe answers slowly, then the slowest publish) fits well inside.
DRAIN_SECONDS = 60
# The GIL's switch interval while serving (Python's default is 0.005 s).
SWITCH_INTERVAL_SECONDS = 0.0005


class StartupError(Exception):
    """The server cannot start; the message says why in one sentence."""


class Listening:
    """The sockets waitress listens on (one, or several when HOST names several addresses,
    like ``localhost`` on a machine with IPv4 and IPv6, or ``*``), their shared socket map and
    the pool of worker threads that answers them."""

    def __init__(self, server: Any, socket_map: dict[int, Any]):
        from waitress.server import BaseWSGIServer

        self.socket_map = socket_map
        self.listeners = [s for s in socket_map.values() if isinstance(s, BaseWSGIServer)]
        self.adj = server.adj
        self.task_dispatcher = server.task_dispatcher

    def pull_trigger(self) -> None:
        """Wake the loop now, not at its next timeout."""
        self.listeners[0].pull_trigger()

    def stop_accepting(self) -> None:
        from waitress import wasyncore

        for listener in self.listeners:
            wasyncore.dispatcher.close(listener)

    def drained(self) -> bool:
        """Return True when no request is being served and every answer has been sent."""
        dispatcher = self.task_dispatcher
        if dispatcher.queue or dispatcher.active_count > 0:
            return False
        return all(
            not channel.requests and not channel.total_outbufs_len
            for listener in self.listeners
            for channel in list(listener.active_channels.values())
        )


def make_server(app: Any, host: str, port: int) -> Listening:
    """Return waitress listening for ``app`` on host:port (not yet serving).

    Raises StartupError naming HOST or the address when it cannot be listened on.
    """
    from waitress import create_server

    socket_map: dict[int, Any] = {}
    try:
        server = create_server(
            app,
            map=socket_map,
            host=host,
            port=port,
            threads=WORKER_THREADS,
            channel_timeout=CHANNEL_TIMEOUT_SECONDS,
            connection_limit=_connection_limit(),
            ident="arcade-pay",
            expose_tracebacks=False,
            # Refuse a larger body as it arrives, not after spooling it to disk (Flask's own
            # 413 at MAX_BODY_BYTES would come only once all of it was read).
            max_request_body_size=MAX_BODY_BYTES,
            # A proxy ending TLS in front says so in X-Forwarded-Proto or Forwarded; no proxy
            # is trusted (the scheme and client address stay the socket's), but the header
            # reaches the app, where it can only make the /admin cookie stricter (Secure).
            clear_untrusted_proxy_headers=False,
        )
    except OSError as exc:
        _close_all(socket_map)
        reason = exc.strerror or type(exc).__name__
        raise StartupError(f"cannot listen on {host}:{port}: {reason}") from exc
    except ValueError as exc:  # waitress: the name does not resolve, or is not an address
        _close_all(socket_map)
        raise StartupError(
            f"HOST must be an address or host name of this machine (127.0.0.1, 0.0.0.0, ::1,"
            f" localhost): cannot listen on {host!r}"
        ) from exc
    listening = Listening(server, socket_map)
    channel_class = _json_error_channel()
    for listener in listening.listeners:
        listener.channel_class = channel_class
    return listening


def _close_all(socket_map: dict[int, Any]) -> None:
    # A HOST with several addresses may have bound some before one failed.
    from waitress import wasyncore

    wasyncore.close_all(socket_map)


def _json_error_channel() -> type:
    """Return waitress's connection class answering what it refuses itself (a request that is
    not HTTP, a body over the limit, an unknown transfer coding) as JSON errors in our words,
    like every other error (SPEC "HTTP"), instead of its plain text."""
    import json

    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    from arcade.http_errors import HTTP_CODES

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            error = self.request.error
            # What waitress cannot take from a caller (a transfer coding it does not know is
            # its 501) is the caller's bad input: a 4xx, never a 5xx (SPEC "HTTP").
            status = error.code if error.code < 500 else 400
            code, sentence = HTTP_CODES.get(error.code, HTTP_CODES[400])
            body = json.dumps({"error": sentence, "code": code}).encode()
            self.status = f"{status} {error.reason if status == error.code else 'Bad Request'}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

        def add_channel(self, map: Any = None) -> None:
            super().add_channel(map)
            _make_room(self.server, self)

    return JsonErrorChannel


def _make_room(server: Any, newcomer: Any) -> None:
    """Close the connections idle the longest while the server is at its connection limit.

    waitress stops accepting at the limit, so connections opened and left idle (or sending a
    header a byte at a time) would keep Stripe out until ``CHANNEL_TIMEOUT_SECONDS`` ends
    them (SPEC "Serving locally": idle or slow connections never hold what answers Stripe).
    A connection with a request received or an answer still to send is never closed here;
    only when every connection has one does the server stop accepting. Runs on waitress's
    loop thread, which alone closes connections.

    The limit counts the connections of every address served (HOST=* is 0.0.0.0 and ::, one
    socket map), so the idle ones are looked for on every address too: looking only among
    the newcomer's own listener's, idle connections to ``::1`` and one to ``127.0.0.1`` left
    the map full with nothing to close, and every address stopped accepting.
    """
    from waitress.channel import HTTPChannel

    socket_map = server._map
    limit = server.adj.connection_limit
    while len(socket_map) >= limit:
        idle = [
            channel
            for channel in list(socket_map.values())
            if isinstance(channel, HTTPChannel)
            and channel is not newcomer
            and not channel.requests
            and not channel.total_outbufs_len
        ]
        if not idle:
            return
        min(idle, key=lambda channel: channel.last_activity).handle_close()


def run_until_signalled(server: Listening, *, on_stop: Any = None) -> None:
    """Serve until SIGTERM or SIGINT, then finish what is in flight and return."""
    from waitress import wasyncore

    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        if not stopping.is_set():
            log_event(logger, "stopping", signal=signal.Signals(signum).name)
        stopping.set()
        server.pull_trigger()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    socket_map = server.socket_map
    use_poll = server.adj.asyncore_use_poll
    while not stopping.is_set():
        wasyncore.loop(timeout=1.0, map=socket_map, use_poll=use_poll, count=1)
    # Stop accepting; the loop goes on so that answers still reach their clients.
    server.stop_accepting()
    if on_stop is not None:
        on_stop()
    deadline = time.monotonic() + DRAIN_SECONDS
    while not server.drained() and time.monotonic() < deadline:
        wasyncore.loop(timeout=0.1, map=socket_map, use_poll=use_poll, count=1)
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
    wasyncore.close_all(socket_map)


def _connection_limit() -> int:
    """Return how many connections to accept: as many as the open-files limit leaves room for.

    waitress stops accepting at its limit (100 by default); raising the soft limit to the hard
    one means a few hundred idle sockets cannot keep Stripe out.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return max(50, min(1000, soft - 64))


USAGE = (
    "usage: python app.py (no arguments): serves the API on HOST:PORT, 127.0.0.1:5000 unless"
    " set; every setting is an environment variable or a line of .env.local (see"
    " .env.local.example)"
)


def main(app: Flask, argv: list[str]) -> int:
    """``python app.py``: serve, or print the usage for --help; any other argument is refused
    (``--port 8080`` would otherwise serve quietly on PORT)."""
    if argv in (["--help"], ["-h"]):
        print(USAGE)
        return 0
    if argv:
        # Option words only: a value given as an argument (ADMIN_API_KEY=…, --key …) may be a
        # secret, and this line goes wherever stderr is kept.
        shown = " ".join(word.split("=", 1)[0] if word.startswith("-") else "…" for word in argv)
        return startup_failed(
            f"python app.py takes no arguments (got {shown!r}): set HOST, PORT and every"
            " other setting in the environment or .env.local"
        )
    return serve(app)


def startup_failed(error: str) -> int:
    """Log a start-up problem as its one sentence and return the exit status, 1 (SPEC
    "Serving locally": never a trace)."""
    log_event(logger, "startup_failed", level=logging.ERROR, error=error)
    return 1


def serve(app: Flask) -> int:
    """Serve ``app`` on HOST:PORT (127.0.0.1:5000 by default); return the exit status."""
    from arcade.background import BackgroundWork
    from arcade.services import Services

    svc: Services = app.extensions["arcade"]
    settings = svc.settings
    problems = svc.problems()
    # create_app already logged the malformed settings; add what is missing.
    for problem in problems[len(settings.problems) :]:
        log_event(logger, "setting_problem", level=logging.WARNING, problem=problem)
    try:
        svc.store.get_value("pulse_signing_key")  # can the store be opened and read at all?
    except ArcadeError as exc:
        return startup_failed(str(exc))
    # A malformed PORT stops `python app.py`: serving on some other port would be a surprise
    # (SPEC "Serving locally": a start-up problem is one sentence and exit 1).
    port_problem = settings.refusal("PORT")
    if port_problem:
        return startup_failed(port_problem)
    host = settings.host
    try:
        server = make_server(app, host, settings.port)
    except StartupError as exc:
        return startup_failed(str(exc))
    log_event(
        logger,
        "serving",
        host=host,
        port=settings.port,
        store=settings.database_url.split(":", 1)[0],
        ready=not problems,
    )
    # Five threads take turns here (waitress's loop and workers, paho's network loop, the
    # relay): a thread woken by a PUBACK or a reply should not wait up to 5 ms for the GIL.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    background = BackgroundWork(svc)
    background.start()
    try:
        run_until_signalled(server, on_stop=background.ask_to_stop)
    finally:
        background.stop()
        svc.publisher.close()
        svc.store.close()
        log_event(logger, "stopped")
    return 0
