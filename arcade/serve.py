"""``python app.py``: report the settings by name, then serve on PORT until SIGTERM or SIGINT.

Either signal stops accepting connections, lets the requests in flight finish (a webhook
half-way through its grant is answered), stops the delivery relay, then exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer

from arcade.background import BackgroundWork
from arcade.logs import log_event
from arcade.services import Services

logger = logging.getLogger("arcade.serve")

WORKER_THREADS = 32


class PooledWSGIServer(BaseWSGIServer):
    """Werkzeug's server, with requests handled by a pool of threads.

    Werkzeug's threaded server starts a thread for every connection, and it closes every
    connection after one request, as Stripe's deliveries do anyway; reusing threads saves that
    start on each webhook.
    """

    multithread = True

    def __init__(self, host: str, port: int, app: Any, *, workers: int = WORKER_THREADS):
        super().__init__(host, port, app)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="http")

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        self.pool.submit(self._handle, request, client_address)

    def _handle(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # socketserver reports it and serves on, as its own threads do
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        # Requests already handed to a worker finish; none is cut off half-way.
        self.pool.shutdown(wait=True)


def serve(app: Flask) -> None:
    """Serve ``app`` with a pool of threads on 127.0.0.1:PORT (HOST to change the address)."""
    svc: Services = app.extensions["arcade"]
    settings = svc.settings
    problems = svc.problems()
    # create_app already logged the malformed settings; add what is missing.
    for problem in problems[len(settings.problems) :]:
        log_event(logger, "setting_problem", level=logging.WARNING, problem=problem)
    # Every request that matters logs its own JSON event; werkzeug's access line per request
    # would double the log and cost a measurable share of a webhook's time.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    host = os.environ.get("HOST", "127.0.0.1")
    log_event(
        logger,
        "serving",
        host=host,
        port=settings.port,
        store=settings.database_url.split(":", 1)[0],
        ready=not problems,
    )
    server = PooledWSGIServer(host, settings.port, app)
    background = BackgroundWork(svc)

    def stop(signum: int, _frame: object) -> None:
        log_event(logger, "stopping", signal=signal.Signals(signum).name)
        # shutdown() waits for serve_forever to return, so not from the thread running it.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    background.start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        background.stop()
        svc.publisher.close()
        svc.store.close()
        log_event(logger, "stopped")
