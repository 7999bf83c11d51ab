"""Arcade Pay's entry points: the Flask ``app``, ``lambda_handler`` and ``python app.py``."""

from __future__ import annotations

from pathlib import Path

from arcade import create_app
from arcade.config import load_local_env
from arcade.errors import SettingsError
from arcade.logs import configure_logging

HERE = Path(__file__).resolve().parent

# The entry points (Lambda, `python app.py`, `flask --app app`) decide where logs go; the app
# factory only logs.
configure_logging()
try:
    load_local_env(HERE / ".env.local")
except SettingsError as exc:
    # A start-up problem is one sentence and exit 1 for `python app.py` and every `flask`
    # command alike (SPEC "Serving locally").
    from arcade.serve import startup_failed

    raise SystemExit(startup_failed(str(exc))) from None
app = create_app()


def lambda_handler(event: dict, context: object) -> dict:
    """Serve one API Gateway, Function URL or ALB event, or run a scheduled job."""
    from arcade.scheduled import is_scheduled_event, run_scheduled

    if is_scheduled_event(event):
        return run_scheduled(app, event)
    from arcade.lambda_adapter import handle

    return handle(app, event, context)


if __name__ == "__main__":
    import sys

    from arcade.serve import main

    raise SystemExit(main(app, sys.argv[1:]))
