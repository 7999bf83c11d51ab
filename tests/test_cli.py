"""The operator's command line: register, list, rotate and remove machines; prepare the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.app import ADMIN_KEY

REPO_ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def last_json_line(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_add_prints_the_token_as_json_and_the_token_works(runner, client, stripe_standin):
    """GIVEN an operator WHEN `machines add cab009 …` runs THEN its last line is the token JSON."""
    result = runner.invoke(
        args=["machines", "add", "cab009", "--name", "Pac", "--credits-per-unit", "3"]
    )

    assert result.exit_code == 0, result.output
    printed = last_json_line(result.output)
    assert set(printed) == {"machine_id", "token", "pulse_public_key"}
    assert printed["machine_id"] == "cab009"
    assert printed["pulse_public_key"] == client.get("/pulse-key").json["public_key"]
    state = client.get("/machines/cab009", headers=bearer(printed["token"]))
    assert state.status_code == 200
    assert state.json["machine_id"] == "cab009" and state.json["state"] == "idle"
    [listed] = client.get("/machines", headers=ADMIN).json["machines"]
    assert listed["name"] == "Pac" and listed["credits_per_unit"] == 3
    assert stripe_standin.requests == []


def test_add_token_only_prints_just_the_token_for_a_shell_to_capture(runner, client):
    """GIVEN `machines add cab010 --token-only` WHEN it runs THEN its whole output is the token,
    and that token works."""
    result = runner.invoke(args=["machines", "add", "cab010", "--token-only"])

    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert "\n" not in token and token.startswith("mt_")
    assert client.get("/machines/cab010", headers=bearer(token)).status_code == 200


def test_add_with_a_price_sells_that_price(runner, client, stripe_standin):
    """GIVEN `--price-id` WHEN the machine's link is asked THEN it sells that price."""
    stripe_standin.add_price("price_pac", 100)
    result = runner.invoke(args=["machines", "add", "cab009", "--price-id", "price_pac"])
    token = last_json_line(result.output)["token"]

    answer = client.post(
        "/create-payment-link", json={"machine_id": "cab009"}, headers=bearer(token)
    )

    assert answer.status_code == 200
    [create] = stripe_standin.requests_to("POST", "/v1/payment_links")
    assert create.params["line_items"][0]["price"] == "price_pac"


def test_adding_a_machine_twice_fails_clearly_and_keeps_the_first(runner, client):
    """GIVEN cab009 registered WHEN added again THEN a plain message, non-zero exit, token kept."""
    first = last_json_line(runner.invoke(args=["machines", "add", "cab009"]).output)

    again = runner.invoke(args=["machines", "add", "cab009"])

    assert again.exit_code != 0
    assert "cab009 is already registered" in again.output
    assert "Traceback" not in again.output
    assert client.get("/machines/cab009", headers=bearer(first["token"])).status_code == 200


@pytest.mark.parametrize("command", ["add", "rotate-token", "remove"])
@pytest.mark.parametrize("machine_id", ["a/b", "a b", "x" * 65, "#"])
def test_a_bad_machine_id_is_refused(runner, client, command, machine_id):
    """GIVEN an unsafe machine id WHEN any machine command gets it THEN it is refused."""
    result = runner.invoke(args=["machines", command, machine_id])

    assert result.exit_code != 0
    assert "letters, digits" in result.output
    assert client.get("/machines", headers=ADMIN).json["machines"] == []


@pytest.mark.parametrize("value", ["0", "1001", "two"])
def test_a_bad_credits_per_unit_is_refused(runner, client, value):
    """GIVEN --credits-per-unit out of range WHEN added THEN refused and nothing stored."""
    result = runner.invoke(args=["machines", "add", "cab009", "--credits-per-unit", value])

    assert result.exit_code != 0
    assert "credits-per-unit" in result.output
    assert client.get("/machines", headers=ADMIN).json["machines"] == []


def test_list_prints_each_machine_as_json(runner, register):
    """GIVEN two machines WHEN `machines list` runs THEN one JSON line each, no token."""
    first = register("cab001", name="Galaga")
    register("cab009")

    result = runner.invoke(args=["machines", "list"])

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert sorted(line["machine_id"] for line in lines) == ["cab001", "cab009"]
    assert next(line for line in lines if line["machine_id"] == "cab001")["name"] == "Galaga"
    assert first.token not in result.output
    assert "token" not in result.output


def test_list_with_no_machines_prints_nothing(runner):
    """GIVEN an empty store WHEN `machines list` runs THEN it succeeds and prints nothing."""
    result = runner.invoke(args=["machines", "list"])

    assert result.exit_code == 0
    assert result.output.strip() == ""


def test_rotate_token_replaces_the_token(runner, client, cabinet):
    """GIVEN cab001's token WHEN `machines rotate-token cab001` runs THEN only the new one works."""
    result = runner.invoke(args=["machines", "rotate-token", "cab001"])

    assert result.exit_code == 0, result.output
    printed = last_json_line(result.output)
    assert printed["machine_id"] == "cab001"
    assert client.get("/machines/cab001", headers=cabinet.auth).status_code == 401
    assert client.get("/machines/cab001", headers=bearer(printed["token"])).status_code == 200


@pytest.mark.parametrize("command", ["rotate-token", "remove"])
def test_an_unknown_machine_fails_clearly(runner, command):
    """GIVEN no machine ghost01 WHEN rotated or removed THEN a plain message and non-zero exit."""
    result = runner.invoke(args=["machines", command, "ghost01"])

    assert result.exit_code != 0
    assert "ghost01 is not registered" in result.output
    assert "Traceback" not in result.output


def test_remove_forgets_the_machine(runner, client, cabinet):
    """GIVEN cab001 WHEN `machines remove cab001` runs THEN it reads 404 and is not listed."""
    result = runner.invoke(args=["machines", "remove", "cab001"])

    assert result.exit_code == 0, result.output
    assert last_json_line(result.output)["machine_id"] == "cab001"
    assert client.get("/machines/cab001", headers=ADMIN).status_code == 404
    assert client.get("/machines/cab001", headers=cabinet.auth).status_code in (401, 404)
    assert client.get("/machines", headers=ADMIN).json["machines"] == []


def test_store_init_prepares_a_new_sqlite_file(make_app, tmp_path):
    """GIVEN a DATABASE_URL naming a new file WHEN `store init` runs THEN it is ready to use."""
    database = tmp_path / "fresh" / "new.db"
    database.parent.mkdir()
    app = make_app(DATABASE_URL=f"sqlite:///{database}")
    runner = app.test_cli_runner()

    result = runner.invoke(args=["store", "init"])
    again = runner.invoke(args=["store", "init"])
    added = runner.invoke(args=["machines", "add", "cab009"])

    assert result.exit_code == 0, result.output
    assert last_json_line(result.output) == {"store": "sqlite", "ready": True}
    assert again.exit_code == 0
    assert added.exit_code == 0
    assert database.is_file()


def test_the_real_flask_command_registers_a_machine(app, client, tmp_path):
    """GIVEN the installed `flask` WHEN `flask --app app machines add cab010` runs THEN JSON."""
    flask = Path(sys.executable).parent / "flask"
    database = tmp_path / "arcade.db"  # the store the test app reads
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{database}",
        # Empty values shadow a developer's .env.local: the command must not need them.
        "STRIPE_API_KEY": "",
        "STRIPE_WEBHOOK_SECRET": "",
        "EMQX_BROKER_URL": "",
    }

    completed = subprocess.run(
        [str(flask), "--app", "app", "machines", "add", "cab010"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    printed = last_json_line(completed.stdout)
    assert printed["machine_id"] == "cab010"
    assert "Traceback" not in completed.stderr
    assert client.get("/machines/cab010", headers=bearer(printed["token"])).status_code == 200


@pytest.mark.parametrize("url", ["bogus", "sqlite:////no-such-directory/arcade.db"])
@pytest.mark.parametrize("command", [["machines", "list"], ["reconcile"], ["deliveries", "retry"]])
def test_a_bad_database_url_is_one_sentence_and_exit_1(url, command, tmp_path):
    """GIVEN a malformed or unreadable DATABASE_URL WHEN an operator command runs THEN it says
    what is wrong in one line and exits 1, with no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *command],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": url, "STRIPE_API_KEY": "sk_test_x"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "DATABASE_URL" in done.stderr or "SQLite store" in done.stderr


@pytest.mark.parametrize("url", ["bogus", "sqlite:////no-such-directory/arcade.db"])
def test_python_app_py_with_a_bad_database_url_exits_1_in_one_line(url):
    done = subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": url, "PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [failed] = [line for line in done.stderr.splitlines() if '"startup_failed"' in line]
    assert "DATABASE_URL" in failed or "SQLite store" in failed


@pytest.mark.parametrize(
    ("broker", "named"),
    [
        ({"EMQX_BROKER_URL": ""}, "EMQX_BROKER_URL not set"),
        ({"EMQX_BROKER_URL": "mqtt://broker.example.com:1883"}, "plain-text MQTT"),
    ],
    ids=["no_broker", "refused_broker"],
)
def test_credits_given_by_hand_without_a_usable_broker_say_which_setting_holds_them(
    tmp_path, broker, named
):
    """GIVEN no broker set (or one refused) WHEN `flask credits grant` runs THEN the grant
    stands and stderr names the broker setting that holds its delivery (it said the broker
    "did not acknowledge yet", of a broker that was never asked)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'arcade.db'}",
        # Empty values shadow a developer's .env.local.
        "MQTT_TLS": "",
        "MQTT_ALLOW_PLAINTEXT": "",
        **broker,
    }

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert flask("machines", "add", "cab001", "--token-only").returncode == 0
    granted = flask("credits", "grant", "cab001", "2", "--reason", "coin mechanism jammed")

    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.startswith("2 credits for cab001 as manual_")
    [told] = [line for line in granted.stderr.splitlines() if line.startswith("not delivered")]
    assert named in told and "the relay delivers it" in told
