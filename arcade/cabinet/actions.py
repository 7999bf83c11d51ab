"""What the cabinet does for each credit: a coin action, called once per credit.

A coin action is any callable taking a ``Coin``; it may have a ``close()``. Two come with the
cabinet: ``PrintCoinAction`` (one line per credit, the default) and ``GpioCoinAction`` (a pulse
on a Raspberry Pi pin wired through an optocoupler to the cabinet's coin line; see
docs/cabinet.md). Others load from ``package.module:factory``.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from arcade.cabinet.errors import CoinActionError

if TYPE_CHECKING:
    from arcade.cabinet.ledger import Coin

GPIOZERO_MISSING = (
    "the gpio coin action needs gpiozero, which is not installed: on Raspberry Pi OS run"
    " 'sudo apt install python3-gpiozero' (or 'pip install gpiozero' in this venv)"
)


class CoinAction(Protocol):
    """Insert one coin into the game."""

    def __call__(self, coin: Coin) -> None: ...


class PrintCoinAction:
    """Write one line per credit to a stream (standard output by default)."""

    def __init__(self, out: TextIO | None = None):
        self.out = out

    def __call__(self, coin: Coin) -> None:
        out = self.out or sys.stdout
        out.write(f"COIN {coin.number}/{coin.of} (payment {coin.payment_id})\n")
        out.flush()


class GpioCoinAction:
    """Pulse a GPIO pin once per credit, as a coin mech closes the coin switch.

    ``pin`` is a BCM number (GPIO17 is physical pin 11). ``pulse_ms`` is how long the line is
    held active and ``gap_ms`` how long it rests before the next coin: most JAMMA boards and
    MAME's coin inputs read 50-150 ms reliably. ``active_high=False`` suits an output stage
    that pulls the line low while the pin is low.
    """

    def __init__(
        self,
        pin: int = 17,
        *,
        pulse_ms: float = 100,
        gap_ms: float = 100,
        active_high: bool = True,
        device: Any = None,
    ):
        if pulse_ms <= 0 or gap_ms < 0:
            raise CoinActionError("pulse width must be above 0 ms and the gap at least 0 ms")
        self.pin = pin
        self.pulse = pulse_ms / 1000
        self.gap = gap_ms / 1000
        self._lock = threading.Lock()
        self._device = device if device is not None else _open_output(pin, active_high)

    def __call__(self, coin: Coin) -> None:
        with self._lock:
            self._device.on()
            try:
                time.sleep(self.pulse)
            finally:
                self._device.off()
            time.sleep(self.gap)

    def close(self) -> None:
        """Release the pin (it goes back to an input)."""
        self._device.close()


def _open_output(pin: int, active_high: bool) -> Any:
    try:
        from gpiozero import DigitalOutputDevice, GPIOZeroError
    except ImportError as exc:
        raise CoinActionError(GPIOZERO_MISSING) from exc
    try:
        return DigitalOutputDevice(pin, active_high=active_high, initial_value=False)
    except (GPIOZeroError, OSError) as exc:
        raise CoinActionError(
            f"GPIO{pin} cannot be opened as an output (is this a Raspberry Pi, is the pin free?)"
        ) from exc


def load_coin_action(spec: str, **gpio: Any) -> CoinAction:
    """Return the coin action named by ``spec``: ``print``, ``gpio`` or ``module:factory``."""
    if spec == "print":
        return PrintCoinAction()
    if spec == "gpio":
        return GpioCoinAction(**gpio)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CoinActionError(f"coin action {spec!r} must be print, gpio or package.module:factory")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise CoinActionError(f"coin action {spec!r} cannot be imported") from exc
    return factory()
