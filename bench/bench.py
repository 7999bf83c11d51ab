"""Measure README.md's "Performance" budgets as ratios to floors of the same run (never a test).

    .venv/bin/python bench/bench.py [--cold-starts 7] [--webhooks 400] [--throughput 2000]

Absolute times drift by 3x on shared machines, so every budget is the product's figure divided
by a floor measured beside it, in the same run, on the same machine:

- Cold-start floor: a fresh interpreter imports Flask and aws-wsgi, builds a bare Flask app with
  one ``/status`` route answering a small JSON and answers one API Gateway v1 ``/status`` event
  through ``awsgi.response``. The product's cold start is a fresh interpreter running
  ``import app`` and ``app.lambda_handler(event)``, its modules compiled to bytecode
  beforehand as in the Lambda image (Dockerfile: ``python -m compileall``). Both run
  ``--cold-starts`` times (interleaved); each is the median. Budget: product / floor <= 1.25.
- HTTP floor: ``bench/floor_http.py``, a three-line Flask app whose POST route only reads its
  body and answers 200, served like ``python app.py`` (``arcade.serve.make_server``, waitress) as
  its own process on a free loopback port, sent the same signed webhook bodies by the same
  client code: p50/p99 of ``--webhooks`` sequential requests through one ``http.client``
  connection, and requests/s from 8 concurrent senders sending ``--throughput`` requests in
  all; the product and the floor are served the same way, so they are driven the same way.
- MQTT floor: one paho-mqtt client (MQTT 5, QoS 1) on the same loopback TLS Mosquitto with the
  same credentials publishing a coinpulse the product sent, timed from ``publish()`` until a
  subscriber has it; p50/p99 of ``--webhooks`` messages, each awaited (and its PUBACK too,
  untimed) before the next.

For context, not a budget: ``bench/floor_webhook.py``, the least work a webhook must do to keep
README.md's promises (check the signature, store the grant, sign, publish at QoS 1 and wait for
the PUBACK, mark it delivered; no read, no log line), served and driven exactly as the product,
is measured in the same run and shown with the same two ratios.

The product is ``python app.py`` with a SQLite store, that broker and the Stripe stand-in
answering in 100 ms. Budgets:

- webhook -> coinpulse at a subscriber: p50 <= 1.5x and p99 <= 3x (HTTP floor p50 + MQTT
  floor p50), over ``--webhooks`` sequential webhooks sent as the HTTP floor's requests are;
- webhooks/s from 8 concurrent senders >= 0.5x the HTTP floor's requests/s.

Each budget line shows the absolute figures beside the ratio and "ok" or "OVER BUDGET"; the last
line says "budgets: all met" or "budgets: N over". The exit status is 0 either way: this is a
measurement, not a test.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tests.support.broker import Subscriber, TlsBroker, free_loopback_port  # noqa: E402
from tests.support.lambda_events import make_v1_event  # noqa: E402
from tests.support.processes import stop_process  # noqa: E402
from tests.support.stripe_standin import StripeStandIn, checkout_session, event, sign_payload  # noqa: E402

SECRET = "whsec_bench"
PRICE = "price_bench"
ADMIN_KEY = "bench-admin-key-0123456789abcdef-0123"
SENDERS = 8
WARM_UP = 20

COLD_START = """
import json, sys, time
started = time.perf_counter()
import app
answer = app.lambda_handler(json.loads(sys.argv[1]), None)
elapsed = time.perf_counter() - started
assert answer["statusCode"] == 200, answer
print(elapsed)
"""

COLD_START_FLOOR = """
import json, sys, time
started = time.perf_counter()
import awsgi
from flask import Flask
app = Flask(__name__)
@app.get("/status")
def status():
    return {"status": "ok"}
answer = awsgi.response(app, json.loads(sys.argv[1]), None)
elapsed = time.perf_counter() - started
assert int(answer["statusCode"]) == 200, answer
print(elapsed)
"""


# --- cold start ---------------------------------------------------------------------------


def cold_start(runs: int) -> tuple[list[float], list[float]]:
    """Return the seconds each fresh interpreter took: the product's, then the floor's.

    The two alternate (and which goes first alternates too), so drift on a noisy machine
    falls on both alike. The app's modules are compiled to bytecode first, as the Dockerfile
    does for the Lambda image (pip did it for Flask's): with PYTHONDONTWRITEBYTECODE set, or a
    fresh clone, each start would otherwise compile every module of the app from source.
    """
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "arcade"), str(ROOT / "app.py")],
        check=True,
    )
    env = {
        **os.environ,
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_REGION": "us-east-1",
        "DATABASE_URL": "dynamodb://bench",
    }
    event_json = json.dumps(make_v1_event(path="/status"))
    product: list[float] = []
    floor: list[float] = []
    for run in range(runs):
        pair = [(COLD_START, product), (COLD_START_FLOOR, floor)]
        for script, figures in pair if run % 2 == 0 else reversed(pair):
            out = subprocess.run(
                [sys.executable, "-c", script, event_json],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            figures.append(float(out.stdout.strip().splitlines()[-1]))
    return product, floor


# --- servers ------------------------------------------------------------------------------


def wait_ready(server: subprocess.Popen, port: int, method: str, path: str, name: str) -> None:
    """Return once ``method path`` answers 200 on ``port``; kill the server if it never does."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request(method, path, b"")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"{name} did not start; see its log")


def start_server(
    broker: TlsBroker, standin: StripeStandIn, workdir: Path
) -> tuple[subprocess.Popen, int]:
    """Start ``python app.py`` on a free loopback port and return it once it answers."""
    port = free_loopback_port()
    env = {
        **os.environ,
        **broker.env(),
        "PORT": str(port),
        "STRIPE_API_KEY": standin.api_key,
        "STRIPE_API_BASE": standin.url,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_PRICE_ID": PRICE,
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "ADMIN_API_KEY": ADMIN_KEY,
    }
    env.pop("AWS_LAMBDA_FUNCTION_NAME", None)
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "machines", "add", "cab001"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
    )
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    wait_ready(server, port, "GET", "/status", "python app.py")
    return server, port


def start_http_floor(workdir: Path) -> tuple[subprocess.Popen, int]:
    """Start bench/floor_http.py on a free loopback port and return it once it answers."""
    return _start_floor("floor_http.py", workdir, ready=("POST", "/webhook"))


def start_webhook_floor(broker: TlsBroker, workdir: Path) -> tuple[subprocess.Popen, int]:
    """Start bench/floor_webhook.py on a free loopback port and return it once it answers."""
    settings = {**broker.env(), "STRIPE_WEBHOOK_SECRET": SECRET}
    return _start_floor("floor_webhook.py", workdir, str(workdir / "floor.db"), settings=settings)


def _start_floor(
    script: str,
    workdir: Path,
    *args: str,
    settings: dict[str, str] | None = None,
    ready: tuple[str, str] = ("GET", "/status"),
) -> tuple[subprocess.Popen, int]:
    """Start ``bench/<script> PORT *args`` as its own process, served like ``python app.py``
    (outside Lambda, ``settings`` added to the environment, its output in ``<script>.log``),
    and return it with its port once ``ready`` (method, path) answers 200."""
    port = free_loopback_port()
    env = {key: value for key, value in os.environ.items() if key != "AWS_LAMBDA_FUNCTION_NAME"}
    env.update(settings or {})
    log = open(workdir / f"{script}.log", "wb")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [sys.executable, str(BENCH / script), str(port), *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_ready(server, port, *ready, f"bench/{script}")
    return server, port


def stop(server: subprocess.Popen) -> None:
    stop_process(server, timeout=10)


# --- the client: the same for the product and the HTTP floor -----------------------------


def our_link(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"machine_id": "cab001"})
    conn.request(
        "POST",
        "/create-payment-link",
        body,
        {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_KEY}"},
    )
    answer = json.loads(conn.getresponse().read())
    conn.close()
    return answer["payment_link_id"]


def paid_event(link_id: str, n: int) -> bytes:
    session = checkout_session(
        id=f"cs_bench_{n:06d}_{time.time_ns()}", payment_link=link_id, amount_subtotal=100
    )
    return json.dumps(event("checkout.session.completed", session)).encode()


def post_webhook(conn: http.client.HTTPConnection, body: bytes) -> int:
    conn.request(
        "POST",
        "/webhook",
        body,
        {"Content-Type": "application/json", "Stripe-Signature": sign_payload(body, SECRET)},
    )
    response = conn.getresponse()
    response.read()
    return response.status


def wait_for_message(subscriber: Subscriber, before: int) -> None:
    """Spin until ``subscriber`` holds more than ``before`` messages."""
    while len(subscriber.messages) == before:
        time.sleep(0.00005)


def latency(port: int, broker: TlsBroker, link_id: str, count: int) -> tuple[list[float], bytes]:
    """Return seconds from sending each webhook to its coinpulse reaching a subscriber, and the
    last coinpulse as it arrived."""
    subscriber = broker.subscriber("arcade/machine/cab001/coinpulse")
    conn = http.client.HTTPConnection("127.0.0.1", port)
    figures = []
    try:
        for n in range(count):
            body = paid_event(link_id, n)
            before = len(subscriber.messages)
            started = time.perf_counter()
            status = post_webhook(conn, body)
            wait_for_message(subscriber, before)
            figures.append(time.perf_counter() - started)
            assert status == 200, status
        sample = subscriber.messages[-1].raw
    finally:
        conn.close()
        subscriber.close()
    return figures, sample


def http_latency(port: int, link_id: str, count: int) -> list[float]:
    """Return seconds from sending each webhook body to its answer, sent as ``latency`` does."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    figures = []
    try:
        for n in range(count):
            body = paid_event(link_id, n)
            started = time.perf_counter()
            status = post_webhook(conn, body)
            figures.append(time.perf_counter() - started)
            assert status == 200, status
    finally:
        conn.close()
    return figures


def throughput(port: int, bodies: list[bytes], senders: int = SENDERS) -> float:
    """Return requests per second answered 200 by ``senders`` concurrent clients."""
    chunks = [bodies[i::senders] for i in range(senders)]
    failures: list[int] = []
    go = threading.Barrier(senders + 1)

    def send(chunk: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        go.wait()
        for body in chunk:
            status = post_webhook(conn, body)
            if status != 200:
                failures.append(status)
        conn.close()

    threads = [threading.Thread(target=send, args=(c,)) for c in chunks]
    for thread in threads:
        thread.start()
    go.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: {sorted(set(failures))}")
    return len(bodies) / elapsed


# --- MQTT floor ---------------------------------------------------------------------------


def mqtt_floor(broker: TlsBroker, payload: bytes, count: int, warm_up: int) -> list[float]:
    """Return seconds from one paho client's ``publish()`` (MQTT 5, QoS 1) of ``payload`` to a
    subscriber holding it; each message (and its PUBACK) awaited before the next."""
    topic = "arcade/machine/floor1/coinpulse"
    subscriber = broker.subscriber(topic)
    connected = threading.Event()
    outcome: list[bool] = []

    def on_connect(client, _userdata, _flags, reason_code, _properties) -> None:
        sock = client.socket()
        if sock is not None:  # as the product's publisher does
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        outcome.append(not reason_code.is_failure)
        connected.set()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-floor-{uuid.uuid4().hex[:12]}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(broker.username, broker.password)
    client.tls_set_context(broker.ssl_context())
    client.on_connect = on_connect
    client.connect(broker.host, broker.port, keepalive=30, clean_start=True)
    client.loop_start()
    figures = []
    try:
        if not connected.wait(5) or not all(outcome):
            raise RuntimeError("the MQTT floor's client was not accepted by the broker")
        for _ in range(warm_up + count):
            before = len(subscriber.messages)
            started = time.perf_counter()
            info = client.publish(topic, payload, qos=1)
            wait_for_message(subscriber, before)
            figures.append(time.perf_counter() - started)
            info.wait_for_publish(timeout=5)
            if not info.is_published():
                raise RuntimeError("no PUBACK for the MQTT floor's message")
    finally:
        client.disconnect()
        client.loop_stop()
        subscriber.close()
    return figures[warm_up:]


# --- report -------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


@dataclass(frozen=True)
class Budget:
    """One line of SPEC 'Budgets': the product's figure over its floor, against a limit."""

    name: str
    figures: str  # the absolute figures the ratio comes from
    ratio: float
    limit: float
    at_most: bool  # True: ratio <= limit; False: ratio >= limit

    @property
    def met(self) -> bool:
        return self.ratio <= self.limit if self.at_most else self.ratio >= self.limit

    def line(self) -> str:
        sign = "<=" if self.at_most else ">="
        verdict = "ok" if self.met else "OVER BUDGET"
        return (
            f"  {self.name}: {self.ratio:.2f}x (budget {sign} {self.limit}x) {verdict}"
            f"  [{self.figures}]"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cold-starts",
        type=int,
        default=7,
        metavar="N",
        help="fresh interpreters for the product's cold start and as many for its floor; "
        "each figure is the median (default 7)",
    )
    parser.add_argument(
        "--webhooks",
        type=int,
        default=400,
        metavar="N",
        help="sequential webhooks timed to their coinpulse, and as many requests for the "
        "HTTP floor and messages for the MQTT floor, each after 20 untimed (default 400)",
    )
    parser.add_argument(
        "--throughput",
        type=int,
        default=2000,
        metavar="N",
        help=f"webhooks sent by {SENDERS} concurrent senders, to the product and to the "
        "HTTP floor (default 2000)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()

    starts, floor_starts = cold_start(args.cold_starts)
    start_median, floor_start_median = statistics.median(starts), statistics.median(floor_starts)

    with (
        tempfile.TemporaryDirectory() as tmp,
        TlsBroker(Path(tmp) / "broker") as broker,
        StripeStandIn(keep_alive=True) as standin,
    ):
        standin.add_price(PRICE, 50)
        standin.latency = 0.1
        server, port = start_server(broker, standin, Path(tmp))
        try:
            floor, floor_port = start_http_floor(Path(tmp))
            try:
                link_id = our_link(port)
                # Warm up (connections, caches); the product's last coinpulse is the payload
                # the MQTT floor publishes.
                _, pulse = latency(port, broker, link_id, WARM_UP)
                http_latency(floor_port, link_id, WARM_UP)

                http_figures = http_latency(floor_port, link_id, args.webhooks)
                mqtt_figures = mqtt_floor(broker, pulse, args.webhooks, WARM_UP)
                figures, _ = latency(port, broker, link_id, args.webhooks)

                bodies = [paid_event(link_id, 100_000 + n) for n in range(args.throughput)]
                floor_rate = throughput(floor_port, bodies)  # it only reads them: same bodies
                rate = throughput(port, bodies)

                least, least_port = start_webhook_floor(broker, Path(tmp))
                try:
                    latency(least_port, broker, link_id, WARM_UP)
                    least_figures, _ = latency(least_port, broker, link_id, args.webhooks)
                    fresh = [paid_event(link_id, 200_000 + n) for n in range(args.throughput)]
                    least_rate = throughput(least_port, fresh)
                finally:
                    stop(least)
            finally:
                stop(floor)
            stripe_calls = [r for r in standin.requests if "line_items" in r.path]
        finally:
            stop(server)

    http_p50, http_p99 = percentile(http_figures, 0.5), percentile(http_figures, 0.99)
    mqtt_p50, mqtt_p99 = percentile(mqtt_figures, 0.5), percentile(mqtt_figures, 0.99)
    p50, p99 = percentile(figures, 0.5), percentile(figures, 0.99)
    floor_sum = http_p50 + mqtt_p50
    n = args.webhooks

    print("floors (this run):")
    print(
        f"  cold start, bare Flask through aws-wsgi: median {ms(floor_start_median)} "
        f"(min {ms(min(floor_starts))}, max {ms(max(floor_starts))}, n={len(floor_starts)})"
    )
    print(f"  HTTP floor: p50 {ms(http_p50)}, p99 {ms(http_p99)} (n={n})")
    print(f"  HTTP floor: {floor_rate:.0f} requests/s from {SENDERS} senders (n={len(bodies)})")
    print(f"  MQTT floor: p50 {ms(mqtt_p50)}, p99 {ms(mqtt_p99)} (n={len(mqtt_figures)})")
    print("product:")
    print(
        f"  cold start: median {ms(start_median)} "
        f"(min {ms(min(starts))}, max {ms(max(starts))}, n={len(starts)})"
    )
    print(f"  webhook -> coinpulse: p50 {ms(p50)}, p99 {ms(p99)} (n={len(figures)})")
    print(f"  throughput: {rate:.0f} webhooks/s from {SENDERS} senders (n={len(bodies)})")

    floor_text = f"HTTP floor p50 {ms(http_p50)} + MQTT floor p50 {ms(mqtt_p50)}"
    budgets = [
        Budget(
            "cold start / floor",
            f"{ms(start_median)} / {ms(floor_start_median)}",
            start_median / floor_start_median,
            1.25,
            at_most=True,
        ),
        Budget(
            "webhook -> coinpulse p50 / (HTTP p50 + MQTT p50)",
            f"{ms(p50)} / ({floor_text} = {ms(floor_sum)})",
            p50 / floor_sum,
            1.5,
            at_most=True,
        ),
        Budget(
            "webhook -> coinpulse p99 / (HTTP p50 + MQTT p50)",
            f"{ms(p99)} / ({floor_text} = {ms(floor_sum)})",
            p99 / floor_sum,
            3,
            at_most=True,
        ),
        Budget(
            "webhooks/s / HTTP floor requests/s",
            f"{rate:.0f}/s / {floor_rate:.0f}/s",
            rate / floor_rate,
            0.5,
            at_most=False,
        ),
    ]
    print('budgets (README.md "Performance", product / floor):')
    for budget in budgets:
        print(budget.line())
    least_p50 = percentile(least_figures, 0.5)
    print("for context, not a budget: the least work a webhook must do (floor_webhook.py):")
    print(
        f"  webhook -> coinpulse p50 {ms(least_p50)} = {least_p50 / floor_sum:.2f}x "
        f"(HTTP p50 + MQTT p50); {least_rate:.0f} webhooks/s = {least_rate / floor_rate:.2f}x "
        "the HTTP floor's requests/s"
    )
    print(f"Stripe calls on the webhook path: {len(stripe_calls)}")
    over = sum(not budget.met for budget in budgets)
    print("budgets: all met" if over == 0 else f"budgets: {over} over")


if __name__ == "__main__":
    main()
