"""Who may act for a machine: its own token or the operator's key; tokens are kept hashed."""

from __future__ import annotations

import json

import pytest

from tests.support.app import ADMIN_KEY, DEFAULT_PRICE

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(answer, status: int, code: str | None = None) -> dict:
    """Check an answer is the project's error shape with this status (and code)."""
    assert answer.status_code == status, answer.get_data(as_text=True)
    body = answer.get_json()
    assert set(body) == {"error", "code"}
    assert isinstance(body["error"], str) and body["error"]
    if code is not None:
        assert body["code"] == code
    return body


CABINET_CALLS = [
    ("GET", "/machines/cab001", None),
    ("POST", "/create-payment-link", {"machine_id": "cab001"}),
    ("POST", "/gameover", {"machine_id": "cab001"}),
]


# --- cabinet calls need a token --------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), CABINET_CALLS)
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic YWRtaW46cGFzcw==", "mt_no_scheme"],
    ids=["absent", "empty", "scheme-only", "scheme-blank", "basic", "no-scheme"],
)
def test_a_cabinet_call_without_a_bearer_token_is_a_401(
    client, cabinet, stripe_standin, subscribe, method, path, body, authorization
):
    """GIVEN no usable Authorization header WHEN a cabinet call is made THEN 401, nothing done."""
    subscriber = subscribe()
    headers = {} if authorization is None else {"Authorization": authorization}

    answer = client.open(path, method=method, json=body, headers=headers)

    assert_error(answer, 401)
    assert stripe_standin.requests == []
    assert subscriber.settle(0.05) == []


@pytest.mark.parametrize(("method", "path", "body"), CABINET_CALLS)
def test_a_wrong_token_is_a_401(client, cabinet, stripe_standin, method, path, body):
    """GIVEN a made-up token WHEN a cabinet call is made THEN 401 and no Stripe call."""
    answer = client.open(path, method=method, json=body, headers=bearer("mt_made_up_token"))

    assert_error(answer, 401, "invalid_credentials")
    assert stripe_standin.requests == []


@pytest.mark.parametrize(("method", "path", "body"), CABINET_CALLS)
def test_another_machines_token_is_a_401(
    client, register, stripe_standin, subscribe, method, path, body
):
    """GIVEN cab002's token WHEN it acts for cab001 THEN 401: a token is for its own machine."""
    register("cab001")
    other = register("cab002")
    subscriber = subscribe()

    answer = client.open(path, method=method, json=body, headers=other.auth)

    assert_error(answer, 401, "invalid_credentials")
    assert stripe_standin.requests == []
    assert subscriber.settle(0.05) == []


def test_a_token_is_case_sensitive_and_must_be_whole(client, cabinet):
    """GIVEN the right token changed in case or cut short WHEN used THEN 401."""
    for token in (cabinet.token.upper(), cabinet.token[:-1], cabinet.token + "x"):
        assert_error(client.get("/machines/cab001", headers=bearer(token)), 401)


def test_the_machines_own_token_works(client, cabinet, subscribe):
    """GIVEN cab001's token WHEN cab001 reads its state, asks its link, ends a game THEN 200."""
    subscriber = subscribe("arcade/machine/cab001/gameover")

    state = client.get("/machines/cab001", headers=cabinet.auth)
    link = client.post("/create-payment-link", json={"machine_id": "cab001"}, headers=cabinet.auth)
    over = client.post("/gameover", json={"machine_id": "cab001"}, headers=cabinet.auth)

    assert state.status_code == 200 and link.status_code == 200 and over.status_code == 200
    assert len(subscriber.wait_for(1)) == 1


def test_the_scheme_is_case_insensitive(client, cabinet):
    """GIVEN 'bearer' in lower case WHEN the token is sent THEN it is accepted (RFC 6750)."""
    answer = client.get("/machines/cab001", headers={"Authorization": f"bearer {cabinet.token}"})

    assert answer.status_code == 200


def test_the_admin_key_works_for_any_machine(client, register, subscribe):
    """GIVEN two machines WHEN the operator's key acts for each THEN every call is answered."""
    register("cab001")
    register("cab002")
    subscriber = subscribe("arcade/machine/+/gameover")

    for machine_id in ("cab001", "cab002"):
        state = client.get(f"/machines/{machine_id}", headers=ADMIN)
        link = client.post("/create-payment-link", json={"machine_id": machine_id}, headers=ADMIN)
        over = client.post("/gameover", json={"machine_id": machine_id}, headers=ADMIN)
        assert state.status_code == 200 and state.json["machine_id"] == machine_id
        assert link.status_code == 200 and link.json["machine_id"] == machine_id
        assert over.status_code == 200

    topics = sorted(message.topic for message in subscriber.wait_for(2))
    assert topics == ["arcade/machine/cab001/gameover", "arcade/machine/cab002/gameover"]


# --- tokens are stored hashed, and can be replaced -------------------------------------------


def test_tokens_are_stored_hashed(app, cabinet):
    """GIVEN a registered machine WHEN its stored row is read THEN it holds no form of the token."""
    stored = app.extensions["arcade"].store.get_machine("cab001")

    assert stored.token_hash
    assert stored.token_hash != cabinet.token
    assert cabinet.token not in stored.token_hash
    assert cabinet.token.removeprefix("mt_") not in stored.token_hash
    # A record may be shown in a log line or a trace: its repr leaves the hash out.
    assert stored.token_hash not in repr(stored) and "token_hash" not in repr(stored)


def test_tokens_are_long_random_and_unique(register):
    """GIVEN two machines WHEN registered THEN each gets its own long token."""
    first, second = register("cab001"), register("cab002")

    assert first.token != second.token
    assert len(first.token) >= 32


def test_rotating_a_token_makes_the_old_one_fail(client, runner, cabinet):
    """GIVEN cab001's token WHEN the operator rotates it THEN the old fails and the new works."""
    result = runner.invoke(args=["machines", "rotate-token", "cab001"])

    assert result.exit_code == 0, result.output
    new_token = json.loads(result.output.strip().splitlines()[-1])["token"]
    assert new_token != cabinet.token
    assert_error(client.get("/machines/cab001", headers=cabinet.auth), 401)
    assert client.get("/machines/cab001", headers=bearer(new_token)).status_code == 200


# --- a machine's state -----------------------------------------------------------------------


def test_a_new_machine_reads_idle_with_nothing_on_record(client, cabinet):
    """GIVEN a machine just registered WHEN it reads its state THEN idle, zeros, no payments."""
    answer = client.get("/machines/cab001", headers=cabinet.auth)

    assert answer.status_code == 200
    assert answer.mimetype == "application/json"
    state = answer.json
    assert {"machine_id", "state", "credits", "session", "payments", "revenue"} <= set(state)
    assert state["machine_id"] == "cab001"
    assert state["state"] == "idle"
    assert state["credits"] == {"granted": 0, "used": 0, "left": 0}
    assert state["session"] is None
    assert state["payments"] == []
    assert state["revenue"] == {}


def test_a_machine_state_holds_no_secret(client, cabinet):
    """GIVEN a machine WHEN its state is read THEN neither the token nor its hash is shown."""
    text = client.get("/machines/cab001", headers=ADMIN).get_data(as_text=True)

    assert cabinet.token not in text
    assert "token" not in text


# --- the operator's HTTP endpoints -------------------------------------------------------------


def test_the_operator_registers_a_machine_and_its_token_works(client, stripe_standin):
    """GIVEN the admin key WHEN POST /machines THEN 201 with a token that works for it."""
    answer = client.post(
        "/machines",
        json={"machine_id": "cab100", "name": "Galaga", "credits_per_unit": 2},
        headers=ADMIN,
    )

    assert answer.status_code == 201
    assert set(answer.json) == {"machine_id", "token"}
    assert answer.json["machine_id"] == "cab100"
    token = answer.json["token"]
    state = client.get("/machines/cab100", headers=bearer(token))
    assert state.status_code == 200 and state.json["state"] == "idle"
    assert stripe_standin.requests == []


def test_registering_a_machine_twice_is_a_409_and_keeps_the_first_token(client, cabinet):
    """GIVEN cab001 registered WHEN registered again THEN 409 and the first token still works."""
    answer = client.post("/machines", json={"machine_id": "cab001"}, headers=ADMIN)

    body = assert_error(answer, 409, "machine_exists")
    assert "cab001" in body["error"]
    assert client.get("/machines/cab001", headers=cabinet.auth).status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"machine_id": "a/b"}, "invalid_machine_id"),
        ({"machine_id": "cab100", "credits_per_unit": 0}, "invalid_credits_per_unit"),
        ({"machine_id": "cab100", "credits_per_unit": "2"}, "invalid_credits_per_unit"),
        ({"machine_id": "cab100", "name": 5}, "invalid_name"),
        ({"machine_id": "cab100", "price_id": 5}, "invalid_price_id"),
    ],
)
def test_registering_with_bad_fields_is_a_400(client, body, code):
    """GIVEN a malformed registration WHEN posted by the operator THEN 400 and nothing stored."""
    answer = client.post("/machines", json=body, headers=ADMIN)

    assert_error(answer, 400, code)
    assert client.get("/machines", headers=ADMIN).json["machines"] == []


def test_the_operator_lists_machines(client, register):
    """GIVEN two machines WHEN the operator lists them THEN both appear, without tokens."""
    first = register("cab001", name="Pac", credits_per_unit=3)
    register("cab002", price_id=DEFAULT_PRICE)

    answer = client.get("/machines", headers=ADMIN)

    assert answer.status_code == 200
    listed = {m["machine_id"]: m for m in answer.json["machines"]}
    assert set(listed) == {"cab001", "cab002"}
    assert listed["cab001"]["name"] == "Pac"
    assert listed["cab001"]["credits_per_unit"] == 3
    assert listed["cab002"]["price_id"] == DEFAULT_PRICE
    assert first.token not in answer.get_data(as_text=True)
    assert "token" not in answer.get_data(as_text=True)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/machines", None), ("POST", "/machines", {"machine_id": "cab100"})],
)
def test_admin_endpoints_need_the_admin_key(client, cabinet, method, path, body):
    """GIVEN no key, a wrong key or a machine token WHEN an admin endpoint is called THEN 401."""
    for headers in ({}, bearer("not-the-admin-key"), cabinet.auth):
        assert_error(client.open(path, method=method, json=body, headers=headers), 401)
    assert [m["machine_id"] for m in client.get("/machines", headers=ADMIN).json["machines"]] == [
        "cab001"
    ]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/machines", None), ("POST", "/machines", {"machine_id": "cab100"})],
)
@pytest.mark.parametrize("key", ["", "too-short-key"], ids=["unset", "shorter_than_32"])
def test_admin_endpoints_are_off_without_a_long_enough_admin_key(make_app, method, path, body, key):
    """GIVEN ADMIN_API_KEY unset or under 32 characters WHEN an admin endpoint is called THEN
    503 admin_off naming ADMIN_API_KEY (SPEC "HTTP"), whatever the caller sends."""
    app = make_app(ADMIN_API_KEY=key)
    client = app.test_client()

    for headers in ({}, ADMIN, bearer(""), bearer(key or "x")):
        body_seen = assert_error(
            client.open(path, method=method, json=body, headers=headers), 503, "admin_off"
        )
        assert "ADMIN_API_KEY" in body_seen["error"]
    if key:
        problems = client.get("/status").json["problems"]
        assert "ADMIN_API_KEY must be at least 32 characters: admin endpoints are off" in problems


def test_without_an_admin_key_the_old_key_opens_no_machine(make_app, register):
    """GIVEN ADMIN_API_KEY unset WHEN the former key is used for a machine THEN 401."""
    cabinet = register("cab001")
    client = make_app(ADMIN_API_KEY="").test_client()

    assert_error(client.get("/machines/cab001", headers=ADMIN), 401)
    assert client.get("/machines/cab001", headers=cabinet.auth).status_code == 200
