"""The operator's doors tried as an anonymous caller or an attacker would: a real
``python app.py`` over sockets, and a real Chromium for what a browser decides.

SPEC "Operators (admin key)": a signed session cookie (HttpOnly, SameSite=Strict, Secure unless
on loopback), a CSRF token on every form, logging out ends the session; "HTTP": whatever a
caller sends gets a 4xx or the right answer, never a 500 or an ERROR line.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from tests.support.api_process import ApiProcess
from tests.support.app import ADMIN_KEY, TOPIC_PREFIX, app_environment
from tests.support.browser import Browser, PageServer

# paho leaves the socket of a connection to a stopped or refusing broker to the collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")


@pytest.fixture
def api(broker, stripe_standin, tmp_path) -> Iterator[ApiProcess]:
    env = app_environment(broker, stripe_standin, tmp_path / "arcade.db")
    process = ApiProcess(env, tmp_path / "api.log").start()
    yield process
    process.close()
    errors = [line for line in process.log_text().splitlines() if '"level":"error"' in line]
    assert errors == [], errors
    assert ADMIN_KEY not in process.log_text()


class Operator:
    """One browser-like client of the pages: it keeps its cookie and sends forms."""

    def __init__(self, api: ApiProcess, headers: dict[str, str] | None = None):
        self.api = api
        self.cookie = ""
        self.headers = headers or {}

    def send(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.api.port, timeout=30)
        headers = dict(self.headers)
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookie:
            headers["Cookie"] = self.cookie
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        answer.text = answer.read().decode(errors="replace")  # type: ignore[attr-defined]
        connection.close()
        for value in answer.headers.get_all("Set-Cookie") or []:
            self.cookie = value.split(";")[0]
        return answer

    def csrf(self, path: str = "/admin/login") -> str:
        page = self.send("GET", path).text  # type: ignore[attr-defined]
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert found, page[:300]
        return found.group(1)

    def log_in(self, **extra: str) -> http.client.HTTPResponse:
        form = {"key": ADMIN_KEY, "csrf_token": self.csrf(), **extra}
        return self.send("POST", "/admin/login", form)


def add_machine(api: ApiProcess, machine_id: str = "cab001") -> str:
    status, answer = api.request(
        "POST",
        "/machines",
        json.dumps({"machine_id": machine_id, "name": "Pac-Man"}).encode(),
        {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
    )
    assert status == 201, answer
    return answer["token"]


# --- where a form goes back to -------------------------------------------------------------------
MADE_UP_NEXT = [
    "/admin/\r\nSet-Cookie: x=1",
    "/admin/\nLocation: https://evil.example/",
    "/admin/\x00",
    "/admin/\t/evil.example",
    "/admin/ payments",
    "/admin/../../evil",
    "/admin/%2e%2e/%2e%2e/evil",
    "/admin/./payments",
    "/admin\\evil.example",
    "//evil.example/admin/",
    "https://evil.example/admin/",
    "/admin/é",
]


@pytest.mark.parametrize("made_up", MADE_UP_NEXT)
def test_a_next_address_a_caller_made_up_is_never_followed_nor_a_500(api, made_up):
    """GIVEN a `next` with a line break, a control character, a climb out of /admin or another
    host WHEN the login form and a page's form are sent with it THEN each answers 302 to the
    page it would go to anyway, never a 500 (the app's log has no ERROR line)."""
    add_machine(api)
    operator = Operator(api)

    logged_in = operator.log_in(next=made_up)
    assert (logged_in.status, logged_in.getheader("Location")) == (302, "/admin/")

    form = {
        "csrf_token": operator.csrf("/admin/payments"),
        "machine_id": "nope!",
        "credits": "1",
        "reason": "x",
        "next": made_up,
    }
    sent = operator.send("POST", "/admin/credits", form)
    assert (sent.status, sent.getheader("Location")) == (302, "/admin/payments")


def test_a_next_address_among_the_pages_is_followed(api):
    operator = Operator(api)
    first = operator.send("GET", "/admin/revenue?days=7")
    assert first.getheader("Location") == "/admin/login?next=/admin/revenue?days%3D7"
    logged_in = operator.log_in(next="/admin/revenue?days=7")
    assert (logged_in.status, logged_in.getheader("Location")) == (302, "/admin/revenue?days=7")


# --- the session ---------------------------------------------------------------------------------
def test_logging_out_ends_the_session_for_every_copy_of_its_cookie(api):
    """GIVEN an operator logged in twice (two browsers) and a copy of the first cookie WHEN the
    first logs out THEN the copy opens no page and sends no form, while the second login goes
    on."""
    token = add_machine(api)
    first, second = Operator(api), Operator(api)
    first.log_in()
    second.log_in()
    stolen = Operator(api)
    stolen.cookie = first.cookie
    rotate_csrf = stolen.csrf("/admin/machines/cab001")

    out = first.send("POST", "/admin/logout", {"csrf_token": first.csrf("/admin/")})
    assert out.status == 302

    replayed = stolen.send("GET", "/admin/payments")
    assert (replayed.status, replayed.getheader("Location")) == (
        302,
        "/admin/login?next=/admin/payments",
    )
    rotate = "/admin/machines/cab001/rotate-token"
    rotated = stolen.send("POST", rotate, {"csrf_token": rotate_csrf})
    assert rotated.status == 302 and rotated.getheader("Location").startswith("/admin/login")
    cabinet = {"Authorization": f"Bearer {token}"}
    assert api.request("GET", "/machines/cab001", headers=cabinet)[0] == 200, "not rotated"
    assert second.send("GET", "/admin/payments").status == 200


@pytest.mark.parametrize(
    "proxy_says",
    [{"X-Forwarded-Proto": "https"}, {"Forwarded": 'for=192.0.2.7;proto="https"'}],
)
def test_the_cookie_is_secure_behind_a_proxy_saying_https_even_on_loopback(api, proxy_says):
    """GIVEN `python app.py` behind a TLS proxy on the same machine (Host 127.0.0.1) WHEN the
    proxy says the browser came over https THEN the login cookie is Secure; without it, on
    loopback plain http, it is not (a browser would drop it)."""
    behind = Operator(api, headers=proxy_says)
    assert behind.send("GET", "/admin/login").getheader("Set-Cookie").count("; Secure") == 1
    assert "Secure" in behind.log_in().getheader("Set-Cookie")
    plain = Operator(api)
    assert "Secure" not in plain.send("GET", "/admin/login").getheader("Set-Cookie")


def test_behind_a_proxy_saying_https_a_refused_form_never_blames_plain_http(api):
    """GIVEN `python app.py` behind a TLS proxy that keeps the browser's Host and says https
    WHEN a form comes without the login cookie THEN the page does not tell the operator the
    pages were opened over plain http (the cookie's Secure flag believes the proxy, so the
    explanation must too); straight over plain http on that host, it does."""
    form = {"key": ADMIN_KEY, "csrf_token": "x"}
    behind = Operator(api, headers={"Host": "arcade.example", "X-Forwarded-Proto": "https"})
    answer = behind.send("POST", "/admin/login", form)
    assert answer.status == 403
    assert "plain http" not in answer.text  # type: ignore[attr-defined]
    plain = Operator(api, headers={"Host": "arcade.example"})
    assert "plain http" in plain.send("POST", "/admin/login", form).text  # type: ignore[attr-defined]


# --- headers a browser obeys ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/admin/login", "/admin/", "/admin/no-such-page", "/play/cab001", "/play/bad!id"]
)
def test_every_page_forbids_framing_and_sniffing(api, path):
    add_machine(api)
    operator = Operator(api)
    operator.log_in()
    page = operator.send("GET", path)
    assert page.getheader("Content-Type").startswith("text/html")
    assert page.getheader("X-Frame-Options") == "DENY"
    policy = page.getheader("Content-Security-Policy")
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert page.getheader("X-Content-Type-Options") == "nosniff"
    assert api.request("GET", "/status")[0] == 200


FRAMING_PAGE = """<!doctype html>
<title>Win a prize</title>
<iframe id="admin" src="{base}/admin/login" width="600" height="300"></iframe>
<iframe id="play" src="{base}/play/cab001" width="600" height="300"></iframe>
"""

CROSS_SITE_FORMS = """<!doctype html>
<title>Cute cats</title>
<iframe name="sink"></iframe>
<form id="grant" method="post" target="sink" action="{base}/admin/credits">
  <input name="machine_id" value="cab001"><input name="credits" value="99">
  <input name="reason" value="free"><input name="csrf_token" value="{stale}"></form>
<form id="rotate" method="post" target="sink" action="{base}/admin/machines/cab001/rotate-token">
  <input name="csrf_token" value="{stale}"></form>
<form id="logout" method="post" target="sink" action="{base}/admin/logout"></form>
<p id="done"></p>
<script>
  (async () => {{
    for (const form of ["grant", "rotate", "logout"]) {{
      document.getElementById(form).submit();
      await new Promise((done) => setTimeout(done, 500));
    }}
    document.getElementById("done").textContent = "DONE";
  }})();
</script>
"""


def test_in_chromium_other_sites_can_neither_frame_the_pages_nor_send_their_forms(
    api, browser: Browser, subscribe
):
    """GIVEN an operator logged in in Chromium WHEN a page of another origin (another port, and
    another site) frames the login and player's pages, then posts the grant, rotate-token and
    logout forms with a token of another session THEN neither frame shows the page, no credit
    is sent, the cabinet's token still works and the operator is still logged in."""
    from selenium.webdriver.common.by import By

    token = add_machine(api)
    pulses = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse")
    base = f"http://127.0.0.1:{api.port}"
    browser.open(f"{base}/admin/login")
    browser.driver.find_element(By.ID, "key").send_keys(ADMIN_KEY)
    browser.driver.find_element(By.ID, "login").click()
    assert browser.wait_for_text("Machines", timeout=30)
    stale = Operator(api).csrf()  # another session's token
    pages = PageServer(
        {
            "/frame.html": FRAMING_PAGE.format(base=base),
            "/forms.html": CROSS_SITE_FORMS.format(base=base, stale=stale),
        }
    )
    try:
        for host in ("127.0.0.1", "localhost"):  # same site on another port; another site
            browser.open(pages.url("/frame.html", host=host))
            for frame in ("admin", "play"):
                browser.driver.switch_to.frame(browser.driver.find_element(By.ID, frame))
                shown = browser.driver.find_element(By.TAG_NAME, "body").text
                browser.driver.switch_to.default_content()
                assert "Admin key" not in shown and "Pac-Man" not in shown, (host, frame)
            browser.screenshot(f"framed-from-{host}")
            browser.open(pages.url("/forms.html", host=host))
            assert browser.wait_for_text("DONE", timeout=20)
            browser.screenshot(f"forms-from-{host}")
    finally:
        pages.close()

    assert pulses.settle() == []
    status, _ = api.request("GET", "/machines/cab001", headers={"Authorization": f"Bearer {token}"})
    assert status == 200
    browser.open(f"{base}/admin/payments")
    assert browser.wait_for_text("Payments needing attention", timeout=30)


def test_in_chromium_the_refund_button_still_asks_before_refunding(api, browser: Browser):
    """GIVEN a paid machine and an operator on its page in Chromium WHEN Refund is pressed and
    the question is answered Cancel THEN the browser asked first (the form's confirm() runs
    under the page policy: blocked, the refund went to Stripe unasked) and nothing was
    refunded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.support.app import WEBHOOK_SECRET
    from tests.support.stripe_standin import checkout_session

    token = add_machine(api)
    link = api.payment_link("cab001", token)
    session = checkout_session(
        id="cs_asked", payment_link=link["payment_link_id"], amount_subtotal=50
    )
    assert api.webhook("checkout.session.completed", session, WEBHOOK_SECRET)[0] == 200
    base = f"http://127.0.0.1:{api.port}"
    browser.open(f"{base}/admin/login?next=/admin/machines/cab001")
    browser.driver.find_element(By.ID, "key").send_keys(ADMIN_KEY)
    browser.driver.find_element(By.ID, "login").click()
    assert browser.wait_for_text("cs_asked", timeout=30)

    browser.driver.find_element(By.CSS_SELECTOR, "button[name=refund]").click()
    asked = WebDriverWait(browser.driver, 5).until(expected_conditions.alert_is_present())
    assert "Refund 0.50 USD of cs_asked" in asked.text
    asked.dismiss()
    browser.open(f"{base}/admin/machines/cab001")
    assert browser.wait_for_text("cs_asked", timeout=30)
    assert "refunding" not in browser.text().lower()
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    status, payment = api.request("GET", "/payments?machine_id=cab001", headers=admin)
    assert status == 200 and payment["payments"][0]["amount_refunded"] == 0, payment


# --- what a form or a registration may store or echo ---------------------------------------------
def test_a_made_up_payment_id_in_a_form_is_refused_and_the_login_cookie_stays_small(api):
    """GIVEN a logged-in operator WHEN resend and refund forms are posted for a payment id of
    6,000 random letters THEN the page says it is not a payment id, the cookie that carries
    that sentence stays under the 4 KB a browser keeps (the operator stays logged in), and the
    log has no line that is not JSON (werkzeug's 'cookie is too large' warning)."""
    import secrets
    import string

    operator = Operator(api)
    operator.log_in()
    made_up = "".join(secrets.choice(string.ascii_letters) for _ in range(6000))
    for action in ("resend", "refund"):
        form = {"csrf_token": operator.csrf("/admin/payments")}
        sent = operator.send("POST", f"/admin/payments/{made_up}/{action}", form)
        assert sent.status == 302
        assert len(sent.getheader("Set-Cookie")) < 4000
        shown = operator.send("GET", "/admin/payments")
        assert shown.status == 200
        assert "That is not a payment id." in shown.text  # type: ignore[attr-defined]
        assert made_up[:50] not in shown.text  # type: ignore[attr-defined]
    for line in api.log_text().splitlines():
        assert line.startswith("{"), line[:200]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": '"><script>alert(1)</script>\u202e'}, "invalid_name"),
        ({"name": "Pac\x00Man"}, "invalid_name"),
        ({"name": "n" * 81}, "invalid_name"),
        ({"name": "   "}, "invalid_name"),
        ({"price_id": "<b>price</b>"}, "invalid_price_id"),
        ({"price_id": "price_" + "1" * 300}, "invalid_price_id"),
    ],
)
def test_a_machine_name_or_price_that_cannot_be_one_is_refused(api, body, code):
    """GIVEN the operator API WHEN a machine is registered with a name holding a NUL, a
    control or direction-changing character, or page-long, or a price id that is no Stripe id
    THEN 400 naming the field, and nothing is registered."""
    status, answer = api.request(
        "POST",
        "/machines",
        json.dumps({"machine_id": "cab009", **body}).encode(),
        {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
    )
    assert (status, answer["code"]) == (400, code)
    listed = api.request("GET", "/machines", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert listed[1]["machines"] == []


def test_the_cli_refuses_a_machine_name_that_cannot_be_one_in_one_sentence(api):
    from tests.support.api_process import flask_command

    done = flask_command(api.env, "machines", "add", "cab009", "--name", "a\x1b[2Jb")
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: name must be 1 to 80 printable characters"
    tidy = flask_command(api.env, "machines", "add", "cab010", "--name", "  Pac   Man ")
    assert tidy.returncode == 0, tidy.stderr
    assert json.loads(tidy.stdout.splitlines()[-1])["machine_id"] == "cab010"
    status, answer = api.request(
        "GET", "/machines", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert [m["name"] for m in answer["machines"]] == ["Pac Man"]


@pytest.mark.parametrize(("method", "path"), [("PUT", "/admin/login"), ("DELETE", "/admin/")])
def test_a_method_the_pages_do_not_take_is_a_405_page(api, method, path):
    answer = Operator(api).send(method, path)
    assert answer.status == 405
    assert answer.getheader("Content-Type").startswith("text/html")
    assert "GET" in answer.getheader("Allow")
    assert api.request("PUT", "/status")[1]["code"] == "method_not_allowed"  # the API: JSON
