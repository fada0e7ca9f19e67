"""What every store block shares: the ``CertificateStore`` methods, delegated to a core store.

A store block is configuration (every field described, secrets as ``SecretStr``) plus
``get_store()``, which builds the core store from ``certfleet``. The block itself then
satisfies ``certfleet.store.CertificateStore`` by forwarding each call, so renewal and
distribution can be handed either the block or the core object.
"""

from __future__ import annotations

from typing import ContextManager

from pydantic import SecretStr

from certfleet.store import StoredVersion, parse_encryption_keys


def unwrap_encryption_keys(value: SecretStr | None, where: str) -> list[bytes] | None:
    """The one place a store block's encryption keys leave their SecretStr."""
    return parse_encryption_keys(value.get_secret_value(), where) if value else None


class DelegatingStore:
    """Mixin: the store methods, forwarded to ``self.get_store()`` (built once per block)."""

    def get_store(self):  # pragma: no cover - each block defines it
        raise NotImplementedError

    def current(self, name: str) -> StoredVersion | None:
        return self.get_store().current(name)

    def get(self, name: str, serial: str) -> StoredVersion:
        return self.get_store().get(name, serial)

    def versions(self, name: str) -> list[StoredVersion]:
        return self.get_store().versions(name)

    def names(self) -> list[str]:
        return self.get_store().names()

    def load_fullchain(self, name: str, serial: str) -> bytes:
        return self.get_store().load_fullchain(name, serial)

    def load_key(self, name: str, serial: str) -> bytes:
        return self.get_store().load_key(name, serial)

    def put(self, name: str, fullchain_pem: bytes, key_pem: bytes, *, issuer: str = "",
            make_current: bool = True) -> StoredVersion:
        return self.get_store().put(name, fullchain_pem, key_pem, issuer=issuer, make_current=make_current)

    def set_current(self, name: str, serial: str) -> None:
        self.get_store().set_current(name, serial)

    def restore_previous(self, name: str) -> StoredVersion:
        return self.get_store().restore_previous(name)

    def lock(self, name: str, timeout: float = 600.0) -> ContextManager[None]:
        return self.get_store().lock(name, timeout)

    def record_revocation(self, name: str, serial: str, reason: str) -> None:
        self.get_store().record_revocation(name, serial, reason)

    def revocations(self, name: str) -> dict[str, dict]:
        return self.get_store().revocations(name)
