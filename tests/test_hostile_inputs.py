"""What a caller controls, taken to its edges: every answer a 4xx or the right one, never a 500
or an ERROR line, never a stall of the webhook, and no flood of log lines (SPEC "HTTP",
"Serving locally"). Through a real `python app.py` where the failure lives in the server."""

from __future__ import annotations

import logging

import pytest

from tests.support.admin import login
from tests.support.app import ADMIN_KEY

# paho leaves the socket of a connection to a stopped or refusing broker to the collector.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}

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
