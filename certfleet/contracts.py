"""The small interfaces every kind implements (lego's Present/CleanUp habit).

Each contract is the two or three methods every kind needs; optional capabilities
(revocation, ARI, rollback, a longer propagation timeout) are separate protocols
checked with ``isinstance`` at the call site.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from certfleet.models import Receipt


@dataclass(frozen=True)
class IssuanceRequest:
    """What an issuer is asked for. ``csr_pem`` carries the public key only."""

    name: str
    domains: tuple[str, ...]
    csr_pem: bytes
    replaces: str | None = None  # ARI certificate identifier of the one being renewed


@dataclass(frozen=True)
class Issued:
    """What an issuer returns: leaf first, then intermediates, all PEM. No key."""

    fullchain_pem: bytes
    issuer_name: str
    detail: str = ""


@runtime_checkable
class Issuer(Protocol):
    def issue(self, request: IssuanceRequest) -> Issued: ...


@runtime_checkable
class Revoker(Protocol):
    def revoke(self, cert_pem: bytes, reason: int = 0) -> None: ...


@runtime_checkable
class RenewalInfoProvider(Protocol):
    def renewal_info(self, cert_pem: bytes) -> tuple[datetime, datetime] | None: ...


@runtime_checkable
class DnsSolver(Protocol):
    """dns-01: publish ``value`` at ``_acme-challenge.<domain>``, then remove it."""

    def present(self, domain: str, value: str) -> None: ...

    def cleanup(self, domain: str, value: str) -> None: ...


@runtime_checkable
class SolverTimeout(Protocol):
    def timeout(self) -> tuple[float, float]:  # (total seconds, poll interval)
        ...


@dataclass(frozen=True)
class DeployBundle:
    """Key material in transit to a target. Lives only inside a task; never returned.

    ``__repr__`` hides the key so a stray log line or traceback cannot print it.
    """

    certificate: str
    serial: str
    fullchain_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return f"DeployBundle(certificate={self.certificate!r}, serial={self.serial!r}, key=<redacted>)"

    __str__ = __repr__


@runtime_checkable
class Target(Protocol):
    """A place that holds a certificate for something that terminates TLS."""

    def current(self) -> str | None:
        """Serial this target holds now (or serves), ``None`` when it holds nothing."""
        ...

    def deploy(self, bundle: DeployBundle) -> Receipt: ...


@runtime_checkable
class Activatable(Protocol):
    def activate(self) -> None: ...


@runtime_checkable
class RollbackCapable(Protocol):
    def rollback(self) -> str | None:
        """Put back what the last deploy replaced; returns the serial restored."""
        ...
