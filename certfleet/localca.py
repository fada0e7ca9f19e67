"""A local certificate authority for internal PKI and development fleets.

Root (10 years) → intermediate (5 years) → leaves. Certificates follow the RFC 5280
profile that ``cryptography``'s verifier (and browsers) enforce: SKI/AKI, basic
constraints, key usage, SANs. The CA keys sit in ``directory`` with mode 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet import keys, pki
from certfleet.fsutil import atomic_write
from certfleet.models import KeyType

_ROOT, _INTER = "root", "intermediate"


def _write_private(path: Path, data: bytes) -> None:
    atomic_write(path, data, 0o600)


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def _ca_lock(directory: Path):
    """Serialise changes to a CA directory: a thread lock (flock is per open file, so two
    threads of one process would not exclude each other reliably) plus ``flock`` on
    ``<directory>/.lock`` for other processes."""
    directory.mkdir(parents=True, exist_ok=True)
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(str(directory.resolve()), threading.Lock())
    with tlock:
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_cert(subject_cn, key, issuer_cert, issuer_key, days, path_len):
    now = datetime.now(timezone.utc) - timedelta(minutes=5)
    issuer_name = issuer_cert.subject if issuer_cert is not None else _name(subject_cn)
    aki_key = (issuer_key or key).public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject_cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(aki_key), critical=False)
        .sign(issuer_key or key, hashes.SHA256())
    )


@dataclass
class LocalCA:
    directory: Path
    root_cert: x509.Certificate
    inter_cert: x509.Certificate
    _inter_key: object

    def __repr__(self) -> str:
        return f"LocalCA({str(self.directory)!r}, root={self.root_cert.subject.rfc4514_string()!r})"

    @classmethod
    def create(cls, directory: Path, name: str = "certfleet local CA") -> "LocalCA":
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        root_key = keys.generate_key(KeyType.EC_P256)
        root = _ca_cert(f"{name} root", root_key, None, None, 3650, 1)
        inter_key = keys.generate_key(KeyType.EC_P256)
        inter = _ca_cert(f"{name} intermediate", inter_key, root, root_key, 1825, 0)
        # Each file written to a temp name and renamed; intermediate.key last, since its
        # presence is what load_or_create takes as "a complete CA is here".
        _write_private(directory / f"{_ROOT}.key", keys.key_to_pem(root_key))
        atomic_write(directory / f"{_ROOT}.pem", pki.to_pem([root]), 0o644)
        atomic_write(directory / f"{_INTER}.pem", pki.to_pem([inter]), 0o644)
        _write_private(directory / f"{_INTER}.key", keys.key_to_pem(inter_key))
        return cls(directory, root, inter, inter_key)

    @classmethod
    def load(cls, directory: Path) -> "LocalCA":
        directory = Path(directory)
        root = pki.load_certs((directory / f"{_ROOT}.pem").read_bytes())[0]
        inter = pki.load_certs((directory / f"{_INTER}.pem").read_bytes())[0]
        inter_key = pki.load_private_key((directory / f"{_INTER}.key").read_bytes())
        return cls(directory, root, inter, inter_key)

    @classmethod
    def load_or_create(cls, directory: Path, name: str = "certfleet local CA") -> "LocalCA":
        """Load the CA, creating it first if absent. Under the CA lock: of two threads or
        processes starting at once, one creates and the other loads that same CA."""
        directory = Path(directory)
        if (directory / f"{_INTER}.key").exists():
            return cls.load(directory)
        with _ca_lock(directory):
            if (directory / f"{_INTER}.key").exists():
                return cls.load(directory)
            return cls.create(directory, name)

    # -- revocation: <directory>/revoked.json, what a CRL would be made from ---------
    def revoke(self, serial: str, reason: int = 0) -> None:
        """Record ``serial`` as revoked; read-modify-write under the CA lock, so
        concurrent revocations (threads or processes) all land."""
        with _ca_lock(self.directory):
            revoked = self.revoked()
            revoked[serial] = {"reason": reason, "at": datetime.now(timezone.utc).isoformat()}
            atomic_write(self.directory / "revoked.json", json.dumps(revoked, indent=2).encode(), 0o644)

    def revoked(self) -> dict:
        path = self.directory / "revoked.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def root_pem(self) -> bytes:
        return pki.to_pem([self.root_cert])

    @property
    def intermediate_pem(self) -> bytes:
        return pki.to_pem([self.inter_cert])

    def sign_csr(self, csr_pem: bytes, *, not_before=None, not_after=None, with_intermediate=True) -> bytes:
        """Sign a CSR; returns the full chain PEM (leaf, intermediate)."""
        csr = x509.load_pem_x509_csr(csr_pem)
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise ValueError("CSR has no subjectAltName") from None
        names = san.get_values_for_type(x509.DNSName)
        return self._sign(csr.public_key(), names, not_before, not_after, with_intermediate)

    def issue(self, domains, key_type: str = "ec-p256", not_before=None, not_after=None, with_intermediate=True):
        """Make a key and a certificate: returns ``(fullchain_pem, key_pem)``."""
        key = keys.generate_key(key_type)
        chain = self._sign(key.public_key(), list(domains), not_before, not_after, with_intermediate)
        return chain, keys.key_to_pem(key)

    def _sign(self, public_key, domains, not_before, not_after, with_intermediate) -> bytes:
        now = datetime.now(timezone.utc)
        not_before = not_before or now - timedelta(minutes=1)
        not_after = not_after or now + timedelta(days=90)
        cn = domains[0] if domains and len(domains[0]) <= 64 else None
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn) if cn else x509.Name([]))
            .issuer_name(self.inter_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_encipherment=False, content_commitment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=not cn)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.inter_cert.public_key()),
                critical=False,
            )
            .sign(self._inter_key, hashes.SHA256())
        )
        chain = [cert, self.inter_cert] if with_intermediate else [cert]
        return pki.to_pem(chain)


def self_signed(domains, key_type: str = "ec-p256", days: int = 30):
    """A self-signed leaf, for tests and for 'snake oil' detection. ``(cert_pem, key_pem)``."""
    key = keys.generate_key(key_type)
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(domains[0]))
        .issuer_name(_name(domains[0]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return pki.to_pem([cert]), keys.key_to_pem(key)
