"""A real Mosquitto broker with TLS and a password file, and a paho subscriber, for tests.

The broker listens on a free loopback port with a throw-away CA whose server certificate names
both ``localhost`` and ``127.0.0.1``, refuses anonymous clients and keeps nothing on disk between
restarts. It can be stopped, restarted on the same port, frozen (SIGSTOP) and thawed (SIGCONT)
to play a broker that is down or a connection that looks alive but is not.

The broker keeps its port bound (not listening) from the moment it picks it until it is closed,
so no other program is handed that port while Mosquitto starts or is down; Mosquitto, which
binds with SO_REUSEADDR, may still listen on it. Where the system does not allow that sharing,
and whenever Mosquitto finds its port taken on the first start anyway, the broker takes another
port: callers never see it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.processes import stop_process

MOSQUITTO_CANDIDATES = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
)
MISSING_MESSAGE = "mosquitto not installed: run the README's test command, which installs it"
START_TIMEOUT = 5.0
PORT_ATTEMPTS = 5  # first starts that may find their port taken, each on a fresh port


def find_mosquitto() -> str | None:
    """Return the path of the mosquitto binary, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((path for path in MOSQUITTO_CANDIDATES if os.access(path, os.X_OK)), None)


def find_mosquitto_passwd(mosquitto: str) -> str | None:
    """Return the path of mosquitto_passwd, looked up on PATH and beside the broker."""
    found = shutil.which("mosquitto_passwd")
    if found:
        return found
    for folder in (Path(mosquitto).parent, Path("/usr/bin"), Path("/usr/local/bin")):
        candidate = folder / "mosquitto_passwd"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_loopback_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def held_loopback_port(port: int = 0) -> tuple[int, socket.socket | None]:
    """Return a loopback port for a server to listen on (``port``, or a free one for 0) and,
    where such a listener may bind a held port (Linux, SO_REUSEADDR), the socket holding it.

    While the holding socket is open no other program is given the port, not even for an
    outgoing connection, so a server started on it a moment later cannot lose it; close the
    socket when the server is done. Elsewhere the socket is None and the port merely free now.
    """
    if _listeners_share_reserved_ports():
        held = _reserve_loopback_port(port)
        return int(held.getsockname()[1]), held
    return port or free_loopback_port(), None


def _reserve_loopback_port(port: int = 0) -> socket.socket:
    """Bind a loopback port (a free one for 0) without listening, with SO_REUSEADDR.

    While the socket is open, other programs asking for a free port are not given this one and
    no outgoing connection takes it, but a listener that sets SO_REUSEADDR may bind it (Linux).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


@functools.cache
def _listeners_share_reserved_ports() -> bool:
    """Tell whether a SO_REUSEADDR listener may bind a port held by _reserve_loopback_port."""
    with _reserve_loopback_port() as held, socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(held.getsockname())
            listener.listen()
        except OSError:
            return False
        return True


# --- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificatePaths:
    """Paths of a throw-away CA and the server certificate it signed."""

    ca_path: Path
    cert_path: Path
    key_path: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def make_certificates(
    directory: Path, *, common_name: str = "Arcade Pay test CA"
) -> CertificatePaths:
    """Write ca.crt, server.crt and server.key (EC P-256) into directory and return their paths."""
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    directory.mkdir(parents=True, exist_ok=True)
    paths = CertificatePaths(
        ca_path=directory / "ca.crt",
        cert_path=directory / "server.crt",
        key_path=directory / "server.key",
    )
    paths.ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths.key_path, _pem_key(server_key))
    return paths


def client_ssl_context(ca_path: Path | str) -> ssl.SSLContext:
    """Return a client TLS context that trusts only ca_path, checks host names, TLS 1.2+."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# --- broker -------------------------------------------------------------------------------


class _PortTaken(RuntimeError):
    """The broker could not bind its port."""


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()  # SIGKILL also ends a stopped (frozen) process
        process.wait(timeout=5)


class TlsBroker:
    """Run a Mosquitto broker on loopback with TLS, a password file and no anonymous access."""

    host = "localhost"

    def __init__(
        self,
        workdir: Path | str,
        *,
        username: str = "arcade",
        start: bool = True,
        users: Mapping[str, str] | None = None,
        acl: str | None = None,
    ):
        """Prepare certificates, password file and config in workdir; start unless told not to.

        ``users`` adds more accounts (name → password) beside ``username``; ``acl`` is the text
        of a Mosquitto ``acl_file`` (without one every account may read and write anything).
        """
        mosquitto = find_mosquitto()
        passwd = find_mosquitto_passwd(mosquitto) if mosquitto else None
        if mosquitto is None or passwd is None:
            raise RuntimeError(MISSING_MESSAGE)
        self._mosquitto = mosquitto
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.username = username
        self.password = secrets.token_urlsafe(18)
        self._port_hold: weakref.finalize[Any, Any] | None = None
        self._take_port()
        self.log_path = self.workdir / "mosquitto.log"
        self.conf_path = self.workdir / "mosquitto.conf"
        self.passwd_path = self.workdir / "passwd"
        self.users = {username: self.password, **(users or {})}
        self.acl_path = self.workdir / "acl" if acl is not None else None
        if self.acl_path is not None:
            self.acl_path.write_text(acl or "")

        certs = make_certificates(self.workdir)
        self.ca_path = certs.ca_path
        self.cert_path = certs.cert_path
        self.key_path = certs.key_path
        self._write_password_file(passwd)
        self._write_config()

        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._frozen = False
        self._started_once = False
        self._lock = threading.RLock()
        if start:
            self.start()

    # configuration

    def _take_port(self, port: int = 0) -> None:
        """Hold ``port`` (a fresh one for 0) until close(), where listeners can share it."""
        self._release_port()
        self.port, held = held_loopback_port(port)
        if held is not None:
            # Closed by close(), or when the broker is collected without one.
            self._port_hold = weakref.finalize(self, held.close)
        self.url = f"mqtts://{self.host}:{self.port}"

    def _release_port(self) -> None:
        if self._port_hold is not None:
            self._port_hold()
            self._port_hold = None

    def _write_password_file(self, passwd: str) -> None:
        for number, (name, password) in enumerate(self.users.items()):
            create = ["-c"] if number == 0 else []
            result = subprocess.run(
                [passwd, "-b", *create, str(self.passwd_path), name, password],
                capture_output=True,
                check=False,
                timeout=10,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    "mosquitto_passwd failed: " + result.stderr.decode(errors="replace").strip()
                )
        self.passwd_path.chmod(0o600)

    def _write_config(self) -> None:
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.passwd_path}",
            *([f"acl_file {self.acl_path}"] if self.acl_path is not None else []),
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "set_tcp_nodelay true",  # no Nagle delay on small MQTT packets
            "log_timestamp_format %H:%M:%S",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root mosquitto would switch to the "mosquitto" user, who cannot read tmp dirs.
            lines.append("user root")
        lines += [
            f"listener {self.port} 127.0.0.1",
            f"cafile {self.ca_path}",
            f"certfile {self.cert_path}",
            f"keyfile {self.key_path}",
            "tls_version tlsv1.2",
            "require_certificate false",
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    # life cycle

    @property
    def running(self) -> bool:
        """Tell whether the broker process is alive (frozen counts as alive)."""
        return self._process is not None and self._process.poll() is None

    @property
    def frozen(self) -> bool:
        """Tell whether the broker is stopped with SIGSTOP."""
        return self._frozen

    @property
    def pid(self) -> int | None:
        """Return the broker's process id while it runs."""
        return self._process.pid if self.running and self._process else None

    def start(self) -> None:
        """Start the broker and wait until it completes a TLS handshake.

        The first start moves to a fresh port when Mosquitto finds its own taken; later starts
        keep the port, since clients reconnect to it.
        """
        with self._lock:
            if self.running:
                return
            if self._port_hold is None and self._started_once:
                # Started again after close(): hold the same port again if it is still free.
                with contextlib.suppress(OSError):
                    self._take_port(self.port)
            for attempt in range(PORT_ATTEMPTS):
                self._spawn()
                try:
                    self._wait_ready(START_TIMEOUT)
                except _PortTaken:
                    self._terminate()
                    if self._started_once or attempt == PORT_ATTEMPTS - 1:
                        raise
                    self._take_port()
                    self._write_config()
                    continue
                except BaseException:
                    self._terminate()
                    raise
                self._started_once = True
                return

    def _spawn(self) -> None:
        self._process = subprocess.Popen(
            [self._mosquitto, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        self._frozen = False
        # Kill the broker at interpreter exit if nobody stopped it (an interrupted run).
        self._finalizer = weakref.finalize(self, _kill, self._process)

    def _wait_ready(self, timeout: float) -> None:
        context = client_ssl_context(self.ca_path)
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                log = self.log_text()
                if "Address already in use" in log.rsplit("starting", 1)[-1]:
                    raise _PortTaken(f"port {self.port} is taken; log:\n{log}")
                raise RuntimeError(
                    f"mosquitto exited with code {self._process.returncode} on start; "
                    f"log:\n{self.log_text()}"
                )
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw,
                    context.wrap_socket(raw, server_hostname=self.host) as tls,
                ):
                    with contextlib.suppress(OSError):
                        tls.unwrap()  # a polite close_notify keeps the broker log clean
                    return
            except (OSError, ssl.SSLError) as exc:
                last_error = exc
                time.sleep(0.01)
        raise RuntimeError(
            f"mosquitto did not accept TLS on 127.0.0.1:{self.port} within {timeout:.0f} s "
            f"(last error: {last_error!r}); log:\n{self.log_text()}"
        )

    def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if process.poll() is None and self._frozen:
            process.send_signal(signal.SIGCONT)
        stop_process(process)
        self._frozen = False
        self._process = None

    def stop(self) -> None:
        """Stop the broker (thawing it first if frozen) and wait for it to exit."""
        with self._lock:
            self._terminate()

    def restart(self) -> None:
        """Stop and start again on the same port with the same certificates and password."""
        with self._lock:
            self.stop()
            self.start()

    def freeze(self) -> None:
        """Suspend the broker with SIGSTOP: sockets stay open, nothing is answered."""
        with self._lock:
            if not self.running or self._process is None:
                raise RuntimeError("cannot freeze a broker that is not running")
            self._process.send_signal(signal.SIGSTOP)
            self._frozen = True

    def thaw(self) -> None:
        """Resume a frozen broker with SIGCONT."""
        with self._lock:
            if self._process is not None and self._frozen:
                self._process.send_signal(signal.SIGCONT)
            self._frozen = False

    def close(self) -> None:
        """Stop the broker for good and give its port back."""
        with self._lock:
            self._terminate()
            self._release_port()

    def __enter__(self) -> TlsBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "frozen" if self._frozen else ("running" if self.running else "stopped")
        return f"<TlsBroker {self.url} {state}>"

    # what tests and the app need

    def log_text(self) -> str:
        """Return the broker's log so far (empty when there is none)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def env(self, username: str | None = None) -> dict[str, str]:
        """Return the app's settings for this broker, as ``username`` (default: the first)."""
        name = username or self.username
        return {
            "EMQX_BROKER_URL": self.url,
            "MQTT_USERNAME": name,
            "MQTT_PASSWORD": self.users[name],
            "MQTT_CA_CERT": str(self.ca_path),
            "MQTT_TLS": "true",
        }

    def ssl_context(self) -> ssl.SSLContext:
        """Return a client TLS context that trusts this broker's CA."""
        return client_ssl_context(self.ca_path)

    def subscriber(
        self,
        topic_filter: str | Iterable[str],
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ) -> Subscriber:
        """Connect a subscriber to topic_filter and return it once the broker acknowledged it."""
        name = self.username if username is None else username
        return Subscriber(
            self,
            topic_filter,
            username=name,
            password=self.users.get(name, "") if password is None else password,
            timeout=timeout,
        )


# --- subscriber ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One message a Subscriber received; payload is the decoded JSON (or text if not JSON)."""

    topic: str
    payload: Any
    qos: int
    retain: bool
    raw: bytes = b""


class Subscriber:
    """A real paho-mqtt client over verified TLS that records what arrives on its topics."""

    def __init__(
        self,
        broker: TlsBroker,
        topic_filter: str | Iterable[str],
        *,
        username: str,
        password: str,
        timeout: float = 5.0,
    ):
        """Connect, subscribe with QoS 1, wait for the SUBACK; ConnectionError if refused."""
        self.topics = [topic_filter] if isinstance(topic_filter, str) else list(topic_filter)
        self.client_id = f"test-sub-{uuid.uuid4().hex[:12]}"
        self._condition = threading.Condition()
        self._messages: list[Message] = []
        self._connect_result: mqtt.ReasonCode | None = None
        self._connections = 0
        self._subscribed_on = 0
        self._pending_mids: dict[int, int] = {}
        self._closed = False

        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=self.client_id
        )
        client.username_pw_set(username, password)
        client.tls_set_context(broker.ssl_context())
        client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

        client.connect(broker.host, broker.port, keepalive=30)
        client.loop_start()
        try:
            self._wait_connected(timeout)
            self.wait_subscribed(timeout)
        except BaseException:
            self.close()
            raise

    # paho callbacks (run on paho's thread)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: mqtt.ReasonCode,
        properties: mqtt.Properties | None,
    ) -> None:
        with self._condition:
            self._connect_result = reason_code
            if not reason_code.is_failure:
                self._connections += 1
                # Re-subscribe on every connect: a restarted broker keeps no sessions.
                result, mid = client.subscribe([(topic, 1) for topic in self.topics])
                if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                    self._pending_mids[mid] = self._connections
            self._condition.notify_all()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: mqtt.ReasonCode,
        properties: mqtt.Properties | None,
    ) -> None:
        with self._condition:
            self._subscribed_on = 0
            self._condition.notify_all()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[mqtt.ReasonCode],
        properties: mqtt.Properties | None,
    ) -> None:
        with self._condition:
            connection = self._pending_mids.pop(mid, 0)
            if connection == self._connections and all(not c.is_failure for c in reason_codes):
                self._subscribed_on = connection
            self._condition.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        raw = bytes(message.payload)
        try:
            payload: Any = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        received = Message(message.topic, payload, message.qos, bool(message.retain), raw)
        with self._condition:
            self._messages.append(received)
            self._condition.notify_all()

    # waiting

    def _wait_connected(self, timeout: float) -> None:
        with self._condition:
            if not self._condition.wait_for(lambda: self._connect_result is not None, timeout):
                raise TimeoutError(f"no CONNACK from the broker within {timeout} s")
            result = self._connect_result
        assert result is not None
        if result.is_failure:
            raise ConnectionError(f"broker refused the connection: {result}")

    @property
    def connections(self) -> int:
        """Return how many times the broker accepted this client (reconnects included)."""
        with self._condition:
            return self._connections

    def wait_subscribed(self, timeout: float = 5.0, *, connections: int = 1) -> None:
        """Wait until the client connected at least `connections` times and is subscribed.

        After `broker.restart()`, `wait_subscribed(connections=2)` waits for the reconnect.
        """

        def ready() -> bool:
            return self._connections >= connections and self._subscribed_on == self._connections

        with self._condition:
            ok = self._condition.wait_for(ready, timeout)
        if not ok:
            raise TimeoutError(
                f"subscriber {self.client_id} not subscribed to {self.topics} on connection "
                f"{connections} within {timeout} s"
            )

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Message]:
        """Return all messages once at least count arrived; fail the test if they do not."""
        with self._condition:
            arrived = self._condition.wait_for(lambda: len(self._messages) >= count, timeout)
            messages = list(self._messages)
        if not arrived:
            raise AssertionError(
                f"expected {count} message(s) on {self.topics} within {timeout} s, "
                f"got {len(messages)}: {messages!r}"
            )
        return messages

    def settle(self, seconds: float = 0.3) -> list[Message]:
        """Wait a moment and return everything that arrived (to check nothing more came)."""
        time.sleep(seconds)
        return self.messages

    @property
    def messages(self) -> list[Message]:
        """Return a copy of the messages received so far."""
        with self._condition:
            return list(self._messages)

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._condition:
            self._messages.clear()

    # life cycle

    def close(self) -> None:
        """Disconnect and stop paho's network thread."""
        if self._closed:
            return
        self._closed = True
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Subscriber {self.client_id} {self.topics} {len(self._messages)} message(s)>"


# --- a broker that says no ------------------------------------------------------------------


class RefusingBroker:
    """An MQTT 5 server over TLS that accepts every connection and answers every QoS 1
    PUBLISH with a PUBACK carrying ``reason_code`` (0x97 quota exceeded by default).

    Mosquitto refuses with 0x87 when its ACL denies a publish (tests use it for that); no
    configuration of it answers 0x97, which EMQX sends when a client goes over its quota.
    """

    host = "localhost"

    def __init__(self, workdir: Path | str, *, reason_code: int = 0x97):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.reason_code = reason_code
        certs = make_certificates(self.workdir)
        self.ca_path = certs.ca_path
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert_path, certs.key_path)
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.publishes: list[str] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="refusing-broker").start()

    def env(self) -> dict[str, str]:
        """Return the app's settings for this broker."""
        return {
            "EMQX_BROKER_URL": f"mqtts://{self.host}:{self.port}",
            "MQTT_USERNAME": "arcade",
            "MQTT_PASSWORD": "any",
            "MQTT_CA_CERT": str(self.ca_path),
            "MQTT_TLS": "true",
        }

    def close(self) -> None:
        self._closed.set()
        self._listener.close()

    def __enter__(self) -> RefusingBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError, ConnectionError), raw:
            conn = self._context.wrap_socket(raw, server_side=True)
            while True:
                kind, body = _read_packet(conn)
                if kind == 0x1:  # CONNECT → CONNACK, success, no properties
                    conn.sendall(bytes([0x20, 3, 0, 0, 0]))
                elif kind == 0x3:  # PUBLISH
                    topic_length = int.from_bytes(body[:2], "big")
                    self.publishes.append(body[2 : 2 + topic_length].decode())
                    packet_id = body[2 + topic_length : 4 + topic_length]
                    conn.sendall(bytes([0x40, 4]) + packet_id + bytes([self.reason_code, 0]))
                elif kind == 0xC:  # PINGREQ
                    conn.sendall(bytes([0xD0, 0]))
                elif kind == 0xE:  # DISCONNECT
                    return


def _read_packet(conn: ssl.SSLSocket) -> tuple[int, bytes]:
    """Read one MQTT control packet: its type and its body (after the fixed header)."""
    header = _read_exactly(conn, 1)[0]
    length, shift = 0, 0
    while True:
        byte = _read_exactly(conn, 1)[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    return header >> 4, _read_exactly(conn, length)


def _read_exactly(conn: ssl.SSLSocket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    return data
