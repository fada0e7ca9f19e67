"""Domain records shared by every layer.

Plain frozen dataclasses: cheap to build, hashable, and safe to hand to Prefect as
parameters or results because none of them ever holds private-key material. Key bytes
live only in :class:`KeyMaterial` (see ``certfleet.keys``), which refuses to be printed.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


class KeyType(str, enum.Enum):
    """Key algorithms a certificate spec may ask for. ECDSA P-256 is the default."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    def __str__(self) -> str:  # "ec-p256", not "KeyType.EC_P256", in messages
        return self.value


@dataclass(frozen=True)
class CertificateInfo:
    """What a certificate *is*: everything a person or a check needs, nothing secret.

    ``serial`` is lowercase hex without leading zeros, the spelling Pebble logs and
    ``openssl x509 -serial`` prints (modulo case), so serials compare as strings.
    """

    serial: str
    fingerprint_sha256: str
    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    key_type: str
    public_key_sha256: str  # fingerprint of the SubjectPublicKeyInfo: "same key?" checks
    is_ca: bool = False
    self_signed: bool = False

    def remaining(self, now: datetime) -> float:
        """Seconds of validity left at ``now`` (negative once expired)."""
        return (self.not_after - now).total_seconds()

    @property
    def lifetime(self) -> float:
        return (self.not_after - self.not_before).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sans"] = list(self.sans)
        d["not_before"] = self.not_before.isoformat()
        d["not_after"] = self.not_after.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CertificateInfo":
        d = dict(d)
        d["sans"] = tuple(d["sans"])
        d["not_before"] = datetime.fromisoformat(d["not_before"])
        d["not_after"] = datetime.fromisoformat(d["not_after"])
        return cls(**d)


@dataclass(frozen=True)
class CertRef:
    """How flows pass a certificate around: a name and a serial. Never the key."""

    name: str
    serial: str

    def __str__(self) -> str:
        return f"{self.name}@{self.serial}"


@dataclass(frozen=True)
class Endpoint:
    """A TLS endpoint as a user reaches it: connect to host:port, send ``sni``."""

    host: str
    port: int
    sni: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.sni}@{host}:{self.port}"


@dataclass(frozen=True)
class CheckResult:
    """One step of a check chain (cert-manager's policies): ok, a reason, a message."""

    ok: bool
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Receipt:
    """What a target reports after a deploy (or a skip): which serial it now holds."""

    target: str
    certificate: str
    serial: str
    changed: bool
    detail: str = ""
    at: datetime | None = None


@dataclass(frozen=True)
class ProbeResult:
    """What one endpoint serves, seen from the user's side of the wire.

    ``status`` is one of the ``ProbeStatus`` values; ``reason`` is a human sentence.
    ``chain_pem`` is the served chain (leaf first) as PEM text; certificates are public.
    """

    endpoint: Endpoint
    status: str
    reason: str = ""
    leaf: CertificateInfo | None = None
    chain_pem: tuple[str, ...] = field(default_factory=tuple)
    chain_valid: bool = False
    hostname_valid: bool = False
    elapsed: float = 0.0

    @property
    def serial(self) -> str | None:
        return self.leaf.serial if self.leaf else None

    @property
    def ok(self) -> bool:
        return self.status == ProbeStatus.OK


class ProbeStatus(str, enum.Enum):
    OK = "OK"
    REFUSED = "REFUSED"
    RESET = "RESET"
    TIMEOUT = "TIMEOUT"
    PLAIN_HTTP = "PLAIN_HTTP"
    HANDSHAKE_FAILED = "HANDSHAKE_FAILED"
    SELF_SIGNED = "SELF_SIGNED"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    HOSTNAME_MISMATCH = "HOSTNAME_MISMATCH"
    INCOMPLETE_CHAIN = "INCOMPLETE_CHAIN"
    UNTRUSTED_CHAIN = "UNTRUSTED_CHAIN"
    UNREACHABLE = "UNREACHABLE"

    def __str__(self) -> str:
        return self.value
