"""Play one round of Arcade Pay on this machine, every part real except Stripe.

Started here: a Mosquitto broker with TLS (a throw-away CA and a password file), the API
(``python app.py`` on a throw-away SQLite file), a registered machine, and the cabinet client
(``python -m arcade.cabinet``). The one pretend part is Stripe: a local stand-in answers the
API's Stripe calls, and the player's payment is the ``checkout.session.completed`` webhook
Stripe would send, signed with the webhook secret exactly as Stripe signs it.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.broker import TlsBroker, free_loopback_port, held_loopback_port  # noqa: E402
from tests.support.stripe_standin import StripeStandIn, checkout_session, event, sign_payload  # noqa: E402

MACHINE = "demo01"
PRICE = "price_demo_credit"
WEBHOOK_SECRET = "whsec_demo_only"  # noqa: S105 - the demo's own stand-in secret
STEP_TIMEOUT = 15.0


def say(text: str) -> None:
    print(text, flush=True)


def step(number: int, text: str) -> None:
    say(f"\n[{number}] {text}")


def request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """Send one HTTP request to 127.0.0.1:port and return (status, decoded JSON)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, data, {"Content-Type": "application/json", **(headers or {})})
    answer = conn.getresponse()
    raw = answer.read()
    conn.close()
    return answer.status, json.loads(raw) if raw else None


def wait_for(check, what: str, timeout: float = STEP_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise SystemExit(f"demo failed: {what} did not happen within {timeout:.0f} s")


def relay(process: subprocess.Popen, prefix: str) -> None:
    """Print a child's output line by line behind a prefix."""
    assert process.stdout is not None
    for line in process.stdout:
        say(f"  {prefix} | {line.rstrip()}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="arcade-demo-") as tmp_name:
        tmp = Path(tmp_name)
        processes: list[subprocess.Popen] = []
        try:
            return play(tmp, processes)
        finally:
            stop_all(processes)


def stop_all(processes: list[subprocess.Popen]) -> None:
    """Stop the demo's children (newest first), politely, then firmly."""
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def play(tmp: Path, processes: list[subprocess.Popen]) -> int:
    say("Arcade Pay demo: one paid credit, from webhook to cabinet and back.")
    say("Everything below is real (TLS broker, API, SQLite store, cabinet client) except Stripe,")
    say("whose API and webhook are played by a local stand-in (tests/support/stripe_standin.py).")

    step(1, "Broker: Mosquitto with TLS, a throw-away CA and a password file")
    broker = TlsBroker(tmp / "broker")
    say(f"  listening on {broker.url} (CA {broker.ca_path.name}, user {broker.username})")
    try:
        return play_with_broker(tmp, processes, broker)
    finally:
        # The cabinet and the API stop first: the broker going away under them would make the
        # cabinet show "out of order" after the round has passed.
        stop_all(processes)
        broker.close()


SEEN_ON_BROKER: set[str] = set()  # topics the watcher has printed a message of


def watch_broker(broker: TlsBroker) -> None:
    """Print every message the cabinets' topics carry, as a subscriber sees it."""
    subscriber = broker.subscriber("arcade/machine/#")
    shown = 0
    while True:
        messages = subscriber.messages
        for message in messages[shown:]:
            say(f"  broker | {message.topic} {json.dumps(message.payload)}")
            SEEN_ON_BROKER.add(message.topic)
        shown = len(messages)
        time.sleep(0.02)


def play_with_broker(tmp: Path, processes: list[subprocess.Popen], broker: TlsBroker) -> int:
    threading.Thread(target=watch_broker, args=(broker,), daemon=True).start()
    step(2, "Stripe: the local stand-in (the only pretend part)")
    with StripeStandIn(keep_alive=True) as stripe:
        stripe.add_price(PRICE, 50)
        say(f"  answering Stripe's API at {stripe.url}; one Price: {PRICE}, 0.50 USD per credit")

        # Held until the API listens on it (it may, with SO_REUSEADDR): no other program's
        # connection can take it in between.
        api_port, api_port_hold = held_loopback_port()
        env = {
            **os.environ,
            **broker.env(),
            "PORT": str(api_port),
            "DATABASE_URL": f"sqlite:///{tmp / 'arcade.db'}",
            "STRIPE_API_KEY": stripe.api_key,
            "STRIPE_API_BASE": stripe.url,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_PRICE_ID": PRICE,
        }
        env.pop("AWS_LAMBDA_FUNCTION_NAME", None)

        step(3, f"Machine: flask --app app machines add {MACHINE}")
        added = subprocess.run(
            [
                sys.executable,
                "-m",
                "flask",
                "--app",
                "app",
                "machines",
                "add",
                MACHINE,
                "--name",
                "Demo cabinet",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        token = json.loads(added.stdout.strip().splitlines()[-1])["token"]
        say(f"  registered {MACHINE}; its token goes to the cabinet")

        step(4, f"API: python app.py on http://127.0.0.1:{api_port}")
        api = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(api)
        threading.Thread(target=relay, args=(api, "api"), daemon=True).start()
        try:
            wait_for(lambda: request(api_port, "GET", "/status")[0] == 200, "the API starting")
        finally:
            if api_port_hold is not None:
                api_port_hold.close()

        step(5, f"Cabinet: python -m arcade.cabinet --machine {MACHINE}")
        cabinet_port = free_loopback_port()
        cabinet = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "arcade.cabinet",
                "--machine",
                MACHINE,
                "--api-url",
                f"http://127.0.0.1:{api_port}",
                "--http-port",
                str(cabinet_port),
                "--state-file",
                str(tmp / "cabinet.db"),
            ],
            cwd=ROOT,
            env={**env, "CABINET_TOKEN": token},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(cabinet)
        threading.Thread(target=relay, args=(cabinet, "cabinet"), daemon=True).start()
        wait_for(
            lambda: request(cabinet_port, "GET", "/credits")[1]["connected"],
            "the cabinet connecting to the broker",
        )
        auth = {"Authorization": f"Bearer {token}"}
        status, link = request(
            api_port, "POST", "/create-payment-link", {"machine_id": MACHINE}, auth
        )
        say(f"  the cabinet shows the QR code of {link['url']}")

        step(6, "Player pays for 1 credit: Stripe posts checkout.session.completed")
        session = checkout_session(
            id=f"cs_demo_{int(time.time())}",
            payment_link=link["payment_link_id"],
            client_reference_id=MACHINE,
            amount_subtotal=50,
        )
        payload = json.dumps(event("checkout.session.completed", session)).encode()
        status, answer = request(
            api_port,
            "POST",
            "/webhook",
            payload,
            {"Stripe-Signature": sign_payload(payload, WEBHOOK_SECRET)},
        )
        say(f"  POST /webhook → {status} {json.dumps(answer)}")
        if status != 200:
            raise SystemExit("demo failed: the webhook was not accepted")

        step(7, "The coinpulse reaches the cabinet")
        credits = wait_for(
            lambda: request(cabinet_port, "GET", "/credits")[1]["credits"],
            "a credit reaching the cabinet",
        )
        say(f"  the cabinet counts {credits} credit(s): the game starts")

        step(8, "The game ends: the game tells the cabinet, the cabinet tells the API")
        status, answer = request(cabinet_port, "POST", "/game-over")
        say(f"  POST cabinet /game-over → {status} {json.dumps(answer)}")
        wait_for(
            lambda: (
                request(api_port, "GET", f"/machines/{MACHINE}", None, auth)[1]["credits"]["used"]
                == 1
            ),
            "the game over reaching the API",
        )
        wait_for(
            lambda: f"arcade/machine/{MACHINE}/gameover" in SEEN_ON_BROKER,
            "the gameover message reaching the broker's subscribers",
        )

        wait_for(
            lambda: (
                request(api_port, "GET", f"/machines/{MACHINE}", None, auth)[1]["payments"][0][
                    "status"
                ]
                == "credited"
            ),
            "the cabinet's confirmation that it fired the coins",
        )

        step(9, f"GET /machines/{MACHINE}")
        status, state = request(api_port, "GET", f"/machines/{MACHINE}", None, auth)
        say(json.dumps(state, indent=2))
        granted = state["credits"]["granted"] == 1 and state["payments"][0]["status"] == (
            "credited"
        )
        closed = state["state"] == "idle" and state["session"] is None
        if not (granted and closed):
            raise SystemExit("demo failed: the machine's state is not what one round leaves")
        say(
            "\nDemo passed: 1 credit granted, delivered and confirmed by the cabinet, the game"
            " played, the session closed."
        )
        return 0


if __name__ == "__main__":
    sys.exit(main())
