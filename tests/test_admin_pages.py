"""The operator's pages at /admin: in a real Chromium against `python app.py`, and their
session and CSRF rules through the Flask client.

What is asserted is what a person sees (text, table rows, the chart) and what the cabinet
hears (coinpulses on a real broker). Each page's screenshot is saved under the test's tmp_path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.support.admin import csrf_of, login
from tests.support.api_process import ApiProcess, flask_command
from tests.support.app import ADMIN_KEY, TOPIC_PREFIX, WEBHOOK_SECRET, app_environment
from tests.support.browser import Browser
from tests.support.stripe_standin import checkout_session

# paho leaves the socket of a connection to a stopped or refusing broker to the collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")

FAST = {"MQTT_PUBACK_TIMEOUT": "0.5", "DELIVERY_RETRY_SECONDS": "3600"}


@pytest.fixture
def api(fresh_broker, stripe_standin, tmp_path) -> Iterator[ApiProcess]:
    # The relay waits an hour: a grant left pending stays pending until the operator acts.
    env = app_environment(fresh_broker, stripe_standin, tmp_path / "arcade.db", **FAST)
    process = ApiProcess(env, tmp_path / "api.log").start()
    yield process
    process.close()


def pay(api: ApiProcess, session_id: str, link_id: str | None, **fields):
    session = checkout_session(id=session_id, payment_link=link_id, amount_subtotal=50, **fields)
    return api.webhook("checkout.session.completed", session, WEBHOOK_SECRET)


def by_css(browser: Browser, selector: str):
    from selenium.webdriver.common.by import By

    return browser.driver.find_elements(By.CSS_SELECTOR, selector)


def log_in(browser: Browser, api: ApiProcess, key: str = ADMIN_KEY) -> None:
    by_css(browser, "#key")[0].send_keys(key)
    by_css(browser, "#login")[0].click()


def test_an_operator_logs_in_sees_the_machines_resends_a_stuck_grant_and_logs_out(
    api, browser, fresh_broker, subscribe
):
    """GIVEN a machine with a delivered payment, a grant stuck while the broker was down and a
    payment for no machine WHEN the operator uses the pages THEN each page shows them, Resend
    delivers the stuck grant to the cabinet, a form without its CSRF token is refused, and
    logging out ends the session."""
    added = flask_command(api.env, "machines", "add", "cab001", "--name", "Pac-Man")
    token = json.loads(added.stdout.splitlines()[-1])["token"]
    link = api.payment_link("cab001", token)
    assert pay(api, "cs_paid", link["payment_link_id"])[0] == 200
    fresh_broker.stop()
    assert pay(api, "cs_stuck", link["payment_link_id"])[0] == 503
    fresh_broker.start()
    assert pay(api, "cs_nobody", None, client_reference_id="ghost")[0] == 200
    pulses = subscribe(f"{TOPIC_PREFIX}/cab001/coinpulse", on=fresh_broker)
    base = f"http://127.0.0.1:{api.port}"
    shots = {}

    # Not logged in: the pages send the operator to the login form.
    browser.open(f"{base}/admin/payments")
    assert browser.wait_for_text(timeout=30, text="Admin key")
    shots["login"] = browser.screenshot("login")
    log_in(browser, api, key="not-the-key-" + "x" * 30)
    assert browser.wait_for_text(timeout=30, text="That is not the admin key.")
    log_in(browser, api)
    # After login the page asked for first.
    assert browser.wait_for_text(timeout=30, text="Payments needing attention")
    browser.open(f"{base}/admin/")
    assert browser.wait_for_text(timeout=30, text="Machines")
    [row] = by_css(browser, "#machines tbody tr")
    cells = [cell.text for cell in row.find_elements("css selector", "td")]
    assert cells[0].splitlines() == ["cab001", "Pac-Man"]
    # Credits left counts the stuck grant: it is granted, and owed to the cabinet.
    assert cells[1] == "unknown" and cells[2] == "playing" and cells[3] == "2"
    assert cells[4] == "1.00 USD"  # the stuck grant is paid money too: revenue counts it
    assert "pending delivery" in cells[5]
    shots["machines"] = browser.screenshot("machines")
    cookie = browser.driver.get_cookie("arcade_admin")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # loopback, plain http

    browser.open(f"{base}/admin/machines/cab001")
    assert browser.wait_for_text(timeout=30, text="QR code to print")
    assert by_css(browser, ".qr svg"), "the QR code is drawn on the page"
    assert link["url"] in browser.text()
    listed = [r.get_attribute("data-payment") for r in by_css(browser, "#payments tbody tr")]
    assert listed == ["cs_stuck", "cs_paid"]
    shots["machine"] = browser.screenshot("machine")

    browser.open(f"{base}/admin/payments")
    assert browser.wait_for_text(timeout=30, text="Paid, not yet delivered to the cabinet")
    pending = by_css(browser, "#pending_delivery tr[data-payment]")
    assert [r.get_attribute("data-payment") for r in pending] == ["cs_stuck"]
    unattributed = by_css(browser, "#unattributed tr[data-payment]")
    assert [r.get_attribute("data-payment") for r in unattributed] == ["cs_nobody"]
    assert "ghost" in unattributed[0].text
    shots["payments"] = browser.screenshot("payments")

    # A form stripped of its CSRF token is refused and does nothing.
    # (The script only edits the page; the click that sends it is a person's, so no script is
    # running while the browser navigates away.)
    browser.driver.execute_script(
        "document.querySelector('#pending_delivery form[action$=\"/resend\"]')"
        ".querySelector('[name=csrf_token]').remove();"
    )
    by_css(browser, "#pending_delivery button[name=resend]")[0].click()
    assert browser.wait_for_text(
        timeout=30, text="This form has expired or did not come from these pages"
    )
    shots["csrf_refused"] = browser.screenshot("csrf-refused")
    assert pulses.settle() == []

    browser.open(f"{base}/admin/payments")
    by_css(browser, "#pending_delivery button[name=resend]")[0].click()
    assert browser.wait_for_text(timeout=30, text="Coinpulse of cs_stuck sent again")
    [pulse] = pulses.wait_for(1, timeout=20)
    assert pulse.payload["paymentId"] == "cs_stuck"
    assert by_css(browser, "#pending_delivery tr[data-payment]") == []
    shots["resent"] = browser.screenshot("resent")

    # A credit by hand, from the form on the same page.
    by_css(browser, "#grant input[name=reason]")[0].send_keys("coin mechanism jammed")
    by_css(browser, "#grant button[name=grant]")[0].click()
    assert browser.wait_for_text(timeout=30, text="1 credit sent to cab001.")
    manual = pulses.wait_for(2, timeout=20)[1]
    assert manual.payload["paymentId"].startswith("manual_")

    browser.open(f"{base}/admin/revenue")
    assert browser.wait_for_text(timeout=30, text="Net per day, USD")
    bars = by_css(browser, "svg.chart rect")
    assert len(bars) == 30
    assert "0.50 USD" in bars[-1].get_attribute("innerHTML") or any(
        "1.00 USD" in bar.get_attribute("innerHTML") for bar in bars
    )
    [today] = by_css(browser, "#by-day tbody tr")
    assert today.text.split()[1:] == ["1.00", "USD", "0.00", "USD", "1.00", "USD", "2"]
    shots["revenue"] = browser.screenshot("revenue")

    # Readable on a phone: nothing wider than the screen but the tables' own scrolling.
    browser.phone()
    for page in ("/admin/", "/admin/payments", "/admin/machines/cab001", "/admin/revenue"):
        browser.open(base + page)
        overflow = browser.driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, page
        shots[f"phone{page}"] = browser.screenshot("phone-" + page)
    browser.desktop()

    by_css(browser, "#logout")[0].click()
    assert browser.wait_for_text(timeout=30, text="Logged out.")
    browser.open(f"{base}/admin/")
    assert browser.wait_for_text(timeout=30, text="Admin key")
    assert all(path.stat().st_size > 1000 for path in shots.values())
    print("screenshots:", {name: str(path) for name, path in shots.items()})


# --- the session's and the forms' rules, through the Flask client ---------------------------
def test_login_without_its_csrf_token_is_refused(client):
    """GIVEN the right key but no CSRF token WHEN posted to the login form THEN 403 and no
    session."""
    answer = client.post("/admin/login", data={"key": ADMIN_KEY})

    assert answer.status_code == 403
    assert b"did not come from these pages" in answer.data
    assert client.get("/admin/").status_code == 302


def test_the_cookie_is_secure_unless_the_host_is_loopback(client):
    """GIVEN a login through a public host name WHEN the session cookie is set THEN it is
    Secure, HttpOnly and SameSite=Strict; on 127.0.0.1 it is not Secure."""
    public = login(client, base_url="https://pay.example.com")
    local = login(client.application.test_client())

    cookie = public.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in local.headers["Set-Cookie"]


def test_a_new_admin_key_signs_every_operator_out(make_app):
    """GIVEN a session made with one key WHEN the app restarts with another THEN the old
    cookie opens nothing."""
    first = make_app().test_client()
    assert login(first).status_code == 302
    cookie = first.get_cookie("arcade_admin")
    second = make_app(ADMIN_API_KEY="another-admin-key-0123456789abcdefgh").test_client()
    second.set_cookie("arcade_admin", cookie.value)

    assert second.get("/admin/").status_code == 302
    assert first.get("/admin/").status_code == 200


def test_the_pages_say_when_admin_is_off(make_app):
    """GIVEN no ADMIN_API_KEY WHEN /admin is opened THEN 503 and a sentence naming it."""
    answer = make_app(ADMIN_API_KEY="").test_client().get("/admin/login")

    assert answer.status_code == 503
    assert b"ADMIN_API_KEY" in answer.data and b"Traceback" not in answer.data


def test_errors_read_as_sentences(client, app):
    """GIVEN a logged-in operator WHEN a page cannot be served (unknown machine, store down)
    THEN a page with a sentence, never a trace."""
    login(client)
    unknown = client.get("/admin/machines/ghost")
    bad_id = client.get("/admin/machines/a%20b")

    assert unknown.status_code == 404 and b"there is no machine ghost" in unknown.data
    assert bad_id.status_code == 400 and b"machine_id must be" in bad_id.data
    app.extensions["arcade"].store.path = "/nonexistent/dir/arcade.db"
    app.extensions["arcade"].store.close()
    down = client.get("/admin/")
    assert down.status_code == 503 and b"cannot open the SQLite store" in down.data


def test_a_form_cannot_send_the_operator_elsewhere(client, cabinet):
    """GIVEN a form whose `next` names another site WHEN it is submitted THEN the operator
    stays on these pages."""
    login(client)
    token = csrf_of(client.get("/admin/payments").data)

    answer = client.post(
        "/admin/credits",
        data={
            "csrf_token": token,
            "machine_id": "cab001",
            "credits": "1",
            "reason": "x",
            "next": "//evil.example.com/admin/",
        },
    )

    assert answer.status_code == 302
    assert answer.headers["Location"] == "/admin/payments"


# --- the same pages through Lambda -------------------------------------------------------------
def _set_cookie(answer: dict) -> str:
    """Return the admin cookie a Lambda answer sets (v2: its own list; v1: the headers)."""
    found = [*answer.get("cookies", [])]
    for name, values in (answer.get("multiValueHeaders") or {}).items():
        if name.lower() == "set-cookie":
            found += values
    for name, value in (answer.get("headers") or {}).items():
        if name.lower() == "set-cookie":
            found.append(value)
    # A v1 answer may carry the same header in both maps.
    [cookie] = {c for c in found if c.startswith("arcade_admin=")}
    return cookie


@pytest.mark.parametrize("shape", ["function_url", "base_path"])
def test_the_pages_work_the_same_through_lambda(
    make_app, moto_endpoint, dynamodb_table, monkeypatch, shape
):
    """GIVEN the app as Lambda serves it (function URL, or a REST API behind the base path
    /pay) WHEN an operator logs in through the form THEN the cookie is Secure, links carry the
    base path, and the machines page opens with that cookie."""
    from urllib.parse import urlencode

    from arcade.lambda_adapter import handle
    from tests.support.lambda_events import make_v1_event, make_v2_event

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    app = make_app(
        AWS_LAMBDA_FUNCTION_NAME="arcade-pay", DATABASE_URL=f"dynamodb://{dynamodb_table}"
    )
    app.extensions["arcade"].store.create_table()
    prefix = "/pay" if shape == "base_path" else ""

    def call(method: str, path: str, *, body: bytes = b"", cookie: str | None = None) -> dict:
        headers = [("Content-Type", "application/x-www-form-urlencoded")] if body else []
        if cookie:
            headers.append(("Cookie", cookie))
        if shape == "function_url":
            made = make_v2_event(
                method=method, path=path, body=body, headers=headers, function_url=True
            )
        else:
            made = make_v1_event(
                method=method,
                path=path,
                body=body,
                headers=headers,
                custom_domain="pay.example.com",
                base_path="/pay",
            )
        return handle(app, made, None)

    form = call("GET", "/admin/login")
    page = form["body"].encode()
    assert form["statusCode"] == 200
    assert f'action="{prefix}/admin/login"'.encode() in page
    first = _set_cookie(form).split(";")[0]
    login_body = urlencode({"key": ADMIN_KEY, "csrf_token": csrf_of(page)}).encode()

    logged_in = call("POST", "/admin/login", body=login_body, cookie=first)

    assert logged_in["statusCode"] == 302, logged_in.get("body")
    cookie = _set_cookie(logged_in)
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    machines = call("GET", "/admin/", cookie=cookie.split(";")[0])
    assert machines["statusCode"] == 200
    assert b"No machine is registered yet" in machines["body"].encode()
    assert f'href="{prefix}/admin/payments"'.encode() in machines["body"].encode()


def test_a_refund_form_sent_twice_refunds_once_even_after_stripe_confirmed(
    client, app, open_shop, stripe_standin
):
    """GIVEN the payments page WHEN its refund form for 20 cents is sent, Stripe's
    charge.refunded is recorded, and the same form is sent again (a double click, a reload)
    THEN Stripe refunded once."""
    from tests.support.app import DEFAULT_PRICE, signed_post
    from tests.support.stripe_standin import charge, checkout_session, event

    shop = open_shop(app)
    stripe_standin.add_session(
        checkout_session(id="cs_twice", payment_intent="pi_cs_twice", amount_subtotal=50),
        [(DEFAULT_PRICE, 1)],
    )
    assert shop.pay("cs_twice").status_code == 200
    login(client)
    page = client.get("/admin/machines/cab001").data
    key = re.search(
        rb'name="idempotency_key" value="([0-9a-f]+)">\s*<input type="text" inputmode="decimal"',
        page,
    )
    assert key, page[-3000:]
    form = {"csrf_token": csrf_of(page), "amount": "0.20", "idempotency_key": key.group(1).decode()}

    first = client.post("/admin/payments/cs_twice/refund", data=form)
    refunded = event(
        "charge.refunded", charge(payment_intent="pi_cs_twice", amount=50, amount_refunded=20)
    )
    assert signed_post(client, refunded).status_code == 200
    second = client.post("/admin/payments/cs_twice/refund", data=form, follow_redirects=True)

    assert first.status_code == 302
    assert b"Stripe is refunding 0.20 USD of cs_twice" in second.data
    assert [r["amount"] for r in stripe_standin.refunds] == [20]


def test_unknown_pages_and_machines_are_404_pages_and_nothing_is_cached(client, register):
    """GIVEN a logged-in operator WHEN an unknown page, or a new token for an unknown machine,
    is asked THEN a 404 page in words; every page says no-store."""
    login(client)
    token = csrf_of(client.get("/admin/").data)

    unknown = client.get("/admin/nowhere")
    rotate = client.post("/admin/machines/ghost/rotate-token", data={"csrf_token": token})
    register("cab001")
    made = client.post("/admin/machines/cab001/rotate-token", data={"csrf_token": token})

    assert unknown.status_code == 404 and b"there is no such page" in unknown.data
    assert rotate.status_code == 404 and b"ghost is not registered" in rotate.data
    assert made.status_code == 200 and b"mt_" in made.data
    assert made.headers["Cache-Control"] == "no-store"
    assert client.get("/admin/").headers["Cache-Control"] == "no-store"


def test_a_login_over_plain_http_away_from_loopback_says_why_it_fails(client):
    """GIVEN the pages opened over http on a LAN name (the Secure cookie is not kept) WHEN the
    login form is sent without a cookie THEN the refusal says to use HTTPS or 127.0.0.1."""
    lan = {"base_url": "http://cabinet-lan.test:5000"}
    token = csrf_of(client.get("/admin/login", **lan).data)
    client.delete_cookie("arcade_admin", domain="cabinet-lan.test")

    answer = client.post("/admin/login", data={"key": ADMIN_KEY, "csrf_token": token}, **lan)

    assert answer.status_code == 403
    assert b"over plain http on cabinet-lan.test" in answer.data


@pytest.mark.parametrize(
    ("typed", "currency", "cents"),
    [
        ("1.5", "usd", 150),
        ("1,50", "eur", 150),
        ("2", "usd", 200),
        ("0.05", "usd", 5),
        ("300", "jpy", 300),
        ("1.5", "jpy", None),
        ("1.505", "usd", None),
        ("-1", "usd", None),
        ("abc", "usd", None),
        ("²", "usd", None),
        ("1.5", "bhd", 1500),
        ("1.234", "kwd", 1234),
        ("1.2345", "jod", None),
    ],
)
def test_refund_amounts_are_typed_in_the_currency_not_in_cents(typed, currency, cents):
    """GIVEN what an operator types in the refund box WHEN read THEN the amount in the
    currency's smallest unit, or None for anything that is not an amount."""
    from arcade.operators import from_major

    assert from_major(typed, currency) == cents


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (150, "usd", "1.50 USD"),
        (-5, "eur", "-0.05 EUR"),
        (300, "jpy", "300 JPY"),
        (1000, "bhd", "1.000 BHD"),
        (1234, "kwd", "1.234 KWD"),
    ],
)
def test_amounts_are_shown_with_the_currencys_own_decimals(amount, currency, shown):
    """GIVEN an amount in the currency's smallest unit WHEN shown to a person THEN with as many
    decimals as the currency has: none for JPY, three for the dinars (Stripe "Currencies")."""
    from arcade.operators import money

    assert money(amount, currency) == shown


def test_a_refund_typed_wrong_is_a_sentence_and_nothing_is_refunded(
    client, app, open_shop, stripe_standin
):
    """GIVEN a payment WHEN the refund box holds 'abc' THEN a flash sentence names the
    currency and Stripe is not called."""
    shop = open_shop(app)
    assert shop.pay("cs_typo").status_code == 200
    login(client)
    token = csrf_of(client.get("/admin/payments").data)

    answer = client.post(
        "/admin/payments/cs_typo/refund",
        data={"csrf_token": token, "amount": "abc"},
        follow_redirects=True,
    )

    assert b"The amount to refund must be an amount in USD, such as 0.50." in answer.data
    assert stripe_standin.requests_to("POST", "/v1/refunds") == []


def test_the_payments_page_lists_refunds_for_payments_not_on_record(client):
    """GIVEN a refund for a PaymentIntent whose session never came WHEN the payments page is
    opened THEN it is listed in its own section."""
    from tests.support.app import signed_post
    from tests.support.stripe_standin import charge, event

    refund = event(
        "charge.refunded", charge(payment_intent="pi_ghost", amount=50, amount_refunded=50)
    )
    assert signed_post(client, refund).status_code == 200
    login(client)

    page = client.get("/admin/payments").data

    assert b'data-intent="pi_ghost"' in page
    assert b"Refunds or disputes for a payment not on record" in page
