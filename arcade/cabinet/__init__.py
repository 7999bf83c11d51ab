"""The cabinet side of Arcade Pay: coinpulses in, coins out, game overs back to the API.

``python -m arcade.cabinet --machine cab001`` runs it; ``Cabinet`` is the same thing in-process.
"""

from __future__ import annotations

from arcade.cabinet.actions import CoinAction, GpioCoinAction, PrintCoinAction
from arcade.cabinet.api import RetryPolicy
from arcade.cabinet.client import Cabinet
from arcade.cabinet.errors import CabinetError, CabinetSettingsError, CoinActionError
from arcade.cabinet.ledger import Coin
from arcade.cabinet.settings import CabinetSettings

__all__ = [
    "Cabinet",
    "CabinetError",
    "CabinetSettings",
    "CabinetSettingsError",
    "Coin",
    "CoinAction",
    "CoinActionError",
    "GpioCoinAction",
    "PrintCoinAction",
    "RetryPolicy",
]
