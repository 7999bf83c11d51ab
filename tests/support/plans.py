"""A pricing plan the plan and player-page tests share: two bundles and a bonus rule."""

from __future__ import annotations

from typing import Any

# "1 game" buys 1 credit for 1.00 USD, "5 games" 6 credits for 4.00 USD; buying 3 units or
# more at once adds 2 credits.
TWO_BUNDLES: dict[str, Any] = {
    "bundles": [
        {"name": "1 game", "credits": 1, "amount": 100, "currency": "usd"},
        {"name": "5 games", "credits": 6, "amount": 400, "currency": "usd"},
    ],
    "bonuses": [{"min_units": 3, "credits": 2}],
}
