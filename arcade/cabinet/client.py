"""The cabinet: coinpulses in over MQTT, credits and coins out, game overs sent to the API.

The broker keeps this cabinet's session between connections (fixed client id, clean session
off), so QoS 1 coinpulses published while it was offline arrive when it reconnects. Each pulse
is acknowledged only after its payment is committed to the local ledger: a crash before the
commit means the broker sends it again, and the ledger's ``paymentId`` key means a pulse sent
again never adds credits twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import ssl
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from arcade.cabinet.actions import CoinAction, PrintCoinAction
from arcade.cabinet.api import Answer, ApiClient
from arcade.cabinet.display import qr_text
from arcade.cabinet.errors import CabinetSettingsError
from arcade.cabinet.ledger import CabinetLedger, GameOver
from arcade.cabinet.local_http import LocalServer
from arcade.cabinet.settings import CabinetSettings
from arcade.errors import SettingsError
from arcade.logs import log_event
from arcade.mqtt import broker_tls_context

logger = logging.getLogger(__name__)


class Cabinet:
    """One cabinet's client, usable in-process: ``start()``, ``stop()``, ``credits``."""

    def __init__(
        self,
        settings: CabinetSettings,
        *,
        coin_action: CoinAction | None = None,
        out: TextIO | None = None,
        api: ApiClient | None = None,
    ):
        self.settings = settings
        self.out = out
        self.coin_action: CoinAction = coin_action or PrintCoinAction(out)
        self.api = api or ApiClient(settings.api_url, settings.token, timeout=settings.api_timeout)
        self.payment_url: str | None = settings.qr_url
        self.http_port: int | None = None
        self.game_over_attempts = 0  # API calls made for game overs, this run
        self.game_overs_sent = 0  # game overs the API accepted, this run
        self.coins_fired = 0  # coin actions called, this run

        self._ledger: CabinetLedger | None = None
        self._client: mqtt.Client | None = None
        self._server: LocalServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._coin_wake = threading.Event()
        self._game_over_wake = threading.Event()
        self._changed = threading.Condition()
        self._connected = False
        self._subscribed = False

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Open the ledger, connect to the broker, and start the workers and the local server."""
        self.settings.check()
        self._stop.clear()
        try:
            self._ledger = CabinetLedger(self.settings.state_path)
        except sqlite3.Error as exc:
            raise CabinetSettingsError(
                f"--state-file {self.settings.state_path} cannot be opened as a SQLite file"
            ) from exc
        try:
            if self.settings.http_port is not None:
                self._server = self._local_server(self.settings.http_port)
                self.http_port = self._server.port
                self._server.start()
            self._client = self._mqtt_client()
            self._client.connect_async(
                self.settings.broker_host or "", self.settings.broker_port, self.settings.keepalive
            )
            self._client.loop_start()
            self._spawn("cabinet-coins", self._coin_worker)
            self._spawn("cabinet-gameover", self._game_over_worker)
            self._spawn("cabinet-qr", self._qr_worker)
        except BaseException:
            self.stop()
            raise
        log_event(
            logger,
            "cabinet_started",
            machine_id=self.settings.machine_id,
            client_id=self.settings.client_id,
            credits=self.credits,
            state_file=str(self.settings.state_path),
            http_port=self.http_port,
        )

    def _local_server(self, port: int) -> LocalServer:
        try:
            return LocalServer(port, game_over=self._game_over_call, status=self.status)
        except OSError as exc:
            raise CabinetSettingsError(
                f"--http-port {port} cannot be used on 127.0.0.1 (is another cabinet running?)"
            ) from exc

    def stop(self) -> None:
        """Disconnect (the broker keeps the session), stop every worker, close the ledger."""
        if self._ledger is None:
            return
        self._stop.set()
        self._coin_wake.set()
        self._game_over_wake.set()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        close = getattr(self.coin_action, "close", None)
        if callable(close):
            close()
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        log_event(logger, "cabinet_stopped", machine_id=self.settings.machine_id)

    def __enter__(self) -> Cabinet:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- state --------------------------------------------------------------------------------
    @property
    def credits(self) -> int:
        """Return the credits left, as the local ledger counts them."""
        return self._require_ledger().credits

    @property
    def connected(self) -> bool:
        return self._connected

    def status(self) -> dict[str, Any]:
        """Return what the local server's ``GET /credits`` answers."""
        return {
            "machine_id": self.settings.machine_id,
            "credits": self.credits,
            "connected": self._connected,
        }

    # --- game over ----------------------------------------------------------------------------
    def game_over(self, source: str = "call") -> GameOver:
        """Record a game over (one credit used) and have it sent to the API in the background."""
        record = self._require_ledger().add_game_over(source)
        log_event(
            logger,
            "game_over",
            machine_id=self.settings.machine_id,
            game_over_id=record.id,
            source=source,
            used_credit=record.used_credit,
            credits_left=record.credits_left,
        )
        self._notify()
        self._game_over_wake.set()
        if record.used_credit and record.credits_left == 0:
            self._show_qr()  # back to idle: the attract screen again
        return record

    def _game_over_call(self) -> dict[str, Any]:
        record = self.game_over("http")
        return {
            "status": "accepted",
            "used_credit": record.used_credit,
            "credits_left": record.credits_left,
        }

    # --- waiting (tests, scripts) -------------------------------------------------------------
    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` holds; return whether it did within ``timeout``."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Wait until connected and subscribed to the coinpulse topic."""
        return self.wait_until(lambda: self._connected and self._subscribed, timeout)

    def wait_credits(self, credits: int, timeout: float = 5.0) -> bool:
        return self.wait_until(lambda: self.credits >= credits, timeout)

    def wait_coins(self, coins: int, timeout: float = 5.0) -> bool:
        return self.wait_until(lambda: self.coins_fired >= coins, timeout)

    def wait_game_overs_sent(self, count: int, timeout: float = 5.0) -> bool:
        return self.wait_until(lambda: self.game_overs_sent >= count, timeout)

    def wait_payment_url(self, timeout: float = 5.0) -> bool:
        return self.wait_until(lambda: self.payment_url is not None, timeout)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # --- MQTT ---------------------------------------------------------------------------------
    def _mqtt_client(self) -> mqtt.Client:
        settings = self.settings
        # A fixed id and clean_session=False: the broker keeps the subscription and queues
        # QoS 1 pulses while we are away. manual_ack: PUBACK only after the ledger commit.
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
            manual_ack=True,
        )
        client.reconnect_delay_set(min_delay=1, max_delay=settings.reconnect_max_delay)
        if settings.mqtt_username:
            client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        if settings.broker_tls:
            client.tls_set_context(self._tls_context())
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _tls_context(self) -> ssl.SSLContext:
        try:
            return broker_tls_context(self.settings.mqtt_ca_cert)
        except SettingsError as exc:
            raise CabinetSettingsError(str(exc)) from exc

    def _on_connect(self, client: mqtt.Client, _userdata, flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            log_event(
                logger,
                "mqtt_connect_refused",
                level=logging.WARNING,
                machine_id=self.settings.machine_id,
                reason=str(reason_code),
            )
            return
        log_event(
            logger,
            "mqtt_connected",
            machine_id=self.settings.machine_id,
            client_id=self.settings.client_id,
            session_present=bool(flags.session_present),
        )
        # Subscribing again on a kept session is harmless, and needed when the broker lost it.
        client.subscribe(self.settings.coinpulse_topic, qos=1)
        with self._changed:
            self._connected = True
            self._changed.notify_all()

    def _on_connect_fail(self, _client, _userdata) -> None:
        log_event(
            logger,
            "mqtt_unreachable",
            level=logging.WARNING,
            machine_id=self.settings.machine_id,
            host=self.settings.broker_host,
            port=self.settings.broker_port,
        )

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _props) -> None:
        ok = all(not code.is_failure for code in reason_codes)
        log_event(
            logger,
            "mqtt_subscribed" if ok else "mqtt_subscribe_refused",
            level=logging.INFO if ok else logging.WARNING,
            topic=self.settings.coinpulse_topic,
        )
        with self._changed:
            self._subscribed = ok
            self._changed.notify_all()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        with self._changed:
            self._connected = self._subscribed = False
            self._changed.notify_all()
        if not self._stop.is_set():
            log_event(
                logger,
                "mqtt_disconnected",
                level=logging.WARNING,
                machine_id=self.settings.machine_id,
                reason=str(reason_code),
            )

    def _on_message(self, client: mqtt.Client, _userdata, message: mqtt.MQTTMessage) -> None:
        try:
            self._take_pulse(bytes(message.payload), redelivered=bool(message.dup))
        except sqlite3.Error as exc:
            # Not acknowledged: the broker sends it again on the next connection.
            log_event(
                logger,
                "coinpulse_not_recorded",
                level=logging.ERROR,
                machine_id=self.settings.machine_id,
                exception=type(exc).__name__,
            )
            return
        client.ack(message.mid, message.qos)

    def _take_pulse(self, raw: bytes, *, redelivered: bool) -> None:
        """Record one coinpulse: commit first, the PUBACK follows when this returns."""
        pulse = _decode(raw)
        machine_id = self.settings.machine_id
        credits = pulse.get("credits") if pulse else None
        if (
            pulse is None
            or pulse.get("machineId") != machine_id
            or isinstance(credits, bool)
            or not isinstance(credits, int)
            or credits < 1
        ):
            log_event(
                logger,
                "coinpulse_rejected",
                level=logging.WARNING,
                machine_id=machine_id,
                bytes=len(raw),
            )
            return
        payment_id = pulse.get("paymentId")
        if not isinstance(payment_id, str) or not payment_id:
            # A sender without paymentId: the same bytes sent again are still one payment.
            payment_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        grant = self._require_ledger().add_payment(payment_id, credits)
        if grant is None:
            log_event(
                logger,
                "coinpulse_duplicate",
                machine_id=machine_id,
                payment_id=payment_id,
                redelivered=redelivered,
            )
            return
        log_event(
            logger,
            "coinpulse_received",
            machine_id=machine_id,
            payment_id=payment_id,
            credits=credits,
            credits_left=grant.credits_left,
            redelivered=redelivered,
        )
        self._notify()
        self._coin_wake.set()

    # --- workers ------------------------------------------------------------------------------
    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _coin_worker(self) -> None:
        """Fire one coin per credit, oldest payment first; a restart finishes what is left."""
        ledger = self._require_ledger()
        while not self._stop.is_set():
            coin = ledger.next_coin()
            if coin is None:
                self._coin_wake.wait()
                self._coin_wake.clear()
                continue
            # Fired, then marked: a crash in between fires that coin again, never loses it.
            try:
                self.coin_action(coin)
            except Exception as exc:  # a plug-in action may fail any way; keep the coin
                log_event(
                    logger,
                    "coin_action_failed",
                    level=logging.ERROR,
                    machine_id=self.settings.machine_id,
                    payment_id=coin.payment_id,
                    exception=type(exc).__name__,
                )
                self._stop.wait(1.0)
                continue
            ledger.coin_fired(coin)
            with self._changed:
                self.coins_fired += 1
                self._changed.notify_all()
            log_event(
                logger,
                "coin_fired",
                machine_id=self.settings.machine_id,
                payment_id=coin.payment_id,
                coin=coin.number,
                of=coin.of,
            )

    def _game_over_worker(self) -> None:
        """Send queued game overs to the API in order, each retried until it is answered."""
        ledger = self._require_ledger()
        while not self._stop.is_set():
            record = ledger.next_game_over()
            if record is None:
                self._game_over_wake.wait()
                self._game_over_wake.clear()
                continue
            answer = self.api.post_with_retry(
                "/gameover",
                {"machine_id": self.settings.machine_id},
                policy=self.settings.retry,
                stop=self._stop,
                log_ids={"machine_id": self.settings.machine_id, "game_over_id": record.id},
                # Unique even when the state file is made anew and the ids start over.
                idempotency_key=f"{self.settings.machine_id}-{record.ended_at}-{record.id}",
            )
            self._finish_game_over(record, answer)
            if answer.outcome in ("gave_up", "stopped"):
                # Left queued: the next game over, or the next start, tries again.
                self._game_over_wake.wait()
                self._game_over_wake.clear()

    def _finish_game_over(self, record: GameOver, answer: Answer) -> None:
        status = {"ok": "sent", "rejected": "rejected"}.get(answer.outcome, "pending")
        self._require_ledger().finish_game_over(record.id, status=status, attempts=answer.attempts)
        with self._changed:
            self.game_over_attempts += answer.attempts
            if answer.ok:
                self.game_overs_sent += 1
            self._changed.notify_all()
        event = {"ok": "gameover_sent", "rejected": "gameover_rejected"}.get(
            answer.outcome, f"gameover_{answer.outcome}"
        )
        log_event(
            logger,
            event,
            level=logging.INFO if answer.ok or answer.outcome == "stopped" else logging.WARNING,
            machine_id=self.settings.machine_id,
            game_over_id=record.id,
            status=answer.status,
            code=answer.body.get("code"),
            attempts=answer.attempts,
        )

    def _qr_worker(self) -> None:
        """Get the machine's payment link (unless given one) and show its QR code while idle."""
        if self.payment_url is None:
            answer = self.api.post_with_retry(
                "/create-payment-link",
                {"machine_id": self.settings.machine_id},
                policy=self.settings.retry,
                stop=self._stop,
                log_ids={"machine_id": self.settings.machine_id},
            )
            url = answer.body.get("url")
            if not answer.ok or not isinstance(url, str):
                if answer.outcome != "stopped":
                    log_event(
                        logger,
                        "payment_link_failed",
                        level=logging.WARNING,
                        machine_id=self.settings.machine_id,
                        status=answer.status,
                        code=answer.body.get("code"),
                    )
                return
            with self._changed:
                self.payment_url = url
                self._changed.notify_all()
        if self.credits == 0:
            self._show_qr()

    def _show_qr(self) -> None:
        url = self.payment_url
        if url is None:
            return
        out = self.out or sys.stdout
        out.write(qr_text(url, invert=self.settings.qr_invert))
        out.flush()
        log_event(logger, "qr_shown", machine_id=self.settings.machine_id, url=url)

    def _require_ledger(self) -> CabinetLedger:
        if self._ledger is None:
            raise RuntimeError("the cabinet is not started")
        return self._ledger


def _decode(raw: bytes) -> dict[str, Any] | None:
    with contextlib.suppress(ValueError):
        value = json.loads(raw)
        if isinstance(value, dict):
            return value
    return None
