"""Arcade Pay's entry points: the Flask ``app``, ``lambda_handler`` and ``python app.py``."""

from __future__ import annotations

import os
from pathlib import Path

from arcade import create_app

HERE = Path(__file__).resolve().parent


def _load_local_env() -> None:
    """Read .env.local beside this file, except in Lambda (its settings come from AWS)."""
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return
    env_file = HERE / ".env.local"
    if env_file.is_file():
        from dotenv import load_dotenv

        load_dotenv(env_file, override=False)


_load_local_env()
app = create_app()


def lambda_handler(event: dict, context: object) -> dict:
    """Serve one API Gateway, Function URL or ALB event."""
    from arcade.lambda_adapter import handle

    return handle(app, event, context)


if __name__ == "__main__":
    from arcade.serve import serve

    serve(app)
