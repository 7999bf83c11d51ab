"""The player's page, ``GET /play/<machine_id>``: what a cabinet's QR code opens.

It is drawn by the app with no login and no script, lists the machine's bundles with their
prices (each a link to its own Stripe Payment Link), the bonuses and the happy hour in force,
is cacheable, reads the same through Lambda, and is checked in a real headless Chromium.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.api_process import ApiProcess
from tests.support.app import ADMIN_KEY, app_environment
from tests.support.plans import TWO_BUNDLES

# paho leaves the socket of a connection to a stopped or refusing broker to the collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
PLAN = {
    **TWO_BUNDLES,
    # In force all week, all day: the page must say so whenever the test runs.
    "happy_hours": [
        {
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "start": "00:00",
            "end": "24:00",
            "factor": 2,
        }
    ],
}


def set_up(client: Any, plan: dict[str, Any] | None = PLAN) -> None:
    assert client.post("/machines", json={"machine_id": "cab001", "name": "Pac-Man"}, headers=ADMIN)
    client.patch(
        "/machines/cab001", json={"credits_per_game": 2, "timezone": "Europe/Paris"}, headers=ADMIN
    )
    if plan is not None:
        assert client.put("/machines/cab001/plan", json=plan, headers=ADMIN).status_code == 201


def test_the_player_page_in_chromium_lists_bundles_linking_to_their_payment_links(
    fresh_broker, stripe_standin, tmp_path, browser
):
    """GIVEN a machine with a plan of two bundles, a bonus and a happy hour in force, served by
    ``python app.py`` WHEN a phone opens /play/cab001 in Chromium THEN it reads the machine's
    name, what a game costs, each bundle with its price and credits as a link to that bundle's
    own Payment Link, the bonus and the happy hour; the page has no script."""
    env = app_environment(fresh_broker, stripe_standin, tmp_path / "arcade.db")
    api = ApiProcess(env, tmp_path / "api.log").start()
    try:
        status, _ = api.request(
            "POST",
            "/machines",
            json.dumps({"machine_id": "cab001", "name": "Pac-Man"}).encode(),
            {**ADMIN, "Content-Type": "application/json"},
        )
        assert status == 201
        for method, path, body in (
            ("PATCH", "/machines/cab001", {"credits_per_game": 2, "timezone": "Europe/Paris"}),
            ("PUT", "/machines/cab001/plan", PLAN),
        ):
            status, answer = api.request(
                method,
                path,
                json.dumps(body).encode(),
                {**ADMIN, "Content-Type": "application/json"},
            )
            assert status in (200, 201), answer
        links = {link["id"]: link for link in stripe_standin.payment_links}
        assert len(links) == 2

        browser.phone()
        browser.open(f"http://127.0.0.1:{api.port}/play/cab001")
        assert browser.wait_for_text("Pac-Man")
        text = browser.text()
        from selenium.webdriver.common.by import By

        anchors = browser.driver.find_elements(By.CSS_SELECTOR, "a.offer")
        shot = browser.screenshot("player-page")
        print(f"player page screenshot: {shot}")
    finally:
        api.close()
    assert "One game costs 2 credits." in text
    assert "Happy hour now: credits ×2 until midnight!" in text
    assert "Buy 3 or more at once: +2 credits" in text
    assert "Happy hours (Europe/Paris)" in text
    offers = [(a.text.replace("\n", " "), a.get_attribute("href")) for a in anchors]
    urls = [link["url"] for link in links.values()]
    assert [o[0] for o in offers] == [
        "1 game 1 credit each 1.00 USD",
        "5 games 6 credits each 4.00 USD",
    ]
    assert sorted(o[1] for o in offers) == sorted(
        f"{url}?client_reference_id=cab001" for url in urls
    )
    assert browser.driver.find_elements(By.TAG_NAME, "script") == []
    assert shot.stat().st_size > 0


def test_the_page_is_cacheable_and_says_plainly_what_is_wrong(make_app, stripe_standin):
    """GIVEN the page WHEN it is asked again with its ETag THEN 304; an unknown machine and an
    offline machine get a page that says so, never a JSON error or a 500."""
    app = make_app()
    client = app.test_client()
    set_up(client)
    first = client.get("/play/cab001")
    assert first.status_code == 200 and first.mimetype == "text/html"
    assert first.headers["Cache-Control"] == "public, max-age=60"
    assert b"<script" not in first.data
    again = client.get("/play/cab001", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    missing = client.get("/play/cab999")
    assert missing.status_code == 404 and b"No such machine" in missing.data
    bad = client.get("/play/bad%20id")
    assert bad.status_code == 400 and bad.mimetype == "text/html"
    assert "does not name a machine" in bad.data.decode()
    # A cabinet that said its MQTT is down cannot take money: no link is shown.
    token = app.extensions["arcade"].registry.rotate_token("cab001")
    client.post(
        "/machines/cab001/heartbeat",
        json={"mqtt_connected": False},
        headers={"Authorization": f"Bearer {token}"},
    )
    offline = client.get("/play/cab001")
    assert offline.status_code == 503 and b"Out of order" in offline.data
    assert b"buy.stripe.com" not in offline.data
    qr = client.get("/play/cab001/qr.svg")
    assert qr.status_code == 200 and qr.mimetype == "image/svg+xml"


def test_the_page_escapes_names_and_shows_the_happy_hour_in_force(make_app, stripe_standin):
    """GIVEN a plan whose bundle name carries HTML, a happy hour on another day (x2) and one
    all of today in the machine's zone (+5) WHEN the page is opened THEN the name reads as
    text, never as markup, the banner names today's happy hour, and a window that runs to the
    end of the day ends "at midnight", not at 24:00."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    today = datetime.now(ZoneInfo("Europe/Paris")).weekday()
    plan = {
        "bundles": [
            {"name": "<b>Big</b> & co", "credits": 3, "amount": 200, "currency": "usd"},
        ],
        "happy_hours": [
            {"days": [days[(today + 3) % 7]], "start": "00:00", "end": "24:00", "factor": 2},
            {"days": [days[today]], "start": "00:00", "end": "24:00", "extra": 5},
        ],
    }
    client = make_app().test_client()
    set_up(client, plan=plan)

    page = client.get("/play/cab001").data.decode()

    assert "&lt;b&gt;Big&lt;/b&gt; &amp; co" in page and "<b>Big</b>" not in page
    assert "Happy hour now: +5 credits until midnight!" in page


def test_a_machine_without_a_plan_offers_its_single_price(make_app, stripe_standin):
    """GIVEN a machine with no plan (and no default plan) WHEN its page is opened THEN it offers
    the single-price link of today's flow, the same link /create-payment-link answers."""
    app = make_app()
    client = app.test_client()
    set_up(client, plan=None)
    page = client.get("/play/cab001").data.decode()
    token = app.extensions["arcade"].registry.rotate_token("cab001")
    link = client.post(
        "/create-payment-link",
        json={"machine_id": "cab001"},
        headers={"Authorization": f"Bearer {token}"},
    ).json
    assert link["url"] in page and "0.50 USD" in page
    assert len(stripe_standin.payment_links) == 1


def test_a_bundle_whose_link_stripe_cannot_make_is_shown_as_not_available(make_app, stripe_standin):
    """GIVEN a plan whose links were not made (Stripe failed) WHEN the page is opened while
    Stripe still fails THEN each bundle shows with its price and says it is not available,
    and the page answers 200."""
    app = make_app()
    client = app.test_client()
    set_up(client, plan=None)
    stripe_standin.fail_next(500, count=20, path="POST /v1/payment_links")
    saved = client.put("/machines/cab001/plan", json=PLAN, headers=ADMIN).json
    assert len(saved["links"]["problems"]) == 2
    page = client.get("/play/cab001")
    assert page.status_code == 200
    assert page.data.decode().count("not available right now") == 2
    assert "4.00 USD" in page.data.decode()


def test_the_page_reads_the_same_through_lambda(
    make_app, moto_endpoint, dynamodb_table, monkeypatch
):
    """GIVEN the Lambda app on DynamoDB WHEN a function URL event asks for /play/cab001 THEN
    the same page comes back as text, with its cache headers."""
    from arcade.lambda_adapter import handle
    from tests.support.lambda_events import make_v2_event

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    app = make_app(
        AWS_LAMBDA_FUNCTION_NAME="arcade-pay", DATABASE_URL=f"dynamodb://{dynamodb_table}"
    )
    app.extensions["arcade"].store.create_table()
    client = app.test_client()
    set_up(client)
    direct = client.get("/play/cab001")
    answer = handle(app, make_v2_event(path="/play/cab001", function_url=True), None)
    assert answer["statusCode"] == 200
    assert not answer.get("isBase64Encoded")
    assert answer["body"] == direct.data.decode()
    assert answer["headers"]["Cache-Control"] == "public, max-age=60"
