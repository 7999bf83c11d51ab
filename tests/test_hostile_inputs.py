"""What a caller controls, taken to its edges: every answer a 4xx or the right one, never a 500
or an ERROR line, never a stall of the webhook, and no flood of log lines (SPEC "HTTP",
"Serving locally"). Through a real `python app.py` where the failure lives in the server."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.admin import login
from tests.support.api_process import ApiProcess, flask_command
from tests.support.app import ADMIN_KEY, WEBHOOK_SECRET, app_environment
from tests.support.broker import free_loopback_port
from tests.support.stripe_standin import event, sign_payload

# paho leaves the socket of a connection to a stopped or refusing broker to the collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
JSON_ADMIN = {**ADMIN, "Content-Type": "application/json"}

# Texts that are no place's time zone, each of which zoneinfo refuses in its own way: a folder
# of the zone database (IsADirectoryError), a name over the file system's limit (OSError), a
# path out of the database, a NUL, the host's own setting.
NO_ZONES = ["Europe", "America/", "A" * 300, "Z" * 5000, "../../etc/passwd", "UTC\x00", "localtime"]


@pytest.mark.parametrize("name", NO_ZONES, ids=lambda n: repr(n[:12]))
def test_every_door_that_takes_a_time_zone_refuses_a_name_that_is_no_zone(make_app, caplog, name):
    """GIVEN a time zone name that is no zone WHEN the revenue report, a machine's settings or
    the revenue page is asked with it THEN a 400 that names the setting (the page: no 500),
    and no ERROR line."""
    app = make_app()
    app.extensions["arcade"].registry.register("cab001")
    client = app.test_client()

    report = client.get("/reports/revenue", query_string={"tz": name}, headers=ADMIN)
    settings = client.patch("/machines/cab001", json={"timezone": name}, headers=ADMIN)
    login(client)
    page = client.get("/admin/revenue", query_string={"tz": name})

    assert (report.status_code, report.json["code"]) == (400, "invalid_tz")
    assert (settings.status_code, settings.json["code"]) == (400, "invalid_timezone")
    assert page.status_code == 400
    assert client.get("/reports/revenue?tz=Europe/Paris", headers=ADMIN).status_code == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.fixture
def api(broker, stripe_standin, tmp_path) -> Iterator[ApiProcess]:
    """`python app.py` on the shared broker and a fresh Stripe stand-in, with cab001."""
    env = app_environment(broker, stripe_standin, tmp_path / "arcade.db")
    process = ApiProcess(env, tmp_path / "api.log").start()
    status, _ = process.request(
        "POST", "/machines", json.dumps({"machine_id": "cab001"}).encode(), JSON_ADMIN
    )
    assert status == 201
    yield process
    process.close()


def exchange_many(port: int, requests: bytes, count: int) -> int:
    """Send pipelined requests on one connection; return how many answers came back."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(requests)
        while received.count(b"HTTP/1.1 ") < count and (chunk := conn.recv(65536)):
            received += chunk
    return received.count(b"HTTP/1.1 ")


def test_a_flood_of_requests_anyone_can_send_writes_a_bounded_number_of_lines(api, stripe_standin):
    """GIVEN Stripe down WHEN 40 connections each pipeline 10 anonymous QR requests (more than
    the worker threads, so requests queue) THEN every one is answered, but the 400 failed
    answers and the queued requests write at most 20 warning lines a minute of each kind,
    and no ERROR line."""
    stripe_standin.fail_next(500, count=10_000)
    one = b"GET /machines/cab001/qr.png HTTP/1.1\r\nHost: x\r\n\r\n"

    with ThreadPoolExecutor(40) as pool:
        answered = list(pool.map(lambda _: exchange_many(api.port, one * 10, 10), range(40)))

    assert answered == [10] * 40
    lines = [json.loads(line) for line in api.log_text().splitlines() if line.startswith("{")]
    failed = [line for line in lines if line.get("event") == "request_failed"]
    queued = [line for line in lines if "queue" in line.get("message", "")]
    assert 1 <= len(failed) <= 20
    assert len(queued) <= 20
    assert [line for line in lines if line["level"] == "error"] == []


def test_more_idle_connections_than_the_server_takes_do_not_keep_stripe_out(api):
    """GIVEN more connections than the server's connection limit, opened and left idle or
    part-way through their headers WHEN Stripe posts a signed webhook THEN it is answered at
    once (waitress stopped accepting at its limit: the webhook waited until the idle ones
    timed out), and the idle connections the server let go were the oldest."""
    from arcade.serve import _connection_limit

    # The same limit as the server's: it inherited this process's open-files limit, which
    # this raises as the server does.
    limit = _connection_limit()
    idle = []
    try:
        for number in range(limit + 50):
            conn = socket.create_connection(("127.0.0.1", api.port), timeout=10)
            if number % 2:
                conn.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\n")
            idle.append(conn)

        status, answer = api.webhook(
            "customer.created", {"id": "cus_1"}, WEBHOOK_SECRET, timeout=10
        )
        first_closed = idle[0].recv(1)
    finally:
        for conn in idle:
            conn.close()

    assert (status, answer["result"]) == (200, "ignored")
    assert first_closed == b""


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_idle_connections_to_one_address_do_not_keep_stripe_out_of_another(
    broker, stripe_standin, tmp_path
):
    """GIVEN HOST=* (waitress listens on 0.0.0.0 and on ::, one connection limit for both)
    and as many idle connections to ::1 as the limit allows, then one idle connection to
    127.0.0.1 WHEN Stripe posts a signed webhook to either address THEN it is answered at
    once (room was made only among the newcomer's own address's connections: there were
    none idle, so the server stopped accepting on every address until the idle ones timed
    out), and the idle connections let go were the oldest ones, whichever their address."""
    from arcade.serve import _connection_limit

    env = app_environment(broker, stripe_standin, tmp_path / "arcade.db")
    process = ApiProcess(env, tmp_path / "api.log", port=free_loopback_port())
    process.env["HOST"] = "*"
    process.start()
    limit = _connection_limit()  # the server's too: it inherited this open-files limit
    idle = []
    try:
        for _ in range(limit):
            idle.append(socket.create_connection(("::1", process.port), timeout=10))
        # Answered only once every connection before it on ::1 was taken in; then left open
        # and idle like them, so the server is one connection short of its limit.
        idle.append(keep_alive_status("::1", process.port))
        idle.append(socket.create_connection(("127.0.0.1", process.port), timeout=10))

        answers = [signed_webhook(host, process.port) for host in ("127.0.0.1", "::1")]
        first_closed = idle[0].recv(1)
    finally:
        for conn in idle:
            conn.close()
        process.close()

    assert answers == [(200, "ignored"), (200, "ignored")]
    assert first_closed == b""


def keep_alive_status(host: str, port: int) -> socket.socket:
    """Ask GET /status on a connection of its own and return that connection, still open."""
    conn = socket.create_connection((host, port), timeout=10)
    conn.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.recv(12) == b"HTTP/1.1 200"
    return conn


def signed_webhook(host: str, port: int) -> tuple[int, str]:
    """POST a signed event Stripe sends to ``host``; return the status and the result."""
    body = json.dumps(event("customer.created", {"id": "cus_1"})).encode()
    headers = {
        "Stripe-Signature": sign_payload(body, WEBHOOK_SECRET),
        "Content-Type": "application/json",
    }
    conn = http.client.HTTPConnection(host, port, timeout=8)
    try:
        conn.request("POST", "/webhook", body, headers)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())["result"]
    finally:
        conn.close()


def test_anonymous_qr_requests_while_stripe_is_slow_hold_no_thread_stripe_needs(
    api, stripe_standin
):
    """GIVEN Stripe answering after 8 s (past the client's read timeout) and four machines
    with no link yet WHEN 40 anonymous QR requests come at once, 30 of them for one machine
    THEN a signed webhook sent meanwhile is answered within 3 s (requests waiting for the one
    making their link, or for Stripe, held every worker thread for 5 s), each QR request is
    answered without a 500, and Stripe is asked at most once per machine."""
    for number in (2, 3, 4):
        body = json.dumps({"machine_id": f"cab00{number}"}).encode()
        assert api.request("POST", "/machines", body, JSON_ADMIN)[0] == 201
    stripe_standin.reset_requests()
    stripe_standin.latency = 8.0
    paths = ["/machines/cab001/qr.png"] * 30 + [
        f"/machines/cab00{n}/qr.{kind}" for n in (2, 3, 4) for kind in ("png", "svg", "png")
    ]

    with ThreadPoolExecutor(len(paths)) as pool:
        answers = [pool.submit(api.request, "GET", path, timeout=30) for path in paths]
        time.sleep(0.5)  # the QR requests are in, waiting on Stripe or on each other
        status, answer = api.webhook("customer.created", {"id": "cus_1"}, WEBHOOK_SECRET, timeout=3)
        statuses = {future.result()[0] for future in answers}

    assert (status, answer["result"]) == (200, "ignored")
    assert statuses <= {429, 502}
    assert len(stripe_standin.requests_to("POST", "/v1/payment_links")) <= 4


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mqtts://[::1", "EMQX_BROKER_URL must be a host name, mqtts://host:port"),
        ("mqtts://arcade:hunter2-broker-pw@localhost:8883", "EMQX_BROKER_URL must not hold a"),
        ("arcade:hunter2-broker-pw@localhost", "EMQX_BROKER_URL must be a host name"),
    ],
)
def test_a_broker_url_that_cannot_be_read_or_carries_a_login_is_named_never_shown(
    stripe_standin, tmp_path, url, problem
):
    """GIVEN EMQX_BROKER_URL with a bracket left open (a ValueError from urlsplit: a traceback
    at start-up) or with a login in it WHEN python app.py starts and a flask command runs
    THEN both go on, /status names the problem by the setting, and the password shows in no
    answer and no log line."""
    status, answer, log, listed = status_and_a_flask_command(
        {"EMQX_BROKER_URL": url}, stripe_standin, tmp_path
    )

    assert status == 200
    assert any(line.startswith(problem) for line in answer["problems"]), answer["problems"]
    assert answer["broker"]["host"] is None
    assert listed.returncode == 0, listed.stderr
    for text in (json.dumps(answer), log, listed.stdout + listed.stderr):
        assert "hunter2" not in text and "Traceback" not in text


@pytest.mark.parametrize(
    "base",
    [
        "http://[::1",
        "http://127.0.0.1:99999",
        "https://[evil]",
        "https://[stripe]:443",
        "https://h:99999",
        # A host that is no host name, and a port no server listens on, were taken: every
        # Stripe call then failed with a 502 while /status named no problem.
        "https://exa mple.com",
        "https://api.example.com\x7f",
        f"https://{'a' * 300}.example.com",
        "http://127.0.0.1:0",
    ],
)
def test_a_stripe_api_base_that_cannot_be_read_is_named_never_a_traceback(
    stripe_standin, tmp_path, base
):
    """GIVEN STRIPE_API_BASE that urlsplit cannot read (a ValueError: a traceback from python
    app.py and every flask command) or with a port no socket has WHEN python app.py starts and
    a flask command runs THEN both go on and /status names STRIPE_API_BASE as malformed."""
    status, answer, log, listed = status_and_a_flask_command(
        {"STRIPE_API_BASE": base}, stripe_standin, tmp_path
    )

    assert status == 200
    assert "STRIPE_API_BASE must be an http:// or https:// address" in answer["problems"]
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in log + listed.stderr


def status_and_a_flask_command(setting: dict[str, str], stripe_standin, tmp_path) -> tuple:
    """Start python app.py with ``setting`` (and a Stripe key and a store), ask /status, stop
    it with SIGTERM (asserting exit status 0), then run ``flask machines list`` with the same
    settings; return /status's status and JSON, the server's log and the command's
    CompletedProcess."""
    env = {
        **setting,
        "STRIPE_API_KEY": stripe_standin.api_key,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'arcade.db'}",
    }
    api = ApiProcess(env, tmp_path / "api.log").start()
    try:
        status, answer = api.request("GET", "/status")
        api.terminate()
        assert api.wait() == 0, "python app.py did not stop with exit status 0 on SIGTERM"
    finally:
        api.close()
    return status, answer, api.log_text(), flask_command(env, "machines", "list")


def test_a_qr_code_is_drawn_once_and_a_caller_never_waits_behind_others_drawing():
    """GIVEN a QR code drawn once WHEN it is asked again THEN the kept image is answered (a
    PNG is ~17 ms of pure-Python CPU: 200 connections asking anonymously kept a signed webhook
    waiting 4 s); WHEN every drawing slot is taken THEN a caller that will not wait is told
    at once instead of queueing."""
    from arcade import qr

    url = "https://buy.stripe.com/test_drawn_once?client_reference_id=cab001"
    first = qr.render(url, "png")
    assert qr.render(url, "png", wait=False) is first
    for _ in range(qr.DRAWING_AT_ONCE):
        assert qr._drawing.acquire(blocking=False)
    try:
        assert qr.render(url, "png", wait=False) is first  # kept: no drawing needed
        with pytest.raises(qr.Busy):
            qr.render(url + "&other=1", "png", wait=False)
    finally:
        for _ in range(qr.DRAWING_AT_ONCE):
            qr._drawing.release()


def test_a_player_page_qr_code_for_a_huge_host_is_a_400_and_varies_by_host(api):
    """GIVEN anonymous requests for the player page's QR code WHEN the Host header is 3,000
    characters of valid labels (qrcode's ValueError: a 500 and an ERROR line) THEN a 400 that
    says why; a normal one is answered with ``Vary: Host``, as its image is of that host."""
    huge = ("a" * 60 + ".") * 49 + "x"
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as conn:
        conn.sendall(
            b"GET /play/cab001/qr.png HTTP/1.1\r\nHost: "
            + huge.encode()
            + b"\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    connection.request("GET", "/play/cab001/qr.svg")
    normal = connection.getresponse()
    normal.read()
    connection.close()

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["code"] == "address_too_long"
    assert normal.status == 200 and normal.getheader("Vary") == "Host"
    assert '"level":"error"' not in api.log_text()


def test_player_page_qr_codes_for_made_up_hosts_never_crowd_out_the_machines_qr_code(api):
    """GIVEN the machine's QR code drawn and kept WHEN anonymous callers keep asking for the
    player page's QR code under made-up Host names (each a new image, as the page's address
    is the Host's) until hundreds were drawn, while the cabinet keeps asking for its QR code
    THEN the cabinet's is always answered (those images pushed it out of the kept ones and
    held every drawing slot: a 429 each time it had to be drawn again)."""
    import itertools
    import threading

    from arcade import qr

    assert api.request("GET", "/machines/cab001/qr.png")[0] == 200
    numbers = itertools.count()
    drawn: list[int] = []
    done = threading.Event()

    def flood() -> None:
        while not done.is_set():
            number = next(numbers)
            with socket.create_connection(("127.0.0.1", api.port), timeout=30) as conn:
                conn.sendall(
                    f"GET /play/cab001/qr.png HTTP/1.1\r\nHost: h{number}.example\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
            if answer.startswith(b"HTTP/1.1 200"):
                drawn.append(number)

    cabinet = []
    with ThreadPoolExecutor(6) as pool:
        floods = [pool.submit(flood) for _ in range(6)]
        try:
            for _ in range(3):  # as a display that asks again now and then, without its ETag
                time.sleep(6.0)
                cabinet.append(api.request("GET", "/machines/cab001/qr.png")[0])
        finally:
            done.set()
        for each in floods:
            each.result()

    assert len(drawn) > qr.CACHED_CHOSEN_IMAGES  # more than are kept of such images
    assert set(cabinet) == {200}, [status for status in cabinet if status != 200][:5]
