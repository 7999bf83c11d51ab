"""Work that runs on a schedule rather than for a request: in Lambda, an EventBridge event.

``template.yaml`` invokes the function every minute with ``{"arcade_job": "relay"}`` (the
delivery relay) and every hour with ``{"arcade_job": "reconcile"}``; a plain EventBridge
"Scheduled Event" runs the relay. A scheduled event answers no HTTP: the handler returns
what the job did, and logs it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from arcade.errors import ArcadeError
from arcade.logs import log_event

logger = logging.getLogger(__name__)

JOBS = ("relay", "reconcile")


def is_scheduled_event(event: object) -> bool:
    """Return True for an EventBridge scheduled event or our own ``{"arcade_job": …}``."""
    if not isinstance(event, Mapping):
        return False
    return "arcade_job" in event or (
        event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"
    )


def run_scheduled(app: Flask, event: Mapping[str, Any]) -> dict[str, Any]:
    """Run the job the event names (the relay for a plain scheduled event); return its result."""
    from arcade.reconcile import reconcile
    from arcade.services import services

    job = str(event.get("arcade_job") or "relay")
    results: dict[str, Any] = {}
    with app.app_context():
        svc = services()
        if job not in JOBS:
            log_event(logger, "scheduled_job_unknown", level=logging.WARNING, job=job)
            return {job: {"error": "no such job"}}
        try:
            if job == "relay":
                results[job] = svc.relay()
            else:
                results[job] = reconcile(svc.ledger, svc.gateway).as_dict()
        except ArcadeError as exc:
            log_event(logger, "scheduled_job_failed", level=logging.ERROR, job=job, error=str(exc))
            results[job] = {"error": str(exc)}
    return results
