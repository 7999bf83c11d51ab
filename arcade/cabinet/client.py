"""The cabinet: coinpulses in over MQTT, credits and coins out, game overs sent to the API.

The broker keeps this cabinet's session between connections (fixed client id, clean session
off), so QoS 1 coinpulses published while it was offline arrive when it reconnects. A pulse
counts only when it is signed by the API's pinned Ed25519 key; the cabinet does not connect
until it has that key. Each pulse it counts is acknowledged only after its payment is committed
to the local ledger, whose ``paymentId`` key means a pulse sent again never adds credits twice.
Every other message is logged, acknowledged and dropped: nothing a message holds can stop the
next one from arriving. After a payment's coins are fired the cabinet confirms it to the API.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from arcade import wire
from arcade.cabinet.actions import CoinAction, PrintCoinAction
from arcade.cabinet.api import Answer, ApiClient, retry
from arcade.cabinet.display import out_of_order_text, qr_text
from arcade.cabinet.errors import ApiUnreachable, CabinetSettingsError
from arcade.cabinet.ledger import CabinetLedger, GameOver
from arcade.cabinet.local_http import LocalServer
from arcade.cabinet.messages import Refused, pulse_key_from_answer, read_signed
from arcade.cabinet.settings import CabinetSettings
from arcade.common.logs import RateLimited, log_event

logger = logging.getLogger(__name__)

WATCH_SECONDS = 0.2  # how often the MQTT link's honesty is checked
HEARTBEAT_GRACE_SECONDS = 5.0  # the first heartbeat waits this long for MQTT to come up
# Answers to a confirmation that end it: the API does not know the payment, or the request,
# or the grant was cancelled (refunded or disputed) before it was delivered.
FINAL_ACK_STATUSES = frozenset({400, 404, 409})
Item = TypeVar("Item")


@dataclass(frozen=True)
class _Unrecorded:
    """A signed pulse the ledger could not take yet: recorded, then acknowledged, later."""

    mid: int
    qos: int
    payment_id: str
    credits: int


def _link_callback(method: Callable[..., None]) -> Callable[..., None]:
    """Make an MQTT link callback safe for paho's thread: what it raises is logged by the
    callback's name, never raised into paho, and the screen is redrawn after it either way."""

    @functools.wraps(method)
    def run(self: Cabinet, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception as exc:
            self._callback_failed(method.__name__.removeprefix("_"), exc)
        finally:
            self._refresh()

    return run


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
        self.confirmations_sent = 0  # payments the API confirmed, this run
        self.heartbeats_sent = 0  # heartbeats the API answered 2xx, this run
        self.messages_refused = 0  # MQTT messages logged and dropped, this run
        self.pulse_key: str | None = None  # the API's public key, once pinned
        self.client_id = f"cabinet-{settings.machine_id}"  # the kept random one from start()

        self._public_key: Any = None
        self._ledger: CabinetLedger | None = None
        self._client: mqtt.Client | None = None
        self._server: LocalServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._coin_wake = threading.Event()
        self._game_over_wake = threading.Event()
        self._confirm_wake = threading.Event()
        self._heartbeat_wake = threading.Event()
        self._watch_wake = threading.Event()
        self._changed = threading.Condition()
        self._connected = False  # CONNACK accepted, no disconnect since
        self._subscribed = False  # the coinpulse subscription was granted on this connection
        self._subscribe_mid: int | None = None
        self._link_problem: str | None = None  # why the last connection failed, for a person
        self._unrecorded: deque[_Unrecorded] = deque()
        self._refusals = RateLimited()  # message_refused lines per minute
        self._screen_lock = threading.Lock()
        self._screen: tuple[str, str | None] | None = None
        self._was_connected = False
        self._network_lock = threading.Lock()
        self._network_started = False  # loop_start called: from then on its thread must live

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Open the ledger, pin the API's key, connect to the broker, start the workers."""
        self.settings.check()
        self._stop.clear()
        try:
            self._ledger = CabinetLedger(self.settings.state_path)
            self.client_id = self._ledger.client_id(self.settings.machine_id)
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
            known = self._known_pulse_key()
            if known is not None:
                self._pin(*known)
                self._connect()
            else:
                self._spawn("cabinet-pulse-key", self._key_worker)
            self._spawn("cabinet-coins", self._coin_worker)
            self._spawn("cabinet-gameover", self._game_over_worker)
            self._spawn("cabinet-confirm", self._confirm_worker)
            self._spawn("cabinet-qr", self._qr_worker)
            self._spawn("cabinet-heartbeat", self._heartbeat_worker)
            self._spawn("cabinet-watch", self._watch_worker)
        except BaseException:
            self.stop()
            raise
        self._log(
            "cabinet_started",
            client_id=self.client_id,
            credits=self.credits,
            state_file=str(self.settings.state_path),
            http_port=self.http_port,
            pulse_key=self.pulse_key,
        )
        self._refresh()

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
        for wake in (
            self._coin_wake,
            self._game_over_wake,
            self._confirm_wake,
            self._heartbeat_wake,
            self._watch_wake,
        ):
            wake.set()
        self._notify()  # whoever waits for a condition sees the stop
        if self._server is not None:
            self._server.close()
            self._server = None
        for thread in self._threads:  # the watcher first restarts nothing once stop is set
            thread.join()
        self._threads.clear()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        close = getattr(self.coin_action, "close", None)
        if callable(close):
            close()
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        self._log("cabinet_stopped")

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
        """Tell whether pulses can arrive: connected, subscribed, paho's thread alive."""
        return self.out_of_order_reason() is None

    def out_of_order_reason(self) -> str | None:
        """Return why no pulse can arrive now, for a person, or None while they can."""
        if self._public_key is None:
            return "waiting for the API's pulse key"
        client = self._client
        if client is None:
            return "not started"
        if not _network_thread_alive(client):
            return "the MQTT network thread stopped"
        if not (self._connected and client.is_connected()):
            return self._link_problem or "connecting to the broker"
        if not self._subscribed:
            return "subscribing to the coinpulse topic"
        return None

    def status(self) -> dict[str, Any]:
        """Return what the local server's ``GET /credits`` answers."""
        reason = self.out_of_order_reason()
        return {
            "machine_id": self.settings.machine_id,
            "credits": self.credits,
            "connected": reason is None,
            "out_of_order": reason is not None,
            "reason": None if reason is None else f"out of order: {reason}",
            # Hidden while out of order: a payment now would wait for a link that is down.
            "payment_url": self.payment_url if reason is None else None,
        }

    # --- game over ----------------------------------------------------------------------------
    def game_over(self, source: str = "call") -> GameOver:
        """Record a game over (a game's credits used) and have it sent to the API in the
        background, with what the game cost."""
        record = self._require_ledger().add_game_over(source)
        self._log(
            "game_over",
            game_over_id=record.id,
            source=source,
            used_credit=record.used_credit,
            credits_left=record.credits_left,
        )
        self._notify()
        self._game_over_wake.set()
        self._refresh()  # back to idle after the last credit: the QR code again
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
        """Wait until the key is pinned, the broker connected and the topics subscribed."""
        return self.wait_until(lambda: self.connected, timeout)

    def wait_credits(self, credits: int, timeout: float = 5.0) -> bool:
        return self.wait_until(lambda: self.credits >= credits, timeout)

    def wait_coins(self, coins: int, timeout: float = 5.0) -> bool:
        return self.wait_until(lambda: self.coins_fired >= coins, timeout)

    def wait_game_overs_sent(self, count: int, timeout: float = 5.0) -> bool:
        return self.wait_until(lambda: self.game_overs_sent >= count, timeout)

    def wait_payment_url(self, timeout: float = 5.0) -> bool:
        return self.wait_until(lambda: self.payment_url is not None, timeout)

    def wait_confirmations(self, count: int, timeout: float = 5.0) -> bool:
        return self.wait_until(lambda: self.confirmations_sent >= count, timeout)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # --- the API's public key -----------------------------------------------------------------
    def _known_pulse_key(self) -> tuple[str, str] | None:
        """Return (key, where from) from the settings or the state file, or None."""
        if self.settings.pulse_key is not None:
            return self.settings.pulse_key.strip(), "settings"
        kept = self._require_ledger().pulse_key()
        if kept is None:
            return None
        try:
            wire.load_public_key(kept)
        except wire.WireError:
            self._log(
                "pulse_key_unusable",
                level=logging.WARNING,
                reason="the key kept in the state file is not an Ed25519 public key",
            )
            return None
        return kept, "state_file"

    def _pin(self, key: str, source: str) -> None:
        """Use ``key`` for every message from now on and keep it in the state file."""
        ledger = self._require_ledger()
        if ledger.pulse_key() != key:
            ledger.keep_pulse_key(key)
        self._public_key = wire.load_public_key(key)
        self.pulse_key = key
        self._log("pulse_key_pinned", source=source, public_key=key)
        self._notify()

    def _key_worker(self) -> None:
        """Fetch the API's public key once, with back-off until it comes, then connect."""

        def attempt() -> str | None:
            try:
                status, answer = self.api.get("/pulse-key", token=False)
                if status != 200:
                    raise Refused(f"http_{status}")
                key = pulse_key_from_answer(answer)
            except (ApiUnreachable, Refused) as exc:
                return exc.reason
            self._pin(key, "api")
            self._connect()
            self._refresh()
            return None

        # Never given up: without the key no pulse can be believed, so nothing else can work.
        retry(
            attempt,
            policy=self.settings.retry,
            stop=self._stop,
            event="pulse_key_retry",
            log_ids={"machine_id": self.settings.machine_id},
            may_give_up=False,
        )

    # --- MQTT ---------------------------------------------------------------------------------
    def _mqtt_client(self) -> mqtt.Client:
        settings = self.settings
        # A fixed id and clean_session=False: the broker keeps the subscription and queues
        # QoS 1 pulses while we are away. manual_ack: PUBACK only after the ledger commit.
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
            manual_ack=True,
        )
        # Our callbacks catch everything; should one still raise, paho's thread carries on.
        client.suppress_exceptions = True
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
            return wire.broker_tls_context(self.settings.mqtt_ca_cert)
        except wire.WireError as exc:
            raise CabinetSettingsError(str(exc)) from exc

    def _connect(self) -> None:
        """Start paho's network thread; it connects, and reconnects with back-off."""
        with self._network_lock:
            self._start_network()

    def _start_network(self) -> None:
        client = self._client
        if client is None or self._stop.is_set() or self._network_started:
            return
        client.connect_async(
            self.settings.broker_host or "", self.settings.broker_port, self.settings.keepalive
        )
        client.loop_start()
        self._network_started = True

    @_link_callback
    def _on_connect(self, client: mqtt.Client, _userdata, flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            self._link_problem = f"the broker refused the MQTT login ({reason_code})"
            self._log("mqtt_connect_refused", level=logging.WARNING, reason=str(reason_code))
            return
        self._log(
            "mqtt_connected",
            client_id=self.client_id,
            session_present=bool(flags.session_present),
        )
        # Subscribing again on a kept session is harmless, and needed when the broker lost it.
        _, mid = client.subscribe(
            [(self.settings.coinpulse_topic, 1), (self.settings.gameover_topic, 1)]
        )
        with self._changed:
            self._link_problem = None
            self._connected = True
            self._subscribed = False
            self._subscribe_mid = mid
            self._changed.notify_all()

    @_link_callback
    def _on_connect_fail(self, _client, _userdata) -> None:
        self._link_problem = wire.BROKER_UNREACHABLE
        self._log(
            "mqtt_unreachable",
            level=logging.WARNING,
            host=self.settings.broker_host,
            port=self.settings.broker_port,
        )

    @_link_callback
    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _props) -> None:
        if mid != self._subscribe_mid:
            return
        pulses, gameovers = (list(reason_codes) + [None, None])[:2]
        ok = pulses is not None and not pulses.is_failure
        self._log(
            "mqtt_subscribed" if ok else "mqtt_subscribe_refused",
            level=logging.INFO if ok else logging.WARNING,
            topic=self.settings.coinpulse_topic,
        )
        if gameovers is None or gameovers.is_failure:
            self._log(
                "mqtt_subscribe_refused",
                level=logging.WARNING,
                topic=self.settings.gameover_topic,
            )
        with self._changed:
            self._subscribed = ok
            if not ok:
                self._link_problem = "the broker refused the coinpulse subscription"
            self._changed.notify_all()

    @_link_callback
    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        with self._changed:
            self._connected = self._subscribed = False
            self._link_problem = self._link_problem or "disconnected from the broker"
            self._changed.notify_all()
        if not self._stop.is_set():
            self._log("mqtt_disconnected", level=logging.WARNING, reason=str(reason_code))

    def _on_message(self, client: mqtt.Client, _userdata, message: mqtt.MQTTMessage) -> None:
        acknowledge = True
        try:
            acknowledge = self._take_message(
                message.topic, bytes(message.payload), mid=message.mid, qos=message.qos
            )
        except Exception as exc:  # nothing one message holds may stop the next
            self.messages_refused += 1
            self._log(
                "message_failed",
                level=logging.ERROR,
                exception=type(exc).__name__,
                bytes=len(message.payload),
            )
        if acknowledge:
            try:
                client.ack(message.mid, message.qos)
            except Exception as exc:
                self._callback_failed("ack", exc)

    def _take_message(self, topic: str, raw: bytes, *, mid: int, qos: int) -> bool:
        """Handle one message; return False when its PUBACK must wait (not recorded yet)."""
        machine_id = self.settings.machine_id
        kinds = {
            self.settings.coinpulse_topic: wire.COINPULSE,
            self.settings.gameover_topic: wire.GAMEOVER,
        }
        kind = kinds.get(topic, topic.rsplit("/", 1)[-1][:32])
        if self._public_key is None:  # never: the cabinet connects once the key is pinned
            self._log("message_not_checked", level=logging.ERROR)
            return False
        try:
            message = read_signed(kind, raw, machine_id, self._public_key)
        except Refused as refused:
            self.messages_refused += 1
            # Anyone with broker credentials can publish junk as fast as they like: a warning
            # each, up to the limit, so a flood cannot fill the cabinet's disk.
            self._refusals.log(
                logger,
                "message_refused",
                machine_id=machine_id,
                kind=kind,
                reason=refused.reason,
                payment_id=refused.payment_id,
                bytes=len(raw),
            )
            self._notify()
            return True
        if kind == wire.GAMEOVER:
            # The game over was counted when the game told this cabinet; this is the API's echo.
            self._log("gameover_received", timestamp=message.get("timestamp"))
            return True
        pulse = _Unrecorded(mid, qos, message["paymentId"], message["credits"])
        try:
            self._record(pulse)
        except sqlite3.Error as exc:
            # Signed and well formed: money. Kept unacknowledged and recorded again until the
            # ledger takes it; a restart before that gets it from the broker again.
            self._log(
                "coinpulse_not_recorded",
                level=logging.ERROR,
                payment_id=pulse.payment_id,
                exception=type(exc).__name__,
            )
            self._unrecorded.append(pulse)
            self._coin_wake.set()
            return False
        return True

    def _record(self, pulse: _Unrecorded) -> None:
        """Add a signed pulse's credits to the ledger, once per ``paymentId``."""
        grant = self._require_ledger().add_payment(pulse.payment_id, pulse.credits)
        if grant is None:
            self._log("coinpulse_duplicate", payment_id=pulse.payment_id)
            self._notify()
            return
        self._log(
            "coinpulse_received",
            payment_id=pulse.payment_id,
            credits=pulse.credits,
            credits_left=grant.credits_left,
        )
        self._notify()
        self._coin_wake.set()
        self._refresh()

    def _log(self, event: str, *, level: int = logging.INFO, **fields: Any) -> None:
        """Log ``event`` as one JSON line with this cabinet's ``machine_id`` and ``fields``."""
        log_event(logger, event, level=level, machine_id=self.settings.machine_id, **fields)

    def _callback_failed(self, where: str, exc: Exception) -> None:
        self._log(
            "mqtt_callback_failed",
            level=logging.ERROR,
            callback=where,
            exception=type(exc).__name__,
        )

    # --- the screen ---------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Draw what the screen must show now, when it changed: never raises."""
        try:
            reason = self.out_of_order_reason()
            if reason is not None:
                wanted: tuple[str, str | None] = ("out_of_order", reason)
            elif self._ledger is None or self.credits > 0 or self.payment_url is None:
                wanted = ("blank", None)  # playing, or no link yet: nothing to scan
            else:
                wanted = ("qr", self.payment_url)
            with self._screen_lock:
                changed = wanted != self._screen
                self._screen = wanted
                if changed:
                    self._draw(*wanted)
            if (reason is None) != self._was_connected:
                self._was_connected = reason is None
                self._heartbeat_wake.set()  # the API hears of it now, not in 30 s
            self._notify()
        except Exception as exc:
            self._log("screen_failed", level=logging.ERROR, exception=type(exc).__name__)

    def _draw(self, screen: str, detail: str | None) -> None:
        out = self.out or sys.stdout
        if screen == "qr" and detail is not None:
            out.write(qr_text(detail, invert=self.settings.qr_invert))
            self._log("qr_shown", url=detail)
        elif screen == "out_of_order" and detail is not None:
            out.write(out_of_order_text(detail))
            self._log("out_of_order_shown", level=logging.WARNING, reason=detail)
        out.flush()

    # --- workers ------------------------------------------------------------------------------
    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._guarded, args=(name, target), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _guarded(self, name: str, target: Callable[[], None]) -> None:
        """Run a worker until stop; should it fail (a full disk), log it and start it again."""
        while not self._stop.is_set():
            try:
                target()
                return
            except Exception as exc:
                self._log(
                    "worker_failed", level=logging.ERROR, worker=name, exception=type(exc).__name__
                )
                self._stop.wait(1.0)

    def _watch_worker(self) -> None:
        """Keep the screen and status honest; replace paho's client if its thread died."""
        while not self._stop.wait(WATCH_SECONDS):
            with self._network_lock:
                client = self._client
                dead = (
                    client is not None
                    and self._network_started
                    and not self._stop.is_set()
                    and not _network_thread_alive(client)
                )
                if dead:
                    self._refresh()  # out of order first, then connect again
                    self._log("mqtt_network_thread_stopped", level=logging.ERROR)
                    # A new client under the same id: the broker hands it the kept session,
                    # and the old one's sockets close as it is dropped.
                    with self._changed:
                        self._connected = self._subscribed = False
                    self._client = self._mqtt_client()
                    self._network_started = False
                    self._start_network()
            self._refresh()

    def _coin_worker(self) -> None:
        """Fire one coin per credit, oldest payment first; a restart finishes what is left."""
        ledger = self._require_ledger()
        while not self._stop.is_set():
            self._record_unrecorded()
            coin = ledger.next_coin()
            if coin is None:
                self._coin_wake.wait(1.0 if self._unrecorded else None)
                self._coin_wake.clear()
                continue
            # Fired, then marked: a crash in between fires that coin again, never loses it.
            try:
                self.coin_action(coin)
            except Exception as exc:  # a plug-in action may fail any way; keep the coin
                self._log(
                    "coin_action_failed",
                    level=logging.ERROR,
                    payment_id=coin.payment_id,
                    exception=type(exc).__name__,
                )
                self._stop.wait(1.0)
                continue
            ledger.coin_fired(coin)
            with self._changed:
                self.coins_fired += 1
                self._changed.notify_all()
            self._log("coin_fired", payment_id=coin.payment_id, coin=coin.number, of=coin.of)
            if coin.number == coin.of:
                self._confirm_wake.set()

    def _record_unrecorded(self) -> None:
        """Record the signed pulses the ledger refused before, and acknowledge each."""
        while self._unrecorded:
            pulse = self._unrecorded[0]
            try:
                self._record(pulse)
            except sqlite3.Error:
                return  # still failing: the coin worker comes back in a second
            self._unrecorded.popleft()
            client = self._client
            if client is not None:
                client.ack(pulse.mid, pulse.qos)

    def _call(self, path: str, body: dict[str, Any], **options: Any) -> Answer:
        """POST ``body`` to ``path`` with the settings' back-off until answered, given up or
        stopped; ``options`` go to ``ApiClient.post_with_retry`` (``log_ids`` gain machine_id)."""
        log_ids = {"machine_id": self.settings.machine_id, **options.pop("log_ids", {})}
        return self.api.post_with_retry(
            path, body, policy=self.settings.retry, stop=self._stop, log_ids=log_ids, **options
        )

    def _drain(
        self,
        wake: threading.Event,
        next_item: Callable[[], Item | None],
        send: Callable[[Item], float | None],
    ) -> None:
        """Send what ``next_item`` returns, oldest first, with ``send`` until stop.

        ``send`` returns how long to wait on ``wake`` before the next item: 0 for no wait, None
        until woken. With nothing queued the worker waits until woken.
        """
        while not self._stop.is_set():
            item = next_item()
            pause = None if item is None else send(item)
            if pause != 0:
                wake.wait(pause)
                wake.clear()

    def _confirm_worker(self) -> None:
        """Tell the API, oldest first, which payments' coins were fired; until it answers."""
        self._drain(self._confirm_wake, self._require_ledger().next_confirmation, self._confirm)

    def _confirm(self, payment_id: str) -> float | None:
        answer = self._call(
            f"/machines/{self.settings.machine_id}/credits/ack",
            {"payment_id": payment_id},
            log_ids={"payment_id": payment_id},
            final=FINAL_ACK_STATUSES.__contains__,
        )
        self._require_ledger().finish_confirmation(
            payment_id,
            status=answer.called("confirmed", "dropped", "pending"),
            attempts=answer.attempts,
        )
        if answer.ok:
            with self._changed:
                self.confirmations_sent += 1
                self._changed.notify_all()
        if answer.outcome != "stopped":
            self._log(
                answer.called(
                    "credits_confirmed", "credits_ack_dropped", f"credits_ack_{answer.outcome}"
                ),
                level=logging.INFO if answer.ok else logging.WARNING,
                payment_id=payment_id,
                status=answer.status,
                code=answer.body.get("code"),
                attempts=answer.attempts,
            )
        # Still owed after giving up: ask again later, or when the next payment's coins are fired.
        return self.settings.retry.max_delay if answer.outcome == "gave_up" else 0

    def _heartbeat_worker(self) -> None:
        """Tell the API this cabinet is here, and whether pulses can reach it, every period.

        The first waits a moment for MQTT; after that a change of the MQTT state is sent at
        once (at most one a second), so the API stops selling while pulses cannot arrive.
        """
        period = self.settings.heartbeat_seconds
        self.wait_until(
            lambda: self.connected or self._stop.is_set(), min(HEARTBEAT_GRACE_SECONDS, period)
        )
        while not self._stop.is_set():
            connected = self.connected
            self._send_heartbeat(connected)
            deadline = time.monotonic() + period
            if self._stop.wait(min(1.0, period)):
                return
            while (remaining := deadline - time.monotonic()) > 0 and self.connected == connected:
                self._heartbeat_wake.wait(remaining)
                self._heartbeat_wake.clear()
                if self._stop.is_set():
                    return

    def _send_heartbeat(self, connected: bool) -> None:
        machine_id = self.settings.machine_id
        try:
            status, answer = self.api.post(
                f"/machines/{machine_id}/heartbeat",
                {"mqtt_connected": connected, "credits_left": self.credits},
            )
        except ApiUnreachable as exc:
            status, answer, reason = None, {}, exc.reason
        else:
            reason = f"http_{status}"
        if status is not None and 200 <= status < 300:
            self._keep_credits_per_game(answer)
            with self._changed:
                self.heartbeats_sent += 1
                self._changed.notify_all()
            self._log("heartbeat_sent", level=logging.DEBUG, mqtt_connected=connected)
            return
        self._log(
            "heartbeat_failed",
            level=logging.WARNING,
            mqtt_connected=connected,
            reason=reason,
            code=answer.get("code"),
        )

    def _game_over_worker(self) -> None:
        """Send queued game overs to the API in order, each retried until it is answered."""
        self._drain(
            self._game_over_wake, self._require_ledger().next_game_over, self._send_game_over
        )

    def _keep_credits_per_game(self, answer: dict[str, Any]) -> None:
        """Keep what a game costs from the API's answer, for the games that end after it."""
        per_game = answer.get("credits_per_game")
        if wire.is_credits_per_game(per_game):
            self._require_ledger().keep_credits_per_game(per_game)

    def _send_game_over(self, record: GameOver) -> float | None:
        body: dict[str, Any] = {"machine_id": self.settings.machine_id}
        if record.credits_per_game is not None:
            # The API counts this game as it was counted here (wire: "What a game costs").
            body["credits_per_game"] = record.credits_per_game
        answer = self._call(
            "/gameover",
            body,
            log_ids={"game_over_id": record.id},
            # Unique even when the state file is made anew and the ids start over.
            idempotency_key=f"{self.settings.machine_id}-{record.ended_at}-{record.id}",
        )
        if answer.ok:
            self._keep_credits_per_game(answer.body)
        self._finish_game_over(record, answer)
        # Left queued after giving up: the next game over, or the next start, tries again.
        return None if answer.outcome in ("gave_up", "stopped") else 0

    def _finish_game_over(self, record: GameOver, answer: Answer) -> None:
        self._require_ledger().finish_game_over(
            record.id, status=answer.called("sent", "rejected", "pending"), attempts=answer.attempts
        )
        with self._changed:
            self.game_over_attempts += answer.attempts
            if answer.ok:
                self.game_overs_sent += 1
            self._changed.notify_all()
        self._log(
            answer.called("gameover_sent", "gameover_rejected", f"gameover_{answer.outcome}"),
            level=logging.INFO if answer.ok or answer.outcome == "stopped" else logging.WARNING,
            game_over_id=record.id,
            status=answer.status,
            code=answer.body.get("code"),
            attempts=answer.attempts,
        )

    def _qr_worker(self) -> None:
        """Get the machine's payment link (unless given one); the screen shows it while idle."""
        if self.payment_url is None:
            answer = self._call("/create-payment-link", {"machine_id": self.settings.machine_id})
            url = answer.body.get("url")
            if not answer.ok or not isinstance(url, str):
                if answer.outcome != "stopped":
                    self._log(
                        "payment_link_failed",
                        level=logging.WARNING,
                        status=answer.status,
                        code=answer.body.get("code"),
                    )
                return
            with self._changed:
                self.payment_url = url
                self._changed.notify_all()
        self._refresh()

    def _require_ledger(self) -> CabinetLedger:
        if self._ledger is None:
            raise RuntimeError("the cabinet is not started")
        return self._ledger


def _network_thread_alive(client: mqtt.Client) -> bool:
    """Tell whether paho's network thread (``loop_start``) is running."""
    # paho keeps its thread in a private attribute and clears it when the thread ends.
    thread = getattr(client, "_thread", None)
    return thread is not None and thread.is_alive()
