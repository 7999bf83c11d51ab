"""Log lines: one JSON object each, fields nested as JSON, set up by the entry points only.

The API and the cabinet format their lines with the one formatter in ``arcade.common.logs``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from arcade.common.logs import JsonLineFormatter, configure_logging, log_event

ROOT = Path(__file__).resolve().parent.parent


def record_of(logger_name: str, emit) -> logging.LogRecord:
    """Return the one record ``emit(logger)`` logs on a fresh logger named ``logger_name``."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    [record] = records
    return record


def test_fields_that_are_objects_stay_objects_in_the_line():
    """GIVEN an event whose fields hold a dict, a list and a non-JSON value WHEN formatted THEN
    one JSON object whose fields are nested JSON, not strings holding JSON."""
    record = record_of(
        "arcade.test_lines",
        lambda logger: log_event(
            logger,
            "store_error",
            level=logging.WARNING,
            operation="put",
            details={"code": "ConditionalCheckFailed", "item": {"pk": "PAY#cs_1"}},
            ids=["cs_1", "pi_1"],
            path=Path("/tmp/x"),
        ),
    )

    line = JsonLineFormatter().format(record)

    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["event"] == "store_error" and parsed["level"] == "warning"
    assert parsed["details"] == {"code": "ConditionalCheckFailed", "item": {"pk": "PAY#cs_1"}}
    assert parsed["ids"] == ["cs_1", "pi_1"]
    assert parsed["path"] == "/tmp/x"


def test_a_library_record_with_a_traceback_is_one_line_naming_the_exception_only():
    """GIVEN a library's own record (no fields) with exc_info WHEN formatted THEN its message
    and the exception's type, no traceback and no exception text."""

    def emit(logger: logging.Logger) -> None:
        try:
            raise ValueError("secret internals")
        except ValueError:
            logger.exception("Exception while serving /webhook")

    line = JsonLineFormatter().format(record_of("waitress", emit))

    parsed = json.loads(line)
    assert parsed["message"] == "Exception while serving /webhook"
    assert parsed["exception"] == "ValueError"
    assert "secret internals" not in line and "Traceback" not in line


def test_the_api_and_the_cabinet_write_lines_with_the_same_formatter():
    """GIVEN the server's and the cabinet's logging modules THEN one formatter, one log_event."""
    import arcade.cabinet.client
    import arcade.logs

    assert arcade.logs.JsonLineFormatter is JsonLineFormatter
    assert arcade.logs.log_event is log_event
    assert arcade.cabinet.client.log_event is log_event


@pytest.fixture
def root_logging():
    """Keep the root logger's handlers and level as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers, root.level = handlers, level


def test_configure_logging_is_idempotent_and_quiets_the_named_libraries(root_logging):
    root_logging.handlers = []

    configure_logging(quiet=("chatty.library",))
    configure_logging(quiet=("chatty.library",))

    [handler] = root_logging.handlers
    assert isinstance(handler.formatter, JsonLineFormatter)
    assert logging.getLogger("chatty.library").level == logging.WARNING


def test_create_app_leaves_the_root_logger_alone(make_app, root_logging):
    """GIVEN a root logger with a handler of someone else's WHEN the app is built THEN the
    handlers and the level are the same: only entry points configure logging."""
    theirs = logging.NullHandler()
    root_logging.handlers = [theirs]
    root_logging.setLevel(logging.ERROR)

    make_app()

    assert root_logging.handlers == [theirs]
    assert root_logging.level == logging.ERROR


def test_library_code_configures_no_logging():
    """GIVEN the package's source WHEN searched THEN only the logging modules and the entry
    points' own module set handlers or levels (app.py, arcade/cabinet/__main__ through
    arcade.common.logs.configure_logging)."""
    allowed = {ROOT / "arcade" / "common" / "logs.py"}
    offenders = []
    for path in sorted((ROOT / "arcade").rglob("*.py")):
        text = path.read_text()
        if path not in allowed and any(
            words in text for words in ("basicConfig", ".setLevel(", ".addHandler(", ".handlers =")
        ):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_cabinet_command_line_logs_json_lines():
    """GIVEN ``python -m arcade.cabinet`` with a setting that stops it WHEN run THEN what it
    writes on stderr is a sentence or a JSON line, never a traceback."""
    run = subprocess.run(
        [sys.executable, "-m", "arcade.cabinet", "--machine", "cab001", "--http-port", "-1"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "EMQX_PORT": "not-a-port"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 2
    assert "EMQX_PORT must be a whole number from 1 to 65535" in run.stderr
    assert "Traceback" not in run.stderr
    for line in run.stderr.splitlines():
        if line.startswith("{"):
            json.loads(line)
