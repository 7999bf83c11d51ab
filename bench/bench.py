"""Measure SPEC.md's budgets and print the figures (never run as a test).

    .venv/bin/python bench/bench.py [--webhooks 400] [--cold-starts 7]

1. Cold start: a fresh interpreter imports ``app`` and serves one ``/status`` through
   ``lambda_handler`` (budget ≤ 150 ms, median).
2. Webhook → coinpulse at a subscriber: ``python app.py`` with a SQLite store, a loopback TLS
   Mosquitto and the Stripe stand-in answering in 100 ms (budget p50 ≤ 3 ms, p99 ≤ 10 ms).
3. Throughput: 8 concurrent senders on one ``python app.py`` process (budget ≥ 600/s).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.broker import TlsBroker, free_loopback_port  # noqa: E402
from tests.lambda_events import make_v1_event  # noqa: E402
from tests.stripe_standin import StripeStandIn, checkout_session, event, sign_payload  # noqa: E402

SECRET = "whsec_bench"
PRICE = "price_bench"

COLD_START = """
import json, sys, time
started = time.perf_counter()
import app
answer = app.lambda_handler(json.loads(sys.argv[1]), None)
elapsed = time.perf_counter() - started
assert answer["statusCode"] == 200, answer
print(elapsed)
"""


def cold_start(runs: int) -> list[float]:
    """Return the seconds each fresh interpreter took to import app and answer /status."""
    env = {
        **os.environ,
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_REGION": "us-east-1",
        "DATABASE_URL": "dynamodb://bench",
    }
    event_json = json.dumps(make_v1_event(path="/status"))
    figures = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", COLD_START, event_json],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        figures.append(float(out.stdout.strip().splitlines()[-1]))
    return figures


def start_server(
    broker: TlsBroker, standin: StripeStandIn, workdir: Path
) -> tuple[subprocess.Popen, int]:
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
        "ADMIN_API_KEY": "bench-admin",
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
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/status")
            if conn.getresponse().status == 200:
                conn.close()
                return server, port
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("python app.py did not start; see server.log")


def our_link(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"machine_id": "cab001"})
    conn.request(
        "POST",
        "/create-payment-link",
        body,
        {"Content-Type": "application/json", "Authorization": "Bearer bench-admin"},
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


def latency(port: int, broker: TlsBroker, link_id: str, count: int) -> list[float]:
    """Return seconds from sending each webhook to its coinpulse reaching a subscriber."""
    subscriber = broker.subscriber("arcade/machine/cab001/coinpulse")
    arrived = threading.Event()
    conn = http.client.HTTPConnection("127.0.0.1", port)
    figures = []
    try:
        for n in range(count):
            body = paid_event(link_id, n)
            before = len(subscriber.messages)
            arrived.clear()
            started = time.perf_counter()
            status = post_webhook(conn, body)
            while len(subscriber.messages) == before:
                time.sleep(0.00005)
            figures.append(time.perf_counter() - started)
            assert status == 200, status
    finally:
        conn.close()
        subscriber.close()
    return figures


def throughput(port: int, link_id: str, total: int, senders: int = 8) -> float:
    """Return webhooks per second answered 200 by ``senders`` concurrent clients."""
    bodies = [paid_event(link_id, 100_000 + n) for n in range(total)]
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
        raise RuntimeError(f"{len(failures)} webhooks failed: {sorted(set(failures))}")
    return total / elapsed


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-starts", type=int, default=7)
    parser.add_argument("--webhooks", type=int, default=400)
    parser.add_argument("--throughput", type=int, default=2000)
    args = parser.parse_args()

    starts = cold_start(args.cold_starts)
    print(
        f"cold start: median {statistics.median(starts) * 1000:.1f} ms "
        f"(min {min(starts) * 1000:.1f}, max {max(starts) * 1000:.1f}, n={len(starts)}; "
        "budget 150 ms)"
    )

    with (
        tempfile.TemporaryDirectory() as tmp,
        TlsBroker(Path(tmp) / "broker") as broker,
        StripeStandIn(keep_alive=True) as standin,
    ):
        standin.add_price(PRICE, 50)
        standin.latency = 0.1
        server, port = start_server(broker, standin, Path(tmp))
        try:
            link_id = our_link(port)
            latency(port, broker, link_id, 20)  # warm up: connections, caches
            figures = latency(port, broker, link_id, args.webhooks)
            print(
                f"webhook -> coinpulse: p50 {percentile(figures, 0.5) * 1000:.2f} ms, "
                f"p99 {percentile(figures, 0.99) * 1000:.2f} ms (n={len(figures)}; "
                "budget p50 3 ms, p99 10 ms)"
            )
            rate = throughput(port, link_id, args.throughput)
            print(
                f"throughput: {rate:.0f} webhooks/s from 8 senders "
                f"(n={args.throughput}; budget 600/s)"
            )
            stripe_calls = [r for r in standin.requests if "line_items" in r.path]
            print(f"Stripe calls on the webhook path: {len(stripe_calls)}")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
