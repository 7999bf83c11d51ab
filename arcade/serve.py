"""``python app.py``: report the settings by name, then serve on PORT."""

from __future__ import annotations

import logging
import os

from flask import Flask

from arcade.logs import log_event
from arcade.services import Services

logger = logging.getLogger("arcade.serve")


def serve(app: Flask) -> None:
    """Serve ``app`` with threads on 127.0.0.1:PORT (HOST to change the address)."""
    svc: Services = app.extensions["arcade"]
    settings = svc.settings
    problems = svc.problems()
    # create_app already logged the malformed settings; add what is missing.
    for problem in problems[len(settings.problems) :]:
        log_event(logger, "setting_problem", level=logging.WARNING, problem=problem)
    # Every request that matters logs its own JSON event; werkzeug's access line per request
    # would double the log and cost a measurable share of a webhook's time.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    host = os.environ.get("HOST", "127.0.0.1")
    log_event(
        logger,
        "serving",
        host=host,
        port=settings.port,
        store=settings.database_url.split(":", 1)[0],
        ready=not problems,
    )
    app.run(host=host, port=settings.port, threaded=True, use_reloader=False)
