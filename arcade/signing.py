"""The API's Ed25519 key for coinpulses and gameovers (SPEC "Delivery lasts until the cabinet
confirms"): ``PULSE_SIGNING_KEY`` when set, else generated once and kept in the store.

``cryptography`` is imported when the key is first needed, not at start-up, so the Lambda
cold start does not grow. Processes that race to generate the key agree on one: the store
keeps the first and every process uses what it kept.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from arcade import wire
from arcade.errors import SettingsError

if TYPE_CHECKING:
    from arcade.store.base import Store

STORED_SEED = "pulse_signing_key"
# What a seed that is not 32 bytes of base64url is told, read from the setting or the store.
SEED_RULE = "PULSE_SIGNING_KEY must be base64url of 32 bytes"


class PulseSigner:
    """Sign messages for cabinets with the API's private key."""

    def __init__(self, store: Store, *, seed: str | None = None):
        """``seed`` is PULSE_SIGNING_KEY: base64url of 32 random bytes (None: use the store)."""
        self.store = store
        self._seed = seed
        self._key: Any = None
        self._lock = threading.Lock()

    def sign(self, message: dict[str, Any]) -> dict[str, Any]:
        """Return ``message`` with its ``sig``. Raises SettingsError for a malformed key and
        StoreError when the stored key cannot be read or kept."""
        return wire.sign(message, self._private_key())

    def public_key(self) -> str:
        """Return the public key, base64url of its 32 bytes, as cabinets pin it."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        raw = self._private_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return wire.b64url(raw)

    def _private_key(self) -> Any:
        if self._key is None:
            with self._lock:
                if self._key is None:
                    self._key = self._load()
        return self._key

    def _load(self) -> Any:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        seed = self._seed
        if seed is None:
            seed = self.store.get_value(STORED_SEED) or self.store.put_value_if_absent(
                STORED_SEED, wire.b64url(os.urandom(32))
            )
        try:
            raw = wire.from_b64url(seed)
        except wire.WireError as exc:
            raise SettingsError(SEED_RULE) from exc
        if len(raw) != 32:
            raise SettingsError(SEED_RULE)
        return Ed25519PrivateKey.from_private_bytes(raw)
