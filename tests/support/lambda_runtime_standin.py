"""A loopback stand-in for the Lambda Runtime API, the HTTP interface a function's runtime polls.

It speaks the protocol that AWS documents ("Using the Lambda runtime API for custom runtimes")
and that ``awslambdaric`` (the runtime client in AWS's Python base images) speaks through its C
extension ``runtime_client`` (aws-lambda-cpp over libcurl) and ``http.client``:

- ``GET /2018-06-01/runtime/invocation/next`` long-polls for the next event and answers it
  with the event as the body and the ``Lambda-Runtime-Aws-Request-Id``,
  ``Lambda-Runtime-Deadline-Ms``, ``Lambda-Runtime-Invoked-Function-Arn`` and
  ``Lambda-Runtime-Trace-Id`` headers;
- ``POST /2018-06-01/runtime/invocation/{id}/response`` and ``…/{id}/error`` take the
  outcome of that invocation (202);
- ``POST /2018-06-01/runtime/init/error`` takes a failed initialisation (202).

The test queues an event with ``invoke()`` and gets back what the runtime posted for it.
"""

from __future__ import annotations

import json
import queue
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_VERSION = "2018-06-01"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:arcade-pay"
# Lambda refuses a synchronous response payload over 6 MB.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024
_OUTCOME_PATH = re.compile(rf"^/{API_VERSION}/runtime/invocation/([^/]+)/(response|error)$")


@dataclass(frozen=True)
class Outcome:
    """What the runtime posted for one invocation: its response, or its error."""

    request_id: str
    kind: str  # "response" or "error"
    body: bytes
    error_type: str | None = None

    def json(self) -> Any:
        """Return the posted body decoded as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class InitError:
    """A failed initialisation, as the runtime reported it before exiting."""

    error_type: str | None
    body: bytes

    def json(self) -> Any:
        """Return the posted body decoded as JSON."""
        return json.loads(self.body)


def _trace_id() -> str:
    """Return an X-Ray trace header like the one Lambda hands each invocation."""
    root = f"1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"
    return f"Root={root};Parent={uuid.uuid4().hex[:16]};Sampled=0"


@dataclass
class _Invocation:
    request_id: str
    body: bytes
    trace_id: str = field(default_factory=_trace_id)


class LambdaRuntimeStandIn:
    """Serve the Lambda Runtime API on ``127.0.0.1:<free port>`` for one function process."""

    def __init__(self, *, function_arn: str = FUNCTION_ARN, timeout_seconds: float = 15.0):
        self.function_arn = function_arn
        self.timeout_seconds = timeout_seconds
        self.init_errors: list[InitError] = []
        self.polls = 0
        self._pending: queue.Queue[_Invocation] = queue.Queue()
        self._handed_out: set[str] = set()
        self._outcomes: dict[str, Outcome] = {}
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """Return ``host:port``, the value of ``AWS_LAMBDA_RUNTIME_API``."""
        if self._server is None:
            raise RuntimeError("the runtime API stand-in is not started")
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> LambdaRuntimeStandIn:
        """Listen on a free loopback port and serve in a background thread."""
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="lambda-runtime-api", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; a runtime still waiting for its next event is cut off."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LambdaRuntimeStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the test's side ----------------------------------------------------------------------
    def submit(self, event: Any) -> str:
        """Queue ``event`` for the runtime's next poll and return its request id."""
        invocation = _Invocation(request_id=str(uuid.uuid4()), body=json.dumps(event).encode())
        self._pending.put(invocation)
        return invocation.request_id

    def outcome(self, request_id: str, timeout: float) -> Outcome | None:
        """Wait up to ``timeout`` seconds for what the runtime posts for ``request_id``."""
        with self._changed:
            self._changed.wait_for(lambda: request_id in self._outcomes, timeout=timeout)
            return self._outcomes.get(request_id)

    def wait_for_init_error(self, timeout: float) -> InitError | None:
        """Wait up to ``timeout`` seconds for the runtime to report a failed initialisation."""
        with self._changed:
            self._changed.wait_for(lambda: bool(self.init_errors), timeout=timeout)
            return self.init_errors[0] if self.init_errors else None

    # --- the runtime's side (called from the handler threads) ---------------------------------
    def _next(self) -> _Invocation | None:
        with self._changed:
            self.polls += 1
            self._changed.notify_all()
        while not self._stopping.is_set():
            try:
                invocation = self._pending.get(timeout=0.05)
            except queue.Empty:
                continue
            self._handed_out.add(invocation.request_id)
            return invocation
        return None

    def _post_outcome(self, request_id: str, outcome: Outcome) -> int:
        with self._changed:
            if request_id not in self._handed_out or request_id in self._outcomes:
                return 400
            self._outcomes[request_id] = outcome
            self._changed.notify_all()
        return 202

    def _post_init_error(self, error: InitError) -> None:
        with self._changed:
            self.init_errors.append(error)
            self._changed.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when the runtime goes away mid-poll (its process is stopped that way)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Route the runtime's requests to the stand-in that owns this handler class."""

    owner: LambdaRuntimeStandIn
    # HTTP/1.1: libcurl keeps its connection open between polls, and Expect: 100-continue works.
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != f"/{API_VERSION}/runtime/invocation/next":
            self._answer(404, {"errorType": "NotFound", "errorMessage": self.path})
            return
        invocation = self.owner._next()
        if invocation is None:  # shutting down: drop the connection unanswered
            self.close_connection = True
            return
        deadline_ms = int((time.time() + self.owner.timeout_seconds) * 1000)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Lambda-Runtime-Aws-Request-Id", invocation.request_id)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline_ms))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", self.owner.function_arn)
        self.send_header("Lambda-Runtime-Trace-Id", invocation.trace_id)
        self.send_header("Content-Length", str(len(invocation.body)))
        self.end_headers()
        self.wfile.write(invocation.body)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self._read_body()
        error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
        if self.path == f"/{API_VERSION}/runtime/init/error":
            self.owner._post_init_error(InitError(error_type=error_type, body=body))
            self._answer(202, {"status": "OK"})
            return
        match = _OUTCOME_PATH.match(self.path)
        if match is None:
            self._answer(404, {"errorType": "NotFound", "errorMessage": self.path})
            return
        request_id, kind = match.groups()
        if kind == "response" and len(body) > MAX_RESPONSE_BYTES:
            self._answer(413, {"errorType": "RequestEntityTooLarge", "errorMessage": "over 6 MB"})
            return
        outcome = Outcome(
            request_id=request_id,
            kind=kind,
            body=body,
            error_type=error_type if kind == "error" else None,
        )
        status = self.owner._post_outcome(request_id, outcome)
        if status == 202:
            self._answer(202, {"status": "OK"})
        else:
            self._answer(
                status,
                {"errorType": "InvalidRequestID", "errorMessage": f"unknown id {request_id}"},
            )

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, if any, end with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        """Keep the test output quiet."""
