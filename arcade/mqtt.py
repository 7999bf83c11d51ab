"""One MQTT publisher per process: TLS, QoS 1, a real PUBACK, and a fresh connection when needed.

paho's ``publish`` returns success on a socket that only looks alive (a Lambda thawed after
minutes, a broker that froze), and ``wait_for_publish`` returning only means the wait ended.
So a message counts as delivered only when ``is_published()`` says the PUBACK came; when it
does not come in time the connection is thrown away and the message is sent once more on a
new one. QoS 1 is "at least once": a broker that was frozen with our PUBLISH in its socket
buffer delivers that copy when it wakes, beside the copy a retry sends. Both carry the same
``paymentId``, which is what cabinets de-duplicate on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arcade.errors import BrokerUnavailable, SettingsError
from arcade.logs import log_event

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from arcade.config import Settings

logger = logging.getLogger(__name__)

PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


def ca_problem(ca_path: str) -> str | None:
    """Return a sentence naming what is wrong with the CA file, or None when it looks usable."""
    path = Path(ca_path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"{path.name} not found at {path} (set MQTT_CA_CERT to the broker's CA file)"
    except OSError:
        return f"{path.name} cannot be read at {path}"
    # The marker must open a line: the placeholder file mentions it inside a comment.
    if not any(line.strip() == PEM_CERTIFICATE for line in text.splitlines()):
        return (
            f"{path.name} holds no certificate: download the broker's CA certificate from"
            " the EMQX console (Deployment overview, 'CA Certificate') into it, or set"
            " MQTT_CA_CERT"
        )
    return None


def broker_tls_context(ca_path: str) -> ssl.SSLContext:
    """Return a TLS 1.2+ client context that verifies the broker and its host name."""
    problem = ca_problem(ca_path)
    if problem:
        raise SettingsError(problem)
    try:
        context = ssl.create_default_context(cafile=ca_path)
    except ssl.SSLError as exc:
        name = Path(ca_path).name
        raise SettingsError(f"{name} holds no certificate that can be read") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class Publisher:
    """Publish JSON messages at QoS 1 and return only once the broker acknowledged them."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.client_id = f"arcade-pay-{uuid.uuid4().hex[:16]}"
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._connect_result: str | None = None
        self._lock = threading.Lock()

    # --- public -----------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Return sentences naming each broker setting that stops publishing."""
        found = []
        if not self.settings.broker_host:
            found.append("EMQX_BROKER_URL not set")
        if self.settings.broker_tls:
            problem = ca_problem(self.settings.mqtt_ca_cert)
            if problem:
                found.append(problem)
        return found

    def publish(self, topic: str, payload: dict[str, Any], *, log_ids: dict[str, Any]) -> None:
        """Publish ``payload`` and wait for its PUBACK; raise BrokerUnavailable otherwise."""
        if not self.settings.broker_host:
            raise SettingsError("EMQX_BROKER_URL not set")
        data = json.dumps(payload, separators=(",", ":"))
        for attempt in (1, 2):
            client = self._live_client()
            info = client.publish(topic, data, qos=1, retain=False)
            if info.rc == 0:
                # Raises when the connection broke under the message: handled below.
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(timeout=self.settings.puback_timeout)
                if info.is_published():
                    log_event(
                        logger,
                        "mqtt_published",
                        level=logging.DEBUG,
                        topic=topic,
                        attempt=attempt,
                        **log_ids,
                    )
                    return
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

    def close(self) -> None:
        """Disconnect politely (used at shutdown and in tests)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    # --- connection -------------------------------------------------------------------------
    def _live_client(self) -> mqtt.Client:
        with self._lock:
            if self._client is not None and self._client.is_connected():
                return self._client
            if self._client is not None:
                self._discard_locked(self._client)
            self._client = self._connect()
            return self._client

    def _connect(self) -> mqtt.Client:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        settings = self.settings
        # reconnect_on_failure=False: paho must never reconnect by itself and resend an old
        # message behind our back; we decide when to reconnect and what to send again.
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
            reconnect_on_failure=False,
        )
        client.connect_timeout = max(settings.puback_timeout, 1.0)
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

        client.on_connect = on_connect
        try:
            client.connect(settings.broker_host or "", settings.broker_port, keepalive=30)
        except ssl.SSLCertVerificationError as exc:
            self._log_connect_failure("tls_verification_failed")
            raise BrokerUnavailable(
                "the broker's certificate did not verify against MQTT_CA_CERT"
            ) from exc
        except (OSError, ValueError) as exc:
            self._log_connect_failure(type(exc).__name__)
            raise BrokerUnavailable("the broker cannot be reached") from exc
        client.loop_start()
        if not connected.wait(max(settings.puback_timeout, 1.0)) or not outcome.get("ok"):
            self._discard_locked(client)
            reason = outcome.get("reason", "no answer")
            self._log_connect_failure(reason)
            if "ot authorized" in reason or "username or password" in reason.lower():
                raise BrokerUnavailable("the broker refused MQTT_USERNAME / MQTT_PASSWORD")
            raise BrokerUnavailable("the broker did not accept the connection")
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
