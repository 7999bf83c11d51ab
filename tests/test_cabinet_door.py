"""The cabinet's local HTTP door, knocked on as a hostile page or program would: a real
``python -m arcade.cabinet`` process on the test TLS broker, raw sockets, a real Chromium.

SPEC "Serving locally": loopback ``Host`` names only, cross-site requests refused with a 403,
state changes only by a request a plain HTML form cannot send; "HTTP": whatever a caller sends
gets a 4xx or the right answer, refusals are logged, rate-limited.
"""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from arcade.cabinet.local_http import REQUEST_SECONDS
from tests.support.broker import TlsBroker
from tests.support.browser import PageServer
from tests.support.cabinet_process import MACHINE, RunningCabinet, request


@pytest.fixture(scope="module")
def cabinet(
    broker: TlsBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningCabinet]:
    running = RunningCabinet(broker, tmp_path_factory.mktemp("door"))
    yield running
    running.close()
    log = running.log_path.read_text(errors="replace")
    assert running.process.returncode == 0, log[-3000:]
    assert "Traceback" not in log  # callers that hung up early included
    assert [line for line in running.lines() if line.get("level") == "error"] == []


@pytest.fixture
def paid(cabinet: RunningCabinet) -> RunningCabinet:
    """The running cabinet with at least one credit left."""
    cabinet.pay(1)
    return cabinet


def post(
    port: int, headers: list[tuple[str, str]], body: bytes = b"{}", path: str = "/game-over"
) -> tuple[int, bytes]:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head = f"POST {path} HTTP/1.1\r\n{lines}Content-Length: {len(body)}\r\n\r\n"
    return request(port, head.encode("latin-1") + body)


def code(body: bytes) -> str:
    return json.loads(body)["code"]


# --- DNS rebinding: the Host ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost.",
        "LOCALHOST",
        "127.0.0.1:{port}",
        "localhost:{port}",
        "127.0.0.2",
        "[::1]",
        "[::1]:{port}",
    ],
)
def test_loopback_host_names_are_answered(cabinet, host):
    """GIVEN the door WHEN a program asks for /credits by a loopback name THEN 200."""
    host = host.format(port=cabinet.port)

    status, body = request(cabinet.port, f"GET /credits HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())

    assert status == 200, body
    assert json.loads(body)["machine_id"] == MACHINE


@pytest.mark.parametrize(
    "host",
    [
        "rebind.evil.example",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "x.localhost.evil.example:{port}",
        "0.0.0.0",
        "0.0.0.0:{port}",
        "127.1",
        "[::ffff:127.0.0.1]",
        "evil.example@localhost",
        "localhost@evil.example",
        "localhost:80junk",
        "localhost:evil.example",
        "localhost:",
        "localhost..",
        "127.0.0.1:{port}:{port}",
        "",
    ],
)
def test_a_host_that_is_not_loopback_is_refused(cabinet, host):
    """GIVEN the door WHEN /credits is asked for by a name that is not loopback (a DNS-rebound
    page sends its own) or a Host with junk around a loopback name THEN 403, nothing leaks."""
    host = host.format(port=cabinet.port)

    status, body = request(cabinet.port, f"GET /credits HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())

    assert (status, code(body)) == (403, "forbidden")
    assert b"credits" not in body


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /credits HTTP/1.1\r\n\r\n",
        b"GET /credits HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
        b"GET /credits HTTP/1.1\r\nHost: evil.example\r\nHost: localhost\r\n\r\n",
    ],
    ids=["no_host_http_1_1", "two_hosts_loopback_first", "two_hosts_evil_first"],
)
def test_a_missing_or_doubled_host_is_a_bad_request(cabinet, raw):
    """GIVEN the door WHEN an HTTP/1.1 request has no Host, or two THEN 400 (RFC 9112 3.2)."""
    status, body = request(cabinet.port, raw)

    assert (status, code(body)) == (400, "bad_request")


def test_an_http_1_0_program_may_leave_host_out(cabinet):
    """GIVEN the door WHEN a plain HTTP/1.0 program asks without Host THEN it is answered."""
    status, body = request(cabinet.port, b"GET /credits HTTP/1.0\r\n\r\n")

    assert status == 200, body


def test_an_absolute_form_target_is_judged_by_the_host_it_names(cabinet):
    """GIVEN the door WHEN the request target is an absolute URL THEN its host counts: another
    name is refused whatever Host says, a loopback one is answered."""
    port = cabinet.port
    evil = f"GET http://evil.example:{port}/credits HTTP/1.1\r\nHost: localhost\r\n\r\n"
    own = f"GET http://localhost:{port}/credits HTTP/1.1\r\nHost: localhost\r\n\r\n"

    refused, refused_body = request(port, evil.encode())
    answered, _ = request(port, own.encode())

    assert (refused, code(refused_body)) == (403, "forbidden")
    assert answered == 200


# --- cross-site requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [("Origin", "null")],
        [("Origin", "http://localhost:1")],
        [("Origin", "http://127.0.0.1:1")],
        [("Origin", "https://evil.example")],
        [("Origin", "file://")],
        [("Origin", "http://127.0.0.1:{port}"), ("Origin", "https://evil.example")],
        [("Sec-Fetch-Site", "cross-site")],
        [("Sec-Fetch-Site", "same-site")],
        [("Sec-Fetch-Site", " Cross-Site ")],
        [("Referer", "https://evil.example/free-credits.html")],
        [("Referer", "http://127.0.0.1:1/page.html")],
        [("Sec-Fetch-Site", "same-origin"), ("Sec-Fetch-Site", "cross-site")],
    ],
    ids=[
        "null_origin",
        "localhost_other_port",
        "loopback_other_port",
        "evil_origin",
        "file_page",
        "two_origins",
        "cross_site",
        "same_site",
        "cross_site_spaced",
        "referer_elsewhere",
        "referer_other_port",
        "two_fetch_sites",
    ],
)
def test_a_cross_site_game_over_spends_nothing(paid, headers):
    """GIVEN a credit WHEN a game over comes from another origin (by Origin, Sec-Fetch-Site, or
    a Referer when no Origin is sent) THEN it is refused and the credit stays."""
    before = paid.credits
    sent = [(name, value.format(port=paid.port)) for name, value in headers]
    sent += [("Host", f"127.0.0.1:{paid.port}"), ("Content-Type", "application/json")]

    status, body = post(paid.port, sent)

    assert (status, code(body)) == (403, "forbidden")
    assert paid.credits == before


def test_the_doors_own_origin_may_end_a_game(paid):
    """GIVEN a credit WHEN the door's own origin posts a JSON game over THEN 202, one used."""
    before = paid.credits
    headers = [
        ("Host", f"localhost:{paid.port}"),
        ("Origin", f"http://localhost:{paid.port}"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Content-Type", "application/json;charset=UTF-8"),
    ]

    status, body = post(paid.port, headers)

    assert status == 202, body
    assert paid.credits == before - 1


@pytest.mark.parametrize(
    "content_types",
    [
        ["text/plain"],
        ["text/plain;charset=UTF-8"],
        ["application/x-www-form-urlencoded"],
        ["multipart/form-data; boundary=x"],
        ["application/csp-report"],
        ["text/plain; application/json"],
        ["text/plain, application/json"],
        ["text/plain", "application/json"],
        [],
    ],
)
def test_a_post_a_page_can_send_without_asking_spends_nothing(paid, content_types):
    """GIVEN a credit WHEN a game over carries a content type a form, sendBeacon or a no-cors
    fetch can send (or none, or two) THEN 415 and the credit stays."""
    before = paid.credits
    headers = [("Host", "127.0.0.1")] + [("Content-Type", value) for value in content_types]

    status, body = post(paid.port, headers, b"x=1")

    assert (status, code(body)) == (415, "unsupported_media_type")
    assert paid.credits == before


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_on_game_over_change_nothing(paid, method):
    """GIVEN a credit WHEN /game-over is called with another method THEN 405 (never a 5xx),
    the credit stays."""
    before = paid.credits
    raw = (
        f"{method} /game-over HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )

    status, body = request(paid.port, raw.encode())

    assert status == 405
    if method != "HEAD":
        assert code(body) == "method_not_allowed"
    assert paid.credits == before


def test_a_preflight_from_another_origin_is_refused_and_grants_nothing(cabinet):
    """GIVEN the door WHEN another origin's CORS preflight asks to POST JSON THEN 403 and no
    Access-Control-Allow-* header."""
    raw = (
        "OPTIONS /game-over HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\n"
        "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n"
        "\r\n"
    )
    with socket.create_connection(("127.0.0.1", cabinet.port), timeout=5) as sock:
        sock.sendall(raw.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk

    assert answer.startswith(b"HTTP/1.0 403 ")
    assert b"access-control-allow" not in answer.lower()


# --- malformed requests and idle connections ----------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe garbage\r\n\r\n",
        b"GET /credits HTTP/9.9\r\nHost: localhost\r\n\r\n",
        b"GET /credits HTTP/1.1 extra\r\nHost: localhost\r\n\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET /credits HTTP/1.1\r\nHost: localhost\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
        b"GET /%ff%00 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"BREW /game-over HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"POST /game-over HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: -1\r\n\r\n",
        b"POST /game-over HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 99999999999999999999999999\r\n\r\n",
        b"POST /game-over HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nContent-Length: 9\r\n\r\n{}",
        b"POST /game-over HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2_0\r\n\r\n{}",
        b"POST /game-over HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"GET http://[::1/credits HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET http://[evil.example]/credits HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ],
    ids=[
        "binary_request_line",
        "http_9_9",
        "four_words",
        "huge_target",
        "200_headers",
        "bad_percent",
        "unknown_method",
        "negative_length",
        "huge_length",
        "two_lengths",
        "underscored_length",
        "chunked",
        "absolute_target_bracket_left_open",
        "absolute_target_bracketed_name",
    ],
)
def test_a_malformed_request_is_a_4xx_in_json_and_spends_nothing(paid, raw):
    """GIVEN a credit WHEN the door gets a request that is not well-formed HTTP it reads THEN a
    4xx with a JSON body (never a 5xx, never an HTML page), the credit stays, and the door still
    answers the next request."""
    before = paid.credits

    status, body = request(paid.port, raw)

    assert 400 <= status < 500, (status, body[:200])
    assert "code" in json.loads(body)
    assert paid.credits == before
    assert paid.events("local_http_failed") == []


def test_idle_and_slow_connections_never_keep_the_game_waiting(cabinet):
    """GIVEN 300 connections that send nothing or half a request WHEN the game asks THEN it is
    answered at once; each of them is closed by the door within REQUEST_SECONDS (and a sender
    trickling a byte a second is closed too)."""
    idle = [socket.create_connection(("127.0.0.1", cabinet.port), timeout=5) for _ in range(300)]
    for sock in idle[::2]:
        sock.sendall(b"GET /credits HTTP/1.1\r\nHost: localhost\r\n")
    slow = socket.create_connection(("127.0.0.1", cabinet.port), timeout=5)
    try:
        started = time.monotonic()
        assert cabinet.status()["machine_id"] == MACHINE
        assert time.monotonic() - started < 1.0
        for byte in b"GET /credits HTTP/1.1\r\n":
            if time.monotonic() - started > REQUEST_SECONDS + 1:
                break
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break  # closed by the door: what is expected of it
            time.sleep(0.5)
        deadline = time.monotonic() + REQUEST_SECONDS + 2
        open_ones = [*idle, slow]
        while open_ones and time.monotonic() < deadline:
            readable, _, _ = select.select(open_ones, [], [], 0.2)
            open_ones = [sock for sock in open_ones if sock not in readable]
        assert open_ones == [], f"{len(open_ones)} connection(s) still held"
        assert cabinet.status()["machine_id"] == MACHINE
    finally:
        for sock in [*idle, slow]:
            sock.close()


def test_callers_that_hang_up_before_the_answer_leave_no_trace(cabinet):
    """GIVEN the door WHEN 20 callers send a request and reset the connection at once THEN
    the door still answers the next one, and (checked when the module's cabinet stops) its log
    holds no trace and no error line."""
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", cabinet.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(b"GET /credits HTTP/1.1\r\nHost: localhost\r\n\r\n")
        sock.close()  # with SO_LINGER 0: a reset, before the answer could be written

    assert cabinet.status()["machine_id"] == MACHINE
    assert "Traceback" not in cabinet.log_path.read_text(errors="replace")


def test_the_door_listens_on_loopback_only(cabinet):
    """GIVEN a running cabinet THEN its door's socket is bound to 127.0.0.1, nothing wider."""
    pid = cabinet.process.pid
    inodes = {
        os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
        for fd in os.listdir(f"/proc/{pid}/fd")
        if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
    }
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                listening.append(fields[1])

    assert listening == [f"0100007F:{cabinet.port:04X}"]


# --- refusals are logged, never a flood of lines ------------------------------------------------


def test_refused_knocks_and_messages_are_logged_but_a_flood_is_not(broker, tmp_path):
    """GIVEN a fresh cabinet WHEN 60 cross-site requests and 60 junk MQTT messages arrive in a
    minute THEN each kind writes 20 warning lines, no more, and the next signed pulse counts."""
    cabinet = RunningCabinet(broker, tmp_path)
    try:
        for _ in range(60):
            post(cabinet.port, [("Host", "127.0.0.1"), ("Origin", "https://evil.example")])
            cabinet.publish(b"\xff not a coinpulse")

        cabinet.pay(1)

        refused = cabinet.events("local_http_refused") + cabinet.events("message_refused")
    finally:
        cabinet.close()
    assert len([line for line in refused if line["event"] == "local_http_refused"]) == 20
    assert len([line for line in refused if line["event"] == "message_refused"]) == 20
    assert {line["level"] for line in refused} == {"warning"}


# --- a real browser -------------------------------------------------------------------------------

ATTACK_PAGE = """<!doctype html>
<title>A page shown on the cabinet</title>
<h1>Free credits!</h1>
<pre id="log"></pre>
<iframe name="sink" style="width: 600px; height: 60px"></iframe>
<form id="urlencoded" method="post" target="sink" action="{door}/game-over"><input name="a"></form>
<form id="plain" method="post" target="sink" action="{door}/game-over" enctype="text/plain">
  <input name='{{"x":"' value='"}}'></form>
<form id="multipart" method="post" target="sink" action="{door}/game-over"
  enctype="multipart/form-data"><input name="a"></form>
<img src="{door}/credits" alt="">
<script src="{door}/credits"></script>
<script>
  const lines = [];
  const log = (line) => {{
    lines.push(line);
    document.getElementById("log").textContent = lines.join("\\n");
  }};
  const pause = (ms) => new Promise((done) => setTimeout(done, ms));
  const attempt = async (name, call) => {{
    try {{ log(name + ": " + await call()); }} catch (error) {{ log(name + ": blocked"); }}
  }};
  (async () => {{
    for (const form of ["urlencoded", "plain", "multipart"]) {{
      document.getElementById(form).submit();
      await pause(300);
    }}
    const body = "{{}}";
    const json = {{"Content-Type": "application/json"}};
    await attempt("no-cors", async () => (await fetch("{door}/game-over",
      {{method: "POST", mode: "no-cors", body, headers: json}})).type);
    await attempt("cors-json", async () => (await fetch("{door}/game-over",
      {{method: "POST", body, headers: json}})).status);
    await attempt("cors-header", async () => (await fetch("{door}/game-over",
      {{method: "POST", body, headers: {{"X-Requested-With": "x"}}}})).status);
    await attempt("read-credits", async () => await (await fetch("{door}/credits")).text());
    await attempt("beacon", async () => navigator.sendBeacon("{door}/game-over", body));
    await attempt("beacon-json", async () => navigator.sendBeacon("{door}/game-over",
      new Blob([body], {{type: "application/json"}})));
    await pause(800);
    log("DONE");
  }})();
</script>
"""


def test_pages_from_other_origins_in_chromium_spend_nothing_and_read_nothing(paid, browser):
    """GIVEN a credit WHEN Chromium runs a page from another port, another loopback name, and a
    data: URL that posts forms (urlencoded, text/plain, multipart), fetches with no-cors and
    with JSON (a CORS preflight), sends beacons, and loads /credits as an image and a script
    THEN no credit is used, every JSON fetch and every read is blocked, and each page's
    screenshot is saved."""
    before = paid.credits
    door = f"http://127.0.0.1:{paid.port}"
    page = ATTACK_PAGE.format(door=door)
    pages = PageServer({"/attack.html": page})
    data_url = "data:text/html;base64," + base64.b64encode(page.encode()).decode()
    logs = {}
    try:
        for name, url in [
            ("other-port", pages.url("/attack.html")),
            ("other-name", pages.url("/attack.html", host="localhost")),
            ("data-url", data_url),
        ]:
            browser.open(url)
            assert browser.wait_for_text("DONE", timeout=20)
            logs[name] = browser.text()
            assert browser.screenshot(f"attack-from-{name}").stat().st_size > 0
    finally:
        pages.close()

    for name, text in logs.items():
        assert "cors-json: blocked" in text, (name, text)
        assert "cors-header: blocked" in text, (name, text)
        assert "read-credits: blocked" in text, (name, text)
    assert paid.credits == before
    assert paid.events("local_http_failed") == []


def test_stopping_with_connections_open_is_quick_and_quiet(broker, tmp_path):
    """GIVEN a cabinet with idle connections and half-sent game overs open at its door WHEN
    it gets SIGTERM THEN it exits 0 at once, without a trace or an error line, and the half
    sent game overs spent nothing."""
    cabinet = RunningCabinet(broker, tmp_path)
    cabinet.pay(1)
    half = (
        b"POST /game-over HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    opened = [socket.create_connection(("127.0.0.1", cabinet.port)) for _ in range(20)]
    try:
        for sock in opened[:10]:
            sock.sendall(half)
        time.sleep(0.3)
        started = time.monotonic()
        cabinet.close()
        took = time.monotonic() - started
    finally:
        for sock in opened:
            sock.close()

    log = cabinet.log_path.read_text(errors="replace")
    assert cabinet.process.returncode == 0, log[-3000:]
    assert took < 3
    assert "Traceback" not in log
    assert [line for line in cabinet.lines() if line.get("level") == "error"] == []
    assert cabinet.events("game_over") == []
