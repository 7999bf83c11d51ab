"""Work that runs on a schedule rather than for a request: in Lambda, an EventBridge event.

``template.yaml`` invokes the function every hour with ``{"arcade_job": "reconcile"}``; a plain
EventBridge "Scheduled Event" runs the same jobs. A scheduled event answers no HTTP: the
handler returns what the job did, and logs it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from arcade.errors import ArcadeError
from arcade.logs import log_event

logger = logging.getLogger(__name__)

JOBS = ("reconcile",)


def is_scheduled_event(event: object) -> bool:
    """Return True for an EventBridge scheduled event or our own ``{"arcade_job": …}``."""
    if not isinstance(event, Mapping):
        return False
    return "arcade_job" in event or (
        event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"
    )


def run_scheduled(app: Flask, event: Mapping[str, Any]) -> dict[str, Any]:
    """Run the job the event names (every job for a plain scheduled event); return results."""
    from arcade.reconcile import reconcile
    from arcade.services import services

    wanted = event.get("arcade_job")
    jobs = JOBS if wanted is None else (wanted,)
    results: dict[str, Any] = {}
    with app.app_context():
        svc = services()
        for job in jobs:
            if job != "reconcile":
                log_event(logger, "scheduled_job_unknown", level=logging.WARNING, job=str(job))
                results[str(job)] = {"error": "no such job"}
                continue
            try:
                results[job] = reconcile(svc.ledger, svc.gateway).as_dict()
            except ArcadeError as exc:
                log_event(
                    logger, "scheduled_job_failed", level=logging.ERROR, job=job, error=str(exc)
                )
                results[job] = {"error": str(exc)}
    return results
