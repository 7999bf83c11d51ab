"""Settings: defaults, aliases, and each missing or malformed one reported by name, no trace."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from arcade.config import Settings
from arcade.errors import StoreError
from arcade.logs import JsonLineFormatter
from tests.support.app import ADMIN_KEY, signed_post
from tests.support.broker import free_loopback_port
from tests.support.processes import stop_process
from tests.support.stripe_standin import checkout_session, event

REPO_ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
START_TIMEOUT = 15.0


# --- reading the environment ---------------------------------------------------------------


def test_defaults():
    """GIVEN an empty environment WHEN read THEN the documented defaults."""
    settings = Settings.from_env({})

    assert settings.port == 5000
    assert settings.topic_prefix == "arcade/machine"
    assert settings.broker_port == 8883
    assert settings.broker_tls is True
    assert Path(settings.mqtt_ca_cert) == REPO_ROOT / "ca.crt"
    assert (REPO_ROOT / "app.py").is_file()  # ca.crt sits beside app.py
    assert settings.database_url == "sqlite:///arcade.db"
    assert settings.credits_per_unit == 1
    assert settings.max_quantity == 10
    assert settings.broker_host is None
    assert settings.stripe_api_key is None
    assert settings.admin_api_key is None
    assert settings.in_lambda is False
    assert settings.problems == ()


def test_missing_secrets_are_named_by_missing():
    """GIVEN no Stripe or broker settings WHEN asked what is missing THEN each by its name."""
    settings = Settings.from_env({})

    assert settings.missing("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "EMQX_BROKER_URL") == [
        "STRIPE_API_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "EMQX_BROKER_URL",
    ]


def test_every_setting_is_read():
    """GIVEN every setting WHEN read THEN each lands where it belongs."""
    settings = Settings.from_env(
        {
            "STRIPE_API_KEY": "sk_test_x",
            "STRIPE_WEBHOOK_SECRET": "whsec_x",
            "STRIPE_PRICE_ID": "price_x",
            "STRIPE_API_BASE": "http://127.0.0.1:12111",
            "EMQX_BROKER_URL": "broker.example.com",
            "EMQX_PORT": "8884",
            "MQTT_USERNAME": "user",
            "MQTT_PASSWORD": "pass",
            "MQTT_CA_CERT": "/etc/ssl/emqx.pem",
            "MQTT_TOPIC_PREFIX": "/shop/cabinets/",
            "DATABASE_URL": "dynamodb://arcade-table",
            "ADMIN_API_KEY": "admin-" + "k" * 32,
            "CREDITS_PER_UNIT": "3",
            "MAX_QUANTITY": "20",
            "PORT": "8080",
        }
    )

    assert settings.stripe_api_key == "sk_test_x"
    assert settings.stripe_webhook_secret == "whsec_x"
    assert settings.stripe_price_id == "price_x"
    assert settings.stripe_api_base == "http://127.0.0.1:12111"
    assert (settings.broker_host, settings.broker_port, settings.broker_tls) == (
        "broker.example.com",
        8884,
        True,
    )
    assert (settings.mqtt_username, settings.mqtt_password) == ("user", "pass")
    assert settings.mqtt_ca_cert == "/etc/ssl/emqx.pem"
    assert settings.topic_prefix == "shop/cabinets"
    assert settings.database_url == "dynamodb://arcade-table"
    assert settings.admin_api_key == "admin-" + "k" * 32
    assert (settings.credits_per_unit, settings.max_quantity, settings.port) == (3, 20, 8080)
    assert settings.problems == ()


def test_secrets_stay_out_of_the_settings_repr():
    """GIVEN a broker password and admin key WHEN the settings are printed THEN neither shows."""
    settings = Settings.from_env({"MQTT_PASSWORD": "pw-secret-1", "ADMIN_API_KEY": "adm-secret-2"})

    assert "pw-secret-1" not in repr(settings)
    assert "adm-secret-2" not in repr(settings)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"PRICE_ID": "price_alias"}, {"stripe_price_id": "price_alias"}),
        ({"MQTT_BROKER": "alias.example.com"}, {"broker_host": "alias.example.com"}),
        ({"MQTT_PORT": "1884"}, {"broker_port": 1884}),
        (
            {"STRIPE_PRICE_ID": "price_main", "PRICE_ID": "price_alias"},
            {"stripe_price_id": "price_main"},
        ),
        (
            {"EMQX_BROKER_URL": "main.example.com", "MQTT_BROKER": "alias.example.com"},
            {"broker_host": "main.example.com"},
        ),
        ({"EMQX_PORT": "8885", "MQTT_PORT": "1884"}, {"broker_port": 8885}),
    ],
    ids=["PRICE_ID", "MQTT_BROKER", "MQTT_PORT", "price-main-wins", "broker-main-wins", "port"],
)
def test_aliases_are_accepted_and_the_main_name_wins(environ, expected):
    """GIVEN an alias (and maybe the main name) WHEN read THEN the alias counts, the main wins."""
    settings = Settings.from_env(environ)

    assert {name: getattr(settings, name) for name in expected} == expected
    assert settings.problems == ()


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("mqtts://host.example.com:1234", "host.example.com", 1234, True),
        ("mqtt://localhost:1883", "localhost", 1883, False),
        ("mqtt://127.0.0.2:1883", "127.0.0.2", 1883, False),
        ("mqtt://[::1]:1883", "::1", 1883, False),
        ("mqtts://host.example.com", "host.example.com", 8883, True),
        ("host.example.com", "host.example.com", 8883, True),
        # No port in the URL: the transport's standard one, not the TLS port for plain text.
        ("mqtt://localhost", "localhost", 1883, False),
        ("mqtt://[::1]", "::1", 1883, False),
    ],
)
def test_the_broker_url_sets_host_port_and_tls(url, host, port, tls):
    """GIVEN EMQX_BROKER_URL as a URL or a host WHEN read THEN host, port and TLS follow it."""
    settings = Settings.from_env({"EMQX_BROKER_URL": url})

    assert (settings.broker_host, settings.broker_port, settings.broker_tls) == (host, port, tls)
    assert settings.problems == ()


@pytest.mark.parametrize(
    ("env", "port"),
    [
        ({"EMQX_BROKER_URL": "localhost", "MQTT_TLS": "false"}, 8883),
        ({"EMQX_BROKER_URL": "localhost", "MQTT_TLS": "false", "EMQX_PORT": "11883"}, 11883),
        ({"EMQX_BROKER_URL": "mqtt://localhost", "EMQX_PORT": "11883"}, 11883),
        ({"EMQX_BROKER_URL": "mqtts://b.example.com", "EMQX_PORT": "8884"}, 8884),
        ({"EMQX_BROKER_URL": "mqtts://b.example.com:8885", "EMQX_PORT": "8884"}, 8885),
    ],
)
def test_the_broker_port_is_the_urls_else_emqx_port_else_the_transports_own(env, port):
    """GIVEN a broker address without a port WHEN read THEN EMQX_PORT when given, else 1883
    for an mqtt:// URL (a plain-text client on 8883 only ever timed out) and 8883 otherwise,
    as SPEC's settings table says; a port in the URL wins over EMQX_PORT."""
    settings = Settings.from_env(env)

    assert settings.broker_port == port
    assert settings.problems == ()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"EMQX_BROKER_URL": "mqtt://broker.example.com:1883"}, "MQTT_ALLOW_PLAINTEXT"),
        ({"EMQX_BROKER_URL": "broker.example.com", "MQTT_TLS": "false"}, "MQTT_ALLOW_PLAINTEXT"),
        ({"EMQX_BROKER_URL": "mqtt://10.0.0.5:1883"}, "MQTT_ALLOW_PLAINTEXT"),
        ({"EMQX_BROKER_URL": "mqtt://localhost.example.com"}, "MQTT_ALLOW_PLAINTEXT"),
        ({"EMQX_BROKER_URL": "mqtt://broker.example.com", "MQTT_TLS": "true"}, "MQTT_TLS=true"),
        ({"EMQX_BROKER_URL": "mqtts://broker.example.com", "MQTT_TLS": "false"}, "MQTT_TLS=false"),
        (
            {
                "EMQX_BROKER_URL": "mqtt://localhost:1883",
                "MQTT_ALLOW_PLAINTEXT": "true",
                "AWS_LAMBDA_FUNCTION_NAME": "arcade-pay",
                "DATABASE_URL": "dynamodb://t",
            },
            "refused in Lambda",
        ),
    ],
    ids=[
        "mqtt_url",
        "tls_false",
        "private_address",
        "lookalike_name",
        "mqtt_and_tls_true",
        "mqtts_and_tls_false",
        "lambda",
    ],
)
def test_plain_text_mqtt_across_a_network_is_refused_by_name(env, named):
    """GIVEN settings that would send the broker password in clear WHEN read THEN the problem
    names them, and publishing is refused with the same sentence."""
    settings = Settings.from_env(env)

    assert settings.broker_refused is not None and named in settings.broker_refused
    assert settings.broker_refused in settings.problems
    from arcade.errors import SettingsError
    from arcade.mqtt import Publisher

    with pytest.raises(SettingsError, match="MQTT"):
        Publisher(settings).publish("t", {}, log_ids={})


def test_plain_text_mqtt_to_another_machine_may_be_allowed_on_purpose():
    settings = Settings.from_env(
        {"EMQX_BROKER_URL": "mqtt://broker.lan:1883", "MQTT_ALLOW_PLAINTEXT": "true"}
    )

    assert (settings.broker_refused, settings.problems) == (None, ())


def test_the_settings_repr_holds_no_secret():
    settings = Settings.from_env(
        {
            "STRIPE_API_KEY": "sk_test_secretvalue",
            "STRIPE_WEBHOOK_SECRET": "whsec_secretvalue",
            "MQTT_PASSWORD": "mqtt-secret",
            "ADMIN_API_KEY": "admin-secret-" + "x" * 30,
        }
    )

    shown = repr(settings)
    assert not any(s in shown for s in ("secretvalue", "mqtt-secret", "admin-secret"))


def test_mqtt_tls_false_turns_tls_off_for_a_plain_local_broker():
    """GIVEN MQTT_TLS=false WHEN read THEN TLS is off."""
    assert Settings.from_env({"EMQX_BROKER_URL": "localhost", "MQTT_TLS": "false"}).broker_tls is (
        False
    )


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"EMQX_PORT": "abc"}, "EMQX_PORT"),
        ({"EMQX_PORT": "70000"}, "EMQX_PORT"),
        ({"MAX_QUANTITY": "0"}, "MAX_QUANTITY"),
        ({"MAX_QUANTITY": "ten"}, "MAX_QUANTITY"),
        ({"CREDITS_PER_UNIT": "-1"}, "CREDITS_PER_UNIT"),
        ({"PORT": "http"}, "PORT"),
        ({"MQTT_TLS": "maybe"}, "MQTT_TLS"),
        ({"DATABASE_URL": "postgres://x"}, "DATABASE_URL"),
        ({"STRIPE_WEBHOOK_SECRET": "abc"}, "STRIPE_WEBHOOK_SECRET"),
        ({"STRIPE_API_BASE": "ftp://stripe"}, "STRIPE_API_BASE"),
        ({"EMQX_BROKER_URL": "http://broker:1883"}, "EMQX_BROKER_URL"),
        ({"EMQX_BROKER_URL": "mqtts://broker:port"}, "EMQX_BROKER_URL"),
    ],
    ids=lambda value: (
        "-".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else value
    ),
)
def test_a_malformed_setting_is_a_problem_named_after_it(environ, name):
    """GIVEN one malformed setting WHEN read THEN one problem that names it in plain words."""
    settings = Settings.from_env(environ)

    [problem] = settings.problems
    assert name in problem
    assert "Traceback" not in problem and "Error" not in problem


def test_a_malformed_secret_is_not_echoed_in_the_problem():
    """GIVEN a webhook secret without whsec_ WHEN read THEN the problem does not repeat it."""
    settings = Settings.from_env({"STRIPE_WEBHOOK_SECRET": "sk_live_pasted_by_mistake"})

    [problem] = settings.problems
    assert "sk_live_pasted_by_mistake" not in problem
    assert settings.stripe_webhook_secret is None


def test_lambda_refuses_a_sqlite_store_by_name():
    """GIVEN AWS_LAMBDA_FUNCTION_NAME WHEN the store is sqlite (even by default) THEN a problem."""
    explicit = Settings.from_env(
        {"AWS_LAMBDA_FUNCTION_NAME": "arcade", "DATABASE_URL": "sqlite:////tmp/arcade.db"}
    )
    default = Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "arcade"})
    dynamo = Settings.from_env(
        {"AWS_LAMBDA_FUNCTION_NAME": "arcade", "DATABASE_URL": "dynamodb://arcade"}
    )

    assert explicit.in_lambda
    assert any("DATABASE_URL" in problem for problem in explicit.problems)
    assert any("DATABASE_URL" in problem for problem in default.problems)
    assert dynamo.problems == ()


# --- the app tells the operator --------------------------------------------------------------


def test_in_lambda_the_sqlite_store_refuses_every_use(make_app):
    """GIVEN Lambda and a sqlite: store WHEN the app uses it THEN 503 naming DATABASE_URL."""
    app = make_app(AWS_LAMBDA_FUNCTION_NAME="arcade-pay")

    with pytest.raises(StoreError, match="DATABASE_URL"):
        app.extensions["arcade"].store.get_machine("x")
    answer = app.test_client().get("/machines/x", headers=ADMIN)
    status = app.test_client().get("/status")

    assert answer.status_code == 503
    assert set(answer.json) == {"error", "code"}
    assert "DATABASE_URL" in answer.json["error"]
    assert any("DATABASE_URL" in problem for problem in status.json["problems"])


def test_status_is_up_and_needs_no_credentials(client, stripe_standin):
    """GIVEN a configured app WHEN /status is read without credentials THEN up, no problems."""
    answer = client.get("/status")

    assert answer.status_code == 200
    assert answer.json["status"] == "up"
    assert answer.json["message"] == "API is running"
    assert answer.json["problems"] == []
    assert stripe_standin.requests == []


def test_status_names_missing_settings(make_app, stripe_standin):
    """GIVEN no Stripe keys and no broker WHEN /status is read THEN 200 naming each one."""
    client = make_app(STRIPE_API_KEY="", STRIPE_WEBHOOK_SECRET="", EMQX_BROKER_URL="").test_client()

    answer = client.get("/status")

    assert answer.status_code == 200
    assert answer.json["status"] == "up"
    problems = " | ".join(answer.json["problems"])
    for name in ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "EMQX_BROKER_URL"):
        assert name in problems
    assert stripe_standin.requests == []


def test_status_tells_a_refused_stripe_setting_from_a_missing_one(make_app, stripe_standin):
    """GIVEN a publishable STRIPE_API_KEY (given, but refused), a bare whsec_ and no price
    WHEN /status is read THEN the key and the secret are "refused" and the price "missing",
    each named among the problems (a refused key showed as "missing", though it was set)."""
    client = make_app(
        STRIPE_API_KEY="pk_test_51Habc", STRIPE_WEBHOOK_SECRET="whsec_", STRIPE_PRICE_ID=""
    ).test_client()

    answer = client.get("/status").json

    assert answer["stripe"] == {
        "api_key": "refused",
        "webhook_secret": "refused",
        "default_price": "missing",
    }
    problems = " | ".join(answer["problems"])
    assert "STRIPE_API_KEY" in problems and "STRIPE_WEBHOOK_SECRET" in problems
    assert "pk_test_51Habc" not in json.dumps(answer)
    assert stripe_standin.requests == []


def test_status_names_a_missing_default_price_and_admin_key(make_app, stripe_standin):
    """GIVEN no STRIPE_PRICE_ID and no ADMIN_API_KEY WHEN /status is read THEN both are named
    among the problems, each saying what stops."""
    client = make_app(STRIPE_PRICE_ID="", ADMIN_API_KEY="").test_client()

    problems = client.get("/status").json["problems"]

    assert any(p.startswith("STRIPE_PRICE_ID not set") for p in problems), problems
    assert "ADMIN_API_KEY not set: admin endpoints are off" in problems
    assert stripe_standin.requests == []


def test_status_names_a_short_admin_key_once(make_app):
    """GIVEN an ADMIN_API_KEY under 32 characters WHEN /status is read THEN it is named once, as
    too short (not also as missing)."""
    client = make_app(ADMIN_API_KEY="short").test_client()

    problems = client.get("/status").json["problems"]

    assert [p for p in problems if "ADMIN_API_KEY" in p] == [
        "ADMIN_API_KEY must be at least 32 characters: admin endpoints are off"
    ]


def test_status_points_to_the_live_check(client):
    """GIVEN the API WHEN /status is read THEN it says where the live probe is."""
    assert client.get("/status").json["live_check"] == "/status/ready"


def test_status_reports_no_publish_before_the_first(client):
    """GIVEN a configured app that published nothing yet WHEN /status is read THEN the broker
    is ready as far as anyone knows, and says no publish was seen."""
    broker = client.get("/status").json["broker"]

    assert broker["ready"] is True
    assert broker["last_publish"] == "none yet"


def test_status_reports_a_failed_publish_without_asking_the_broker(
    make_app, open_shop, stripe_standin
):
    """GIVEN a broker nobody listens on WHEN a paid webhook could not publish its coinpulse THEN
    /status, still without a network call, says the broker is not ready and why."""
    shop = open_shop(make_app(EMQX_BROKER_URL="mqtts://localhost:1"))
    assert shop.pay("cs_status_broker_down").status_code == 503
    stripe_standin.reset_requests()

    started = time.monotonic()
    answer = shop.client.get("/status").json

    assert time.monotonic() - started < 1.0
    assert stripe_standin.requests == []
    assert answer["status"] == "up" and answer["message"] == "API is running"
    assert answer["broker"]["ready"] is False
    assert answer["broker"]["last_publish"] == "failed: the broker cannot be reached"
    assert (
        "the last publish to the broker failed: the broker cannot be reached"
        in (answer["problems"])
    )


def test_status_reports_a_good_publish(client, open_shop, app):
    """GIVEN the real broker WHEN a paid webhook published its coinpulse THEN /status says the
    last publish was ok and lists no problem."""
    shop = open_shop(app)
    assert shop.pay("cs_status_broker_up").status_code == 200

    answer = client.get("/status").json

    assert answer["broker"]["last_publish"] == "ok"
    assert answer["broker"]["ready"] is True
    assert answer["problems"] == []


def test_status_says_not_ready_for_a_plain_text_broker_elsewhere(make_app):
    """GIVEN mqtt:// to another machine (refused by name) WHEN /status is read THEN the broker
    is not ready and the refusal is listed."""
    client = make_app(EMQX_BROKER_URL="mqtt://broker.example.com:1883", MQTT_TLS="").test_client()

    answer = client.get("/status").json

    assert answer["broker"]["ready"] is False
    assert any("plain-text MQTT" in p for p in answer["problems"])


def test_the_root_says_what_this_is_and_where_to_look(client, stripe_standin):
    """GIVEN the API WHEN / is read without credentials THEN 200 JSON pointing to /status, the
    operator pages and the README; no network call."""
    answer = client.get("/")

    assert answer.status_code == 200
    assert answer.json == {
        "service": "Arcade Pay",
        "status": "/status",
        "admin": "/admin",
        "docs": "README.md",
    }
    assert stripe_standin.requests == []


def test_status_names_malformed_settings(make_app):
    """GIVEN MAX_QUANTITY=0 and MQTT_TLS=maybe WHEN /status is read THEN both named."""
    client = make_app(MAX_QUANTITY="0", MQTT_TLS="maybe").test_client()

    problems = " | ".join(client.get("/status").json["problems"])

    assert "MAX_QUANTITY" in problems and "MQTT_TLS" in problems


def test_status_never_shows_a_secret(client, stripe_standin, broker):
    """GIVEN every secret set WHEN /status is read THEN none of them is in the answer."""
    text = client.get("/status").get_data(as_text=True)

    for secret in (stripe_standin.api_key, "whsec_test_arcade_secret", broker.password, ADMIN_KEY):
        assert secret not in text


def test_status_makes_no_network_call_even_with_the_broker_unreachable(make_app, stripe_standin):
    """GIVEN a broker nobody listens on WHEN /status is read THEN 200 at once, no Stripe call."""
    client = make_app(EMQX_BROKER_URL="mqtts://localhost:1").test_client()

    started = time.monotonic()
    answer = client.get("/status")

    assert answer.status_code == 200
    assert answer.json["status"] == "up"
    assert time.monotonic() - started < 1.0
    assert stripe_standin.requests == []


def test_the_repos_placeholder_ca_is_reported_by_name(make_app):
    """GIVEN the repo's ca.crt (comments only) WHEN /status is read THEN it says so by name."""
    client = make_app(MQTT_CA_CERT=str(REPO_ROOT / "ca.crt")).test_client()

    problems = client.get("/status").json["problems"]

    assert any("ca.crt holds no certificate" in problem for problem in problems)


def test_a_ca_file_of_comments_only_is_reported_by_name(make_app, tmp_path):
    """GIVEN a ca.crt holding only comments WHEN /status is read THEN it says so by name."""
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text("# The broker's CA goes here.\n")
    client = make_app(MQTT_CA_CERT=str(ca_file)).test_client()

    problems = client.get("/status").json["problems"]

    assert any("ca.crt holds no certificate" in problem for problem in problems)


def test_a_webhook_that_must_publish_with_the_placeholder_ca_is_a_503_in_words(
    make_app, client, cabinet, caplog
):
    """GIVEN the placeholder ca.crt WHEN a paid session must be published THEN 503 saying so."""
    link = client.post(
        "/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth
    ).json
    session = checkout_session(
        id="cs_test_placeholder_ca", payment_link=link["payment_link_id"], amount_subtotal=50
    )
    placeholder = make_app(MQTT_CA_CERT=str(REPO_ROOT / "ca.crt")).test_client()

    answer = signed_post(placeholder, event("checkout.session.completed", session))

    assert answer.status_code == 503
    assert set(answer.json) == {"error", "code"}
    assert "ca.crt holds no certificate" in answer.json["error"]
    log_lines = [JsonLineFormatter().format(record) for record in caplog.records]
    for text in (answer.get_data(as_text=True), *log_lines):
        assert "SSL" not in text and "Traceback" not in text
    [payment] = client.get("/machines/cab001", headers=cabinet.auth).json["payments"]
    assert payment["status"] == "pending_delivery"


# --- python app.py -----------------------------------------------------------------------------


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def test_python_app_py_reports_problems_by_name_and_serves_status(tmp_path):
    """GIVEN no Stripe key WHEN `python app.py` starts THEN it names STRIPE_API_KEY and serves."""
    port = free_loopback_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'arcade.db'}",
        # Empty values shadow a developer's .env.local.
        "STRIPE_API_KEY": "",
        "STRIPE_WEBHOOK_SECRET": "",
        "EMQX_BROKER_URL": "",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_read_lines, args=(process.stderr, lines), daemon=True).start()
        seen: list[dict] = []
        deadline = time.monotonic() + START_TIMEOUT
        while not any(entry.get("event") == "serving" for entry in seen):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"app.py exited early: {seen}"
            assert "Traceback" not in line
            with contextlib.suppress(ValueError):
                seen.append(json.loads(line))

        problems = [entry["problem"] for entry in seen if entry.get("event") == "setting_problem"]
        assert any("STRIPE_API_KEY" in problem for problem in problems)
        assert any("STRIPE_WEBHOOK_SECRET" in problem for problem in problems)
        assert any("EMQX_BROKER_URL" in problem for problem in problems)
        [serving] = [entry for entry in seen if entry.get("event") == "serving"]
        assert serving["port"] == port

        status = None
        while status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as reply:
                    status = (reply.status, json.loads(reply.read()))
            except OSError:
                assert time.monotonic() < deadline, "app.py never answered /status"
                time.sleep(0.05)
        assert status[0] == 200
        assert status[1]["status"] == "up"
        assert any("STRIPE_API_KEY" in problem for problem in status[1]["problems"])
    finally:
        stop_process(process)
        if process.stderr is not None:
            process.stderr.close()


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite:///:memory:", "sqlite:///  ", "dynamodb://"])
def test_a_store_that_would_forget_everything_at_restart_is_refused(url):
    settings = Settings.from_env({"DATABASE_URL": url})

    assert "DATABASE_URL must be sqlite:///path.db or dynamodb://TABLE" in settings.problems


def test_missing_names_every_optional_setting_and_refuses_a_typo():
    """GIVEN no settings WHEN each optional setting is asked for THEN it is named as missing;
    a name that is no setting is a ValueError, not a KeyError deep in a request."""
    from arcade.config import OPTIONAL_SETTINGS, Settings

    settings = Settings.from_env({})

    assert settings.missing(*OPTIONAL_SETTINGS) == list(OPTIONAL_SETTINGS)
    with pytest.raises(ValueError, match="STRIPE_KEY"):
        settings.missing("STRIPE_KEY")


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mqtts://user:hunter2@broker.example.com:8883", "EMQX_BROKER_URL must not hold a login"),
        ("broker.example.com:1883", "EMQX_BROKER_URL must be a host name"),
        ("broker example.com", "EMQX_BROKER_URL must be a host name"),
        ("mqtts://broker.example.com:0", "its port is not a number from 1 to 65535"),
        ("mqtts://broker.example.com/arcade?x=1", "nothing after the port"),
    ],
)
def test_a_broker_url_with_more_than_a_host_and_port_is_named_and_not_used(url, named):
    """GIVEN EMQX_BROKER_URL holding a login, a port in a bare host name, port 0 or a path
    WHEN read THEN the problem names it (never echoing the URL) and no broker is used."""
    settings = Settings.from_env({"EMQX_BROKER_URL": url})

    assert settings.broker_host is None
    assert [problem for problem in settings.problems if named in problem]
    assert not any("hunter2" in problem for problem in settings.problems)


@pytest.mark.parametrize("prefix", ["#", "arcade/+/x", "$SYS/arcade", "/"])
def test_a_topic_prefix_no_broker_takes_a_publish_on_is_named(prefix):
    settings = Settings.from_env({"MQTT_TOPIC_PREFIX": prefix})

    assert settings.topic_prefix == "arcade/machine"
    assert any(problem.startswith("MQTT_TOPIC_PREFIX must be") for problem in settings.problems)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STRIPE_API_KEY": "pk_live_publishable0123456789"}, "STRIPE_API_KEY must be a secret"),
        ({"STRIPE_API_KEY": "sk_0123456789abcdef"}, "STRIPE_API_KEY must be a secret"),
        ({"STRIPE_API_KEY": "whsec_0123456789abcdef"}, "STRIPE_API_KEY must be a secret"),
        ({"STRIPE_WEBHOOK_SECRET": "whsec_"}, "STRIPE_WEBHOOK_SECRET must start with whsec_"),
        (
            {"STRIPE_API_BASE": "http://stripe-mock.example.com:12111"},
            "STRIPE_API_BASE is http:// to another machine",
        ),
        (
            {"STRIPE_API_BASE": "http://10.0.0.8:12111", "AWS_LAMBDA_FUNCTION_NAME": "f"},
            "STRIPE_API_BASE is http:// to another machine",
        ),
        ({"STRIPE_API_BASE": "http://"}, "STRIPE_API_BASE must be an http:// or https://"),
    ],
    ids=[
        "publishable_key",
        "key_of_no_mode",
        "webhook_secret_as_key",
        "empty_webhook_secret",
        "plain_http_elsewhere",
        "plain_http_from_lambda",
        "no_host",
    ],
)
def test_a_stripe_setting_that_weakens_security_is_named_and_not_used(make_app, env, named):
    """GIVEN a Stripe key of no known mode (the livemode check would let events of either mode
    grant), a signing secret everyone knows, or an API base that sends the key in clear WHEN
    read THEN /status names it and the value is not used."""
    env = {"DATABASE_URL": "dynamodb://t", **env} if "AWS_LAMBDA_FUNCTION_NAME" in env else env
    settings = Settings.from_env(env)

    assert [p for p in settings.problems if p.startswith(named)], settings.problems
    assert settings.stripe_api_base is None or "STRIPE_API_BASE" not in env
    if "STRIPE_API_KEY" in env:
        assert settings.stripe_api_key is None
    for name in ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET"):
        assert not any(env[name] in p for p in settings.problems if len(env.get(name, "")) > 6)
    if "AWS_LAMBDA_FUNCTION_NAME" not in env:
        problems = make_app(**env).test_client().get("/status").json["problems"]
        assert [p for p in problems if p.startswith(named)]


def test_a_stripe_stand_in_on_this_machine_may_be_plain_http():
    settings = Settings.from_env(
        {"STRIPE_API_BASE": "http://localhost:12111", "STRIPE_API_KEY": "rk_test_x"}
    )

    assert (settings.stripe_api_base, settings.stripe_api_key) == (
        "http://localhost:12111",
        "rk_test_x",
    )
    assert settings.problems == ()


def test_a_refused_key_is_named_as_refused_not_as_unset_by_the_cli_and_the_api(tmp_path, make_app):
    """GIVEN a publishable STRIPE_API_KEY and a signing secret of whsec_ alone WHEN a command
    or an endpoint needs them THEN it names what is wrong with each, not "not set"."""
    from tests.support.api_process import flask_command

    done = flask_command(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'arcade.db'}",
            "STRIPE_API_KEY": "pk_live_publishable",
            "STRIPE_API_BASE": "",
        },
        "reconcile",
    )
    webhook = make_app(STRIPE_WEBHOOK_SECRET="whsec_").test_client().post("/webhook", data=b"{}")

    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "STRIPE_API_KEY must be a secret or restricted key" in done.stderr
    assert "pk_live_publishable" not in done.stderr
    assert webhook.status_code == 503
    assert webhook.json["error"].startswith("STRIPE_WEBHOOK_SECRET must start with whsec_")


def test_the_broker_settings_repr_holds_no_password_even_from_a_malformed_url():
    from arcade.common.broker import read_broker
    from arcade.common.env import EnvReader

    broker = read_broker(
        EnvReader(
            {"EMQX_BROKER_URL": "mqtts://arcade:hunter2@b.example.com", "MQTT_PASSWORD": "pw9"}
        )
    )

    assert "hunter2" not in repr(broker) and "pw9" not in repr(broker)


def test_urls_that_may_hold_a_password_stay_out_of_the_settings_repr():
    """GIVEN a DATABASE_URL pasted from another service (postgres://user:password@…) and a
    STRIPE_API_BASE with a login WHEN read THEN each is named as malformed or refused, and
    neither password is in the settings' repr (both were shown as given)."""
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgres://arcade:db-hunter2@db.example.com/arcade",
            "STRIPE_API_BASE": "https://arcade:api-hunter2@stripe-proxy.example.com",
        }
    )

    shown = repr(settings)
    assert "db-hunter2" not in shown and "api-hunter2" not in shown
    assert "DATABASE_URL must be sqlite:///path.db or dynamodb://TABLE" in settings.problems
    assert any(p.startswith("STRIPE_API_BASE must not hold a login") for p in settings.problems)
    assert not any("hunter2" in problem for problem in settings.problems)
    assert settings.stripe_api_base is None


def test_a_malformed_port_is_no_problem_in_lambda_which_listens_on_none():
    """GIVEN PORT=abc WHEN the settings are read in Lambda THEN nothing is named (no port is
    listened on there, so /status/ready must not fail on it); outside Lambda it is named."""
    in_lambda = Settings.from_env({"PORT": "abc", "AWS_LAMBDA_FUNCTION_NAME": "arcade-pay"})
    local = Settings.from_env({"PORT": "abc"})

    assert not any("PORT" in problem for problem in in_lambda.problems)
    assert any(problem.startswith("PORT") for problem in local.problems)
