"""Presence: whether a cabinet is there to take the credits a player pays for.

A cabinet client posts a heartbeat when it starts and every ``CABINET_HEARTBEAT_SECONDS``
(SPEC "Delivery lasts until the cabinet confirms"). A machine is ``online`` while its last
heartbeat is younger than ``MACHINE_OFFLINE_AFTER_SECONDS`` and said MQTT was connected,
``offline`` after that, ``unknown`` if it never sent one (the reference's cabinets: for them
nothing changes). While a heartbeating machine is offline nobody can pay for it: new links and
QR codes answer 409, and its Stripe Payment Links are switched off, so a printed QR code takes
no money; they are switched on again with its next good heartbeat. A link retired by a plan
version (its price buys nothing under the plan in force, ``PaymentLink.retired_at``) is left
off either way: presence never switches it on.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from arcade.clock import utc_now
from arcade.errors import ArcadeError, MachineOffline, UnknownMachine
from arcade.logs import log_event
from arcade.payments import StripeGateway
from arcade.store.base import Machine, PaymentLink, Store

logger = logging.getLogger(__name__)

ONLINE, OFFLINE, UNKNOWN = "online", "offline", "unknown"


def presence_of(machine: Machine, *, offline_after: int) -> str:
    """Return ``online``, ``offline`` or ``unknown`` for a machine now."""
    if machine.last_seen is None:
        return UNKNOWN
    fresh = utc_now() - machine.last_seen < timedelta(seconds=offline_after)
    return ONLINE if fresh and machine.mqtt_connected else OFFLINE


class Presence:
    """Heartbeats in; a machine's Payment Links switched off while it is offline."""

    def __init__(self, store: Store, gateway: StripeGateway, *, offline_after: int):
        self.store = store
        self.gateway = gateway
        self.offline_after = offline_after

    def of(self, machine: Machine) -> str:
        """Return the machine's presence now."""
        return presence_of(machine, offline_after=self.offline_after)

    def require_online(self, machine: Machine) -> None:
        """Raise MachineOffline when a heartbeating machine is offline (409 machine_offline)."""
        if self.of(machine) == OFFLINE:
            raise MachineOffline(
                f"machine {machine.machine_id} is offline: its cabinet has not reported in"
            )

    def heartbeat(
        self, machine: Machine, *, mqtt_connected: bool, credits_left: int | None
    ) -> Machine:
        """Record a heartbeat and, when it is a good one, switch the machine's links back on.

        Raises UnknownMachine or StoreError. A Stripe failure while switching links on is
        logged; the relay tries again.
        """
        self.store.update_machine(
            machine.machine_id,
            last_seen=utc_now(),
            mqtt_connected=int(mqtt_connected),
            credits_reported=credits_left,
        )
        current = self.store.get_machine(machine.machine_id)
        if current is None:
            raise UnknownMachine(machine.machine_id)
        self.sync_links(current)
        return current

    def sync_all(self) -> int:
        """Bring every heartbeating machine's links in line with its presence; return how many
        machines changed. Run by the delivery relay."""
        changed = 0
        for machine in self.store.list_machines():
            if machine.last_seen is not None and self.sync_links(machine):
                changed += 1
        return changed

    def sync_links(self, machine: Machine) -> bool:
        """Switch the machine's Payment Links off while it is offline and on while it is not
        (retired links stay off: they are neither switched on nor, already off, switched off
        again); return whether anything changed. Failures are logged and left for the next
        run."""
        wanted = self.of(machine) != OFFLINE
        if machine.links_active is None and wanted:
            return False  # never switched off: nothing to do
        if machine.links_active is not None and bool(machine.links_active) == wanted:
            return False
        try:
            for link in self.store.list_links(machine.machine_id):
                if link.retired_at is None:
                    self.gateway.set_link_active(link.link_id, wanted)
                    if wanted:
                        self._unless_retired_meanwhile(link)
            self.store.update_machine(machine.machine_id, links_active=int(wanted))
        except ArcadeError as exc:
            log_event(
                logger,
                "payment_links_switch_failed",
                level=logging.WARNING,
                machine_id=machine.machine_id,
                active=wanted,
                error=str(exc),
            )
            return False
        log_event(
            logger,
            "payment_links_switched",
            level=logging.INFO if wanted else logging.WARNING,
            machine_id=machine.machine_id,
            active=wanted,
        )
        return True

    def _unless_retired_meanwhile(self, link: PaymentLink) -> None:
        """Switch a link just switched on off again when a plan save retired it meanwhile (it
        marks the link before switching it off, so one of the two always sees the other)."""
        now = self.store.get_link(link.key)
        if now is not None and now.retired_at is not None:
            self.gateway.set_link_active(link.link_id, False)
