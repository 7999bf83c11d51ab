"""Command line: ``python -m arcade.cabinet --machine cab001`` and ``... game-over``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from arcade.cabinet.actions import load_coin_action
from arcade.cabinet.api import RetryPolicy
from arcade.cabinet.client import Cabinet
from arcade.cabinet.errors import CabinetError
from arcade.cabinet.settings import (
    DEFAULT_API_URL,
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_HTTP_PORT,
    CabinetSettings,
)
from arcade.common.logs import configure_logging


def parser() -> argparse.ArgumentParser:
    """Return the command line's parser."""
    env = os.environ
    top = argparse.ArgumentParser(
        prog="python -m arcade.cabinet",
        description="Run an Arcade Pay cabinet: credits from MQTT, game overs to the API.",
    )
    top.add_argument(
        "--machine",
        default=env.get("CABINET_MACHINE_ID"),
        help="machine id, as registered (env CABINET_MACHINE_ID)",
    )
    top.add_argument(
        "--api-url",
        default=env.get("CABINET_API_URL", DEFAULT_API_URL),
        help=f"the API's address (env CABINET_API_URL; default {DEFAULT_API_URL})",
    )
    top.add_argument(
        "--token",
        default=None,
        help="the machine token from 'machines add' (better: env CABINET_TOKEN)",
    )
    top.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="SQLite file for credits and seen payments (default cabinet-<id>.db)",
    )
    top.add_argument(
        "--http-port",
        type=int,
        default=env.get("CABINET_HTTP_PORT", str(DEFAULT_HTTP_PORT)),
        help=f"local port on 127.0.0.1 for the game's POST /game-over "
        f"(default {DEFAULT_HTTP_PORT}; -1 turns it off)",
    )
    top.add_argument(
        "--pulse-key",
        default=None,
        help="the API's Ed25519 public key, base64url (env PULSE_PUBLIC_KEY; default: the one"
        " kept in the state file, else fetched once from the API's GET /pulse-key)",
    )
    top.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=None,
        help="seconds between two heartbeats to the API (env CABINET_HEARTBEAT_SECONDS;"
        f" default {DEFAULT_HEARTBEAT_SECONDS:g})",
    )
    top.add_argument(
        "--qr-url",
        default=None,
        help="show this URL's QR code instead of asking the API for the link",
    )
    top.add_argument(
        "--qr-invert",
        action="store_true",
        help="draw the QR code inverted (for light-on-dark terminals)",
    )
    top.add_argument(
        "--coin-action", default="print", help="print (default), gpio, or package.module:factory"
    )
    top.add_argument("--gpio-pin", type=int, default=17, help="BCM pin of the coin line (17)")
    top.add_argument("--pulse-ms", type=float, default=100, help="coin pulse width (100 ms)")
    top.add_argument("--gap-ms", type=float, default=100, help="rest between coins (100 ms)")
    top.add_argument(
        "--active-low", action="store_true", help="drive the pin low for a coin instead of high"
    )
    top.add_argument(
        "--retry-max-delay",
        type=float,
        default=30.0,
        help="longest wait between API attempts (30 s)",
    )
    top.add_argument(
        "--retry-give-up",
        type=float,
        default=None,
        help="stop retrying a call after this many seconds (default: never)",
    )
    commands = top.add_subparsers(dest="command", metavar="[game-over]")
    end = commands.add_parser(
        "game-over", help="tell the running cabinet a game ended (via its local HTTP port)"
    )
    end.add_argument("--timeout", type=float, default=5.0)
    return top


def run(options: argparse.Namespace) -> int:
    """Run the cabinet until SIGINT or SIGTERM; SIGUSR1 means a game ended."""
    if not options.machine:
        print("arcade.cabinet: --machine is required", file=sys.stderr)
        return 2
    try:
        given = {
            "token": options.token,
            "api_url": options.api_url,
            "state_file": options.state_file,
            "qr_url": options.qr_url,
            "pulse_key": options.pulse_key,
            "heartbeat_seconds": options.heartbeat_seconds,
        }
        settings = CabinetSettings.from_env(
            options.machine,
            **{name: value for name, value in given.items() if value is not None},
            http_port=None if options.http_port < 0 else options.http_port,
            qr_invert=options.qr_invert,
            retry=RetryPolicy(
                max_delay=options.retry_max_delay, give_up_after=options.retry_give_up
            ),
        )
        action = load_coin_action(
            options.coin_action,
            pin=options.gpio_pin,
            pulse_ms=options.pulse_ms,
            gap_ms=options.gap_ms,
            active_high=not options.active_low,
        )
        cabinet = Cabinet(settings, coin_action=action)
        cabinet.start()
    except CabinetError as exc:
        print(f"arcade.cabinet: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    install_signal_handlers(cabinet, done)
    try:
        done.wait()
    finally:
        cabinet.stop()
    return 0


def install_signal_handlers(cabinet: Cabinet, done: threading.Event) -> None:
    """SIGUSR1: a game ended; SIGINT / SIGTERM: stop."""

    def game_over(_signum: int, _frame: FrameType | None) -> None:
        # Not in the handler itself: it interrupts the main thread wherever it is.
        threading.Thread(target=cabinet.game_over, args=("signal",), daemon=True).start()

    def finish(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGUSR1, game_over)
    signal.signal(signal.SIGINT, finish)
    signal.signal(signal.SIGTERM, finish)


def send_game_over(port: int, timeout: float) -> int:
    """POST /game-over to a cabinet running on this computer; print its answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/game-over",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            answer = json.loads(response.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):
        print(f"arcade.cabinet: no cabinet answered on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the command."""
    options = parser().parse_args(argv)
    configure_logging()
    if options.command == "game-over":
        return send_game_over(options.http_port, options.timeout)
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
