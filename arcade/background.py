"""The work `python app.py` does between requests: the delivery relay, reconciliation, and the
store's housekeeping (SQLite's checkpoints, kept off the webhook path).

In Lambda the same functions run from EventBridge schedules (``arcade.scheduled``); here one
daemon thread runs them: the relay every ``DELIVERY_RETRY_SECONDS``, reconciliation with Stripe
every hour (the first a few minutes after start, once the service is warm).
"""

from __future__ import annotations

import logging
import threading
import time

from arcade.errors import ArcadeError
from arcade.logs import log_event
from arcade.services import Services

logger = logging.getLogger(__name__)

RECONCILE_EVERY_SECONDS = 3600
RECONCILE_FIRST_AFTER_SECONDS = 300


class BackgroundWork(threading.Thread):
    """Run the relay and the hourly reconciliation until ``stop()``."""

    def __init__(self, svc: Services):
        super().__init__(name="relay", daemon=True)
        self.svc = svc
        self._stopping = threading.Event()
        self._next_reconcile = time.monotonic() + RECONCILE_FIRST_AFTER_SECONDS

    def run(self) -> None:
        every = self.svc.settings.delivery_retry_seconds
        while not self._stopping.wait(every):
            self.tick()

    def tick(self) -> None:
        """Run the relay once, and reconciliation when its hour has come."""
        try:
            self.svc.relay()
        except ArcadeError as exc:
            log_event(logger, "relay_failed", level=logging.WARNING, error=str(exc))
        try:
            self.svc.store.maintain()
        except ArcadeError as exc:
            log_event(logger, "store_maintenance_failed", level=logging.WARNING, error=str(exc))
        if time.monotonic() >= self._next_reconcile and not self.svc.stripe_problems():
            self._next_reconcile = time.monotonic() + RECONCILE_EVERY_SECONDS
            from arcade.reconcile import reconcile

            try:
                reconcile(self.svc.ledger, self.svc.gateway)
            except ArcadeError as exc:
                log_event(logger, "reconcile_failed", level=logging.WARNING, error=str(exc))

    def ask_to_stop(self) -> None:
        """Ask the thread to finish after its current run, without waiting for it."""
        self._stopping.set()

    def stop(self) -> None:
        """Ask the thread to finish after its current run, and wait for it."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=30)
