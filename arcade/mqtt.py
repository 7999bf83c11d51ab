"""One MQTT publisher per process: TLS, QoS 1, a real PUBACK, and a fresh connection when needed.

paho's ``publish`` returns success on a socket that only looks alive (a Lambda thawed after
minutes, a broker that froze), and ``wait_for_publish`` returning only means the wait ended.
So a message counts as delivered only when ``is_published()`` says the PUBACK came; when it
does not come in time the connection is thrown away and the message is sent once more on a
new one. QoS 1 is "at least once": a broker that was frozen with our PUBLISH in its socket
buffer delivers that copy when it wakes, beside the copy a retry sends. Both carry the same
``paymentId``, which is what cabinets de-duplicate on.

The connection speaks MQTT 5, so a broker can say no: a PUBACK whose reason code is an error
(0x87 not authorized, 0x97 quota exceeded, …) is a refusal, raised as ``PublishRefused``. An
MQTT 3.1.1 broker acknowledges a publish its ACL dropped, which would lose credits silently.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from arcade import wire
from arcade.errors import BrokerUnavailable, PublishCancelled, PublishRefused, SettingsError
from arcade.logs import log_event

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from arcade.config import Settings

# What a publish that could not connect says, however the broker refused.
NOT_ACCEPTED = "the broker did not accept the connection"

logger = logging.getLogger(__name__)

# Store writes around one publish (lease, mark delivered) fit in this many seconds.
LEASE_MARGIN_SECONDS = 3.0


def connect_wait(puback_timeout: float) -> float:
    """Return the seconds one connect may take: the TCP/TLS connect, then the CONNACK."""
    return 2 * max(puback_timeout, 1.0)


def slowest_publish_seconds(puback_timeout: float) -> float:
    """Return the longest one ``Publisher.publish`` can take: two attempts, each a connect and
    a PUBACK wait (SPEC "MQTT": reconnect and publish again once, then give up)."""
    return 2 * (connect_wait(puback_timeout) + puback_timeout)


def delivery_lease_seconds(puback_timeout: float) -> float:
    """Return how long one request holds the right to publish a grant (SPEC "Delivery lasts
    until the cabinet confirms"): longer than the slowest publish by construction, so a live
    holder is never overtaken and a second copy is never sent while the first may still go."""
    return slowest_publish_seconds(puback_timeout) + LEASE_MARGIN_SECONDS


@dataclass
class _ConnectAttempt:
    """One connect that every request needing a connection waits for, instead of each its own."""

    done: threading.Event = field(default_factory=threading.Event)
    client: mqtt.Client | None = None
    error: BrokerUnavailable | SettingsError | None = None


def broker_tls_context(ca_path: str) -> ssl.SSLContext:
    """Return a TLS 1.2+ client context that verifies the broker and its host name.

    Raises SettingsError naming the CA file's problem.
    """
    try:
        return wire.broker_tls_context(ca_path)
    except wire.WireError as exc:
        raise SettingsError(str(exc)) from exc


class Publisher:
    """Publish JSON messages at QoS 1 and return only once the broker acknowledged them."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.client_id: str | None = None  # made at each connect: unique per process
        self.last_refusal: str | None = None
        # How this process's last publish ended: None before the first, "ok", or "failed: …"
        # in plain words. /status reports it without touching the network.
        self.last_publish: str | None = None
        self._client: mqtt.Client | None = None
        # The connect under way, which every request that needs a connection joins: with a
        # dead broker a burst waits for one connect, not for one each in turn behind a lock.
        self._connecting: _ConnectAttempt | None = None
        self._lock = threading.Lock()
        # PUBACK reason codes by message id, written by paho's thread before it marks the
        # message published, read (and dropped) by the publishing thread.
        self._acks: dict[int, Any] = {}
        self._acks_lock = threading.Lock()

    # --- public -----------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Return sentences naming each broker setting that stops publishing."""
        found = []
        unusable = self.settings.unusable("EMQX_BROKER_URL")  # given but refused: why
        if unusable:
            found.append(unusable)
        if self.settings.broker_tls:
            problem = wire.ca_problem(self.settings.mqtt_ca_cert)
            if problem:
                found.append(problem)
        return found

    def publish(
        self,
        topic: str,
        payload: dict[str, Any],
        *,
        log_ids: dict[str, Any],
        still_wanted: Callable[[], bool] | None = None,
    ) -> None:
        """Publish ``payload`` at QoS 1 and wait for a successful PUBACK.

        ``still_wanted`` is asked again before a message goes out on a connection that had to
        be made first (which can take seconds): when it answers False nothing is sent and
        PublishCancelled is raised. Raises SettingsError when the broker is not configured,
        PublishRefused when the broker's PUBACK carries an error reason code, and
        BrokerUnavailable when no PUBACK came on two connections in turn.
        """
        unusable = self.settings.unusable("EMQX_BROKER_URL")  # given but refused: why
        if unusable:
            raise SettingsError(unusable)
        if self.settings.broker_refused:
            raise SettingsError(self.settings.broker_refused)
        try:
            self._publish(topic, payload, log_ids=log_ids, still_wanted=still_wanted)
        except BrokerUnavailable as exc:
            self.last_publish = f"failed: {exc}"
            raise
        self.last_publish = "ok"

    def _publish(
        self,
        topic: str,
        payload: dict[str, Any],
        *,
        log_ids: dict[str, Any],
        still_wanted: Callable[[], bool] | None,
    ) -> None:
        data = json.dumps(payload, separators=(",", ":"))
        for attempt in (1, 2):
            warm = self._client
            client = self._live_client()
            reached_anew = client is not warm or attempt > 1
            if still_wanted is not None and reached_anew and not still_wanted():
                raise PublishCancelled("the message was withdrawn while the broker was reached")
            info = client.publish(topic, data, qos=1, retain=False)
            if info.rc == 0:
                # Raises when the connection broke under the message: handled below.
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(timeout=self.settings.puback_timeout)
                if info.is_published():
                    self._check_ack(info.mid, topic, log_ids)
                    log_event(
                        logger,
                        "mqtt_published",
                        level=logging.DEBUG,
                        topic=topic,
                        attempt=attempt,
                        **log_ids,
                    )
                    return
            with self._acks_lock:
                self._acks.pop(info.mid, None)
            log_event(
                logger,
                "mqtt_no_puback",
                level=logging.WARNING,
                topic=topic,
                attempt=attempt,
                rc=info.rc,
                **log_ids,
            )
            self._discard(client)
        raise BrokerUnavailable("the broker did not acknowledge the message")

    def _check_ack(self, mid: int, topic: str, log_ids: dict[str, Any]) -> None:
        """Raise PublishRefused when the PUBACK of ``mid`` carried an error reason code."""
        with self._acks_lock:
            reason = self._acks.pop(mid, None)
        if reason is None or not reason.is_failure:
            return
        named = f"{reason} (0x{reason.value:02x})"
        self.last_refusal = named
        log_event(
            logger,
            "mqtt_publish_refused",
            level=logging.ERROR,
            topic=topic,
            reason=str(reason),
            reason_code=reason.value,
            **log_ids,
        )
        raise PublishRefused(f"the broker refused the message: {named}")

    def close(self) -> None:
        """Disconnect politely (used at shutdown and in tests)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    # --- connection -------------------------------------------------------------------------
    def _live_client(self) -> mqtt.Client:
        """Return the connected client, connecting once for all the requests that need it."""
        with self._lock:
            if self._client is not None and self._client.is_connected():
                return self._client
            if self._client is not None:
                self._discard_locked(self._client)
                self._client = None
            attempt = self._connecting
            leader = attempt is None
            if attempt is None:
                attempt = self._connecting = _ConnectAttempt()
        if leader:
            try:
                attempt.client = self._connect()
            except (BrokerUnavailable, SettingsError) as exc:
                attempt.error = exc
            with self._lock:
                self._connecting = None
                self._client = attempt.client
            attempt.done.set()
        elif not attempt.done.wait(2 * connect_wait(self.settings.puback_timeout)):
            raise BrokerUnavailable(NOT_ACCEPTED)
        if attempt.error is not None:
            raise type(attempt.error)(str(attempt.error))
        if attempt.client is None:
            raise BrokerUnavailable(NOT_ACCEPTED)
        return attempt.client

    def _connect(self) -> mqtt.Client:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        settings = self.settings
        # Made here, not when the app is built: a worker forked after create_app gets its own,
        # and two processes with one client id would keep disconnecting each other.
        self.client_id = f"arcade-pay-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        # reconnect_on_failure=False: paho must never reconnect by itself and resend an old
        # message behind our back; we decide when to reconnect and what to send again.
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        client.connect_timeout = connect_wait(settings.puback_timeout) / 2
        if settings.mqtt_username:
            client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        if settings.broker_tls:
            client.tls_set_context(broker_tls_context(settings.mqtt_ca_cert))
        connected = threading.Event()
        outcome: dict[str, str] = {}

        def on_connect(paho_client, _userdata, _flags, reason_code, _properties) -> None:
            sock = paho_client.socket()
            if sock is not None:
                # A coinpulse is one small packet: send it now, not when Nagle decides.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            outcome["reason"] = str(reason_code)
            outcome["ok"] = "yes" if not reason_code.is_failure else ""
            connected.set()

        def on_publish(_client, _userdata, mid, reason_code, _properties) -> None:
            with self._acks_lock:
                self._acks[mid] = reason_code

        client.on_connect = on_connect
        client.on_publish = on_publish
        try:
            client.connect(
                settings.broker_host or "", settings.broker_port, keepalive=30, clean_start=True
            )
        except ssl.SSLCertVerificationError as exc:
            self._log_connect_failure("tls_verification_failed")
            raise BrokerUnavailable(
                "the broker's certificate did not verify against MQTT_CA_CERT"
            ) from exc
        except (OSError, ValueError) as exc:
            self._log_connect_failure(type(exc).__name__)
            raise BrokerUnavailable(wire.BROKER_UNREACHABLE) from exc
        client.loop_start()
        if not connected.wait(connect_wait(settings.puback_timeout) / 2) or not outcome.get("ok"):
            self._discard_locked(client)
            reason = outcome.get("reason", "no answer")
            self._log_connect_failure(reason)
            if "ot authorized" in reason or "username or password" in reason.lower():
                raise BrokerUnavailable("the broker refused MQTT_USERNAME / MQTT_PASSWORD")
            raise BrokerUnavailable(NOT_ACCEPTED)
        log_event(
            logger,
            "mqtt_connected",
            host=settings.broker_host,
            port=settings.broker_port,
            tls=settings.broker_tls,
            client_id=self.client_id,
        )
        return client

    def _log_connect_failure(self, reason: str) -> None:
        log_event(
            logger,
            "mqtt_connect_failed",
            level=logging.WARNING,
            host=self.settings.broker_host,
            port=self.settings.broker_port,
            reason=reason,
        )

    def _discard(self, client: mqtt.Client) -> None:
        with self._lock:
            if self._client is client:
                self._client = None
            self._discard_locked(client)

    @staticmethod
    def _discard_locked(client: mqtt.Client) -> None:
        # Joining paho's network thread can take a second; nobody should wait for that.
        threading.Thread(target=_stop_quietly, args=(client,), daemon=True).start()


def _stop_quietly(client: mqtt.Client) -> None:
    with contextlib.suppress(OSError, ValueError):
        client.disconnect()
    client.loop_stop()
    # A connection that died without a DISCONNECT can leave paho's socket open until the
    # collector finds it; close it now.
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
