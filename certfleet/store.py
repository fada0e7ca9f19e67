"""The certificate store: the versioned source of truth for issued certificates and keys.

``CertificateStore`` is the contract every backend implements (this module's
``LocalStore``, ``certfleet.store_s3.S3CertificateStore``,
``certfleet.store_secrets_manager.SecretsManagerCertificateStore``), so renewal and
distribution work with any of them. The helpers below it — bundle check, metadata,
key envelope, retention choice — are shared, so every backend makes the same decisions.

Local layout under ``root``::

    <name>/versions/<serial>/fullchain.pem   leaf first, then intermediates
    <name>/versions/<serial>/key.pem         0600 (no encryption key configured)
    <name>/versions/<serial>/key.pem.enc     0600, AES-256-GCM envelope (encryption key configured)
    <name>/versions/<serial>/meta.json       CertificateInfo + issuer + stored_at
    <name>/current  -> versions/<serial>     a symlink, switched atomically (rename)
    <name>/.lock                             flock: one renewal per certificate at a time
    <name>/revocations.json                  serial -> {"reason", "at"}: revoked versions

A version is written into a temporary directory and renamed into place, and ``current``
is switched only after the version is complete and its key matches its certificate: a
half-written or bad certificate never becomes current.

Encryption at rest: with ``encryption_keys`` (32-byte AES keys; the caller resolves
them from an environment variable or a Secret block) private keys are written as an
authenticated envelope. The certificate name and serial are its associated data, so a
key file copied into another version does not decrypt. The first key encrypts, every
key is tried to decrypt: rotate by putting the new key first and keeping the old one
until the old versions are pruned. Versions stored before encryption was switched on
keep their plain ``key.pem`` and stay readable.

Retention: after each ``put`` the oldest versions beyond ``keep_versions`` (default
``DEFAULT_KEEP_VERSIONS``; ``None`` keeps everything) are deleted — never the current
version, never the one just before it (the rollback target), never the one just put.

Revocation records: every backend keeps ``serial -> {reason, at}`` for the versions
revoked at their CA (``record_revocation``), and ``set_current`` / ``restore_previous``
refuse a revoked serial (``RevokedError``): a rollback never brings one back.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import ContextManager, Iterator, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from certfleet import pki
from certfleet.fsutil import atomic_write
from certfleet.models import CertificateInfo

DEFAULT_KEEP_VERSIONS = 10
"""Ten versions is years of 90-day certificates, or weeks of emergency rotations:
enough to roll back far, small enough that a leaked store backup holds few keys."""

KEY_FILE, ENCRYPTED_KEY_FILE = "key.pem", "key.pem.enc"
ENVELOPE_FORMAT = "certfleet-key-envelope"


class StoreError(RuntimeError):
    pass


class LockTimeout(StoreError):
    pass


class RevokedError(StoreError):
    """A revoked serial was about to become current again (a restore or a rollback)."""


@dataclass(frozen=True)
class StoredVersion:
    """One issued version, as facts. The key stays in the store (see ``load_key``).

    ``path`` says where the version lives: a directory for the local store, an
    ``s3://`` URL or a secret ARN + version for the AWS stores.
    """

    name: str
    info: CertificateInfo
    issuer: str
    stored_at: datetime
    path: Path | str

    @property
    def serial(self) -> str:
        return self.info.serial


@runtime_checkable
class CertificateStore(Protocol):
    """What renewal and distribution need from a store, whatever the backend."""

    def current(self, name: str) -> StoredVersion | None: ...

    def get(self, name: str, serial: str) -> StoredVersion: ...

    def versions(self, name: str) -> list[StoredVersion]:
        """All kept versions, oldest first."""
        ...

    def names(self) -> list[str]: ...

    def load_fullchain(self, name: str, serial: str) -> bytes: ...

    def load_key(self, name: str, serial: str) -> bytes:
        """The private key PEM, decrypted. Callers keep it in local variables only."""
        ...

    def put(self, name: str, fullchain_pem: bytes, key_pem: bytes, *, issuer: str = "",
            make_current: bool = True) -> StoredVersion: ...

    def set_current(self, name: str, serial: str) -> None: ...

    def restore_previous(self, name: str) -> StoredVersion: ...

    def lock(self, name: str, timeout: float = 600.0) -> ContextManager[None]: ...

    def record_revocation(self, name: str, serial: str, reason: str) -> None:
        """Remember that ``serial`` was revoked (RFC 5280 reason name); idempotent."""
        ...

    def revocations(self, name: str) -> dict[str, dict]:
        """serial -> {"reason": ..., "at": ISO 8601 UTC} for every revoked version."""
        ...


# -- shared helpers: every backend decides the same way ---------------------------

def check_name(label: str, name: str, what: str = "certificate name") -> str:
    """Names and serials become path segments, object keys and secret names: no '/', no dotfiles."""
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise StoreError(f"{label}: invalid {what} '{name}'")
    return name


def check_bundle(label: str, name: str, fullchain_pem: bytes, key_pem: bytes):
    """The ordered chain and its description; refuses a key that does not match the leaf."""
    chain = pki.order_chain(pki.load_certs(fullchain_pem))
    key = pki.load_private_key(key_pem)
    if not pki.key_matches(chain[0], key):
        raise StoreError(f"{label}: certificate '{name}': the private key does not match certificate {pki.serial_hex(chain[0])}; nothing stored")
    return chain, pki.describe(chain[0])


def new_meta(info: CertificateInfo, issuer: str, *, encrypted: bool) -> dict:
    return {"info": info.to_dict(), "issuer": issuer, "key_encrypted": encrypted,
            "stored_at": datetime.now(timezone.utc).isoformat()}


def version_from_meta(name: str, meta: dict, path: Path | str) -> StoredVersion:
    return StoredVersion(name=name, info=CertificateInfo.from_dict(meta["info"]),
                         issuer=meta.get("issuer", ""),
                         stored_at=datetime.fromisoformat(meta["stored_at"]), path=path)


def previous_of(versions: list[StoredVersion], cur: StoredVersion | None) -> StoredVersion | None:
    """The rollback target: the newest version stored before the current one."""
    older = [v for v in versions if cur is None or (v.serial != cur.serial and v.stored_at <= cur.stored_at)]
    return older[-1] if older else None


def to_prune(versions: list[StoredVersion], current_serial: str | None, keep: int | None,
             just_put: str | None = None) -> list[StoredVersion]:
    """The oldest versions beyond ``keep``; never current, its predecessor, or ``just_put``."""
    if keep is None or len(versions) <= keep:
        return []
    cur = next((v for v in versions if v.serial == current_serial), None)
    prev = previous_of(versions, cur) if cur else None
    protected = {current_serial, just_put, prev.serial if prev else None}
    candidates = [v for v in versions if v.serial not in protected]
    return candidates[: len(versions) - keep]


def revocation_entry(reason: str) -> dict:
    return {"reason": reason, "at": datetime.now(timezone.utc).isoformat()}


def refuse_revoked(label: str, name: str, serial: str, revoked: dict[str, dict]) -> None:
    """A revoked serial never becomes current again: not by a restore, not by a rollback."""
    if serial in revoked:
        r = revoked[serial]
        raise RevokedError(f"{label}: certificate '{name}' serial {serial} was revoked ({r.get('reason', '?')}, "
                           f"at {r.get('at', '?')}); refusing to make it current again")


def check_keep(keep_versions: int | None) -> int | None:
    """At least two: the current version and the one a rollback goes back to."""
    if keep_versions is not None and keep_versions < 2:
        raise StoreError(f"store: keep_versions must be at least 2 (current + previous), not {keep_versions}")
    return keep_versions


def parse_encryption_keys(text: str, where: str = "encryption key") -> list[bytes]:
    """Comma-separated base64 keys (32 bytes each) as bytes; the first one encrypts.

    The caller resolves the reference (env var, Secret block) and passes the text; the
    error names ``where`` and the position, never the value.
    """
    keys = []
    for i, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            raw = base64.b64decode(part, validate=True)
        except (binascii.Error, ValueError):
            raise StoreError(f"{where}: key #{i + 1} is not valid base64") from None
        if len(raw) != 32:
            raise StoreError(f"{where}: key #{i + 1} is {len(raw)} bytes; AES-256 needs 32 (e.g. `head -c 32 /dev/urandom | base64`)")
        keys.append(raw)
    if not keys:
        raise StoreError(f"{where}: no key given")
    return keys


def key_id(key: bytes) -> str:
    """A short fingerprint naming a key in errors and envelopes without revealing it."""
    return hashlib.sha256(b"certfleet-store-key-id\0" + key).hexdigest()[:12]


class KeyEnvelope:
    """AES-256-GCM for private keys at rest; ``keys[0]`` seals, all keys are tried to open.

    The associated data binds the ciphertext to (certificate name, serial): a key file
    moved to another version, or another certificate, fails authentication.
    """

    def __init__(self, keys: Sequence[bytes]):
        for k in keys:
            if not isinstance(k, bytes) or len(k) != 32:
                raise StoreError("store: an encryption key must be 32 bytes (AES-256)")
        self.keys = list(keys)

    def __repr__(self) -> str:
        return f"KeyEnvelope(key_ids={[key_id(k) for k in self.keys]})"

    @staticmethod
    def _aad(name: str, serial: str) -> bytes:
        return f"certfleet-key\0{name}\0{serial}".encode()

    def seal(self, name: str, serial: str, key_pem: bytes) -> bytes:
        nonce = os.urandom(12)
        ct = AESGCM(self.keys[0]).encrypt(nonce, key_pem, self._aad(name, serial))
        env = {"format": ENVELOPE_FORMAT, "version": 1, "alg": "AES-256-GCM", "key_id": key_id(self.keys[0]),
               "nonce": base64.b64encode(nonce).decode(), "ciphertext": base64.b64encode(ct).decode()}
        return json.dumps(env).encode() + b"\n"

    def open(self, label: str, name: str, serial: str, blob: bytes) -> bytes:
        where = f"{label}: certificate '{name}' serial {serial}"
        try:
            env = json.loads(blob)
            nonce, ct = base64.b64decode(env["nonce"]), base64.b64decode(env["ciphertext"])
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{where}: the encrypted key is not a certfleet key envelope") from None
        for k in self.keys:
            with contextlib.suppress(InvalidTag):
                return AESGCM(k).decrypt(nonce, ct, self._aad(name, serial))
        raise StoreError(
            f"{where}: cannot decrypt the private key: it was encrypted with key id {env.get('key_id')}, "
            f"configured key ids are {', '.join(key_id(k) for k in self.keys)} "
            "(wrong encryption key, or a key file copied from another version)")


def envelope_for(keys: Sequence[bytes] | None) -> KeyEnvelope | None:
    return KeyEnvelope(keys) if keys else None


def open_key(label: str, envelope: KeyEnvelope | None, name: str, serial: str, blob: bytes) -> bytes:
    """Decrypt ``blob`` or say clearly that no key is configured to do it."""
    if envelope is None:
        raise StoreError(f"{label}: certificate '{name}' serial {serial}: the private key is encrypted "
                         "and no encryption key is configured for this store")
    return envelope.open(label, name, serial, blob)


# -- the local directory store ----------------------------------------------------

class LocalStore:
    """Versions in a directory tree; ``flock`` for the per-certificate lock."""

    label = "store"

    def __init__(self, root: str | Path, *, keep_versions: int | None = DEFAULT_KEEP_VERSIONS,
                 encryption_keys: Sequence[bytes] | None = None):
        self.root = Path(root)
        self.keep_versions = check_keep(keep_versions)
        self._envelope = envelope_for(encryption_keys)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _dir(self, name: str) -> Path:
        return self.root / check_name(self.label, name)

    def _vdir(self, name: str, serial: str) -> Path:
        return self._dir(name) / "versions" / check_name(self.label, serial, "serial")

    # -- reading -----------------------------------------------------------------
    def current(self, name: str) -> StoredVersion | None:
        link = self._dir(name) / "current"
        if not link.is_symlink():
            return None
        return self._read_version(name, link.resolve())

    def get(self, name: str, serial: str) -> StoredVersion:
        path = self._vdir(name, serial)
        if not (path / "meta.json").is_file():
            raise StoreError(f"store: certificate '{name}' has no version with serial {serial}")
        return self._read_version(name, path)

    def versions(self, name: str) -> list[StoredVersion]:
        """All stored versions, oldest first."""
        vdir = self._dir(name) / "versions"
        if not vdir.is_dir():
            return []
        found = [self._read_version(name, p) for p in vdir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(found, key=lambda v: (v.stored_at, v.serial))

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir())

    def load_fullchain(self, name: str, serial: str) -> bytes:
        try:
            return (self._vdir(name, serial) / "fullchain.pem").read_bytes()
        except FileNotFoundError:
            raise StoreError(f"store: certificate '{name}' has no version with serial {serial}") from None

    def load_key(self, name: str, serial: str) -> bytes:
        """The private key PEM, decrypted when stored encrypted. Keep it in locals only."""
        path = self._vdir(name, serial)
        if (path / ENCRYPTED_KEY_FILE).is_file():
            return open_key(self.label, self._envelope, name, serial, (path / ENCRYPTED_KEY_FILE).read_bytes())
        if (path / KEY_FILE).is_file():
            return (path / KEY_FILE).read_bytes()
        raise StoreError(f"store: certificate '{name}' has no key for serial {serial}")

    def _read_version(self, name: str, path: Path) -> StoredVersion:
        return version_from_meta(name, json.loads((path / "meta.json").read_text()), path)

    # -- writing -----------------------------------------------------------------
    def put(self, name: str, fullchain_pem: bytes, key_pem: bytes, *, issuer: str = "", make_current: bool = True) -> StoredVersion:
        """Store a new version; refuses a bundle whose key does not match its leaf."""
        chain, info = check_bundle(self.label, name, fullchain_pem, key_pem)
        vdir = self._dir(name) / "versions"
        vdir.mkdir(parents=True, exist_ok=True)
        final = vdir / info.serial
        if not final.exists():
            self._write_version(name, vdir, final, chain, info, key_pem, issuer)
        if make_current:
            self.set_current(name, info.serial)
        self._prune(name, just_put=info.serial)
        return self._read_version(name, final)

    def _write_version(self, name, vdir: Path, final: Path, chain, info, key_pem: bytes, issuer: str) -> None:
        """Everything in a temp directory, renamed into place: all or nothing."""
        tmp = Path(tempfile.mkdtemp(dir=vdir, prefix=f".{info.serial}."))
        try:
            atomic_write(tmp / "fullchain.pem", pki.to_pem(chain), 0o644)
            if self._envelope:
                atomic_write(tmp / ENCRYPTED_KEY_FILE, self._envelope.seal(name, info.serial, key_pem), 0o600)
            else:
                atomic_write(tmp / KEY_FILE, key_pem, 0o600)
            meta = new_meta(info, issuer, encrypted=self._envelope is not None)
            atomic_write(tmp / "meta.json", json.dumps(meta, indent=2).encode(), 0o644)
            os.chmod(tmp, 0o700)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def set_current(self, name: str, serial: str) -> None:
        """Point ``current`` at ``serial`` atomically (used for restores too)."""
        target = self._vdir(name, serial)
        if not (target / "meta.json").exists():
            raise StoreError(f"store: certificate '{name}' has no version with serial {serial}")
        refuse_revoked(self.label, name, serial, self.revocations(name))
        link = self._dir(name) / "current"
        tmp = link.with_name(f".current.{os.getpid()}.{time.monotonic_ns()}")
        os.symlink(Path("versions") / serial, tmp)
        os.replace(tmp, link)

    def restore_previous(self, name: str) -> StoredVersion:
        """Make the version before the current one current again."""
        prev = previous_of(self.versions(name), self.current(name))
        if prev is None:
            raise StoreError(f"store: certificate '{name}' has no previous version to restore")
        self.set_current(name, prev.serial)
        return prev

    def _prune(self, name: str, just_put: str) -> None:
        """Delete versions beyond ``keep_versions``; renamed to a dotdir first so a
        half-deleted version is never listed."""
        cur = self.current(name)
        for v in to_prune(self.versions(name), cur.serial if cur else None, self.keep_versions, just_put):
            doomed = Path(v.path).with_name(f".{v.serial}.pruned.{time.monotonic_ns()}")
            os.rename(v.path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)

    # -- revocation records --------------------------------------------------------
    def revocations(self, name: str) -> dict[str, dict]:
        try:
            return json.loads((self._dir(name) / "revocations.json").read_text())
        except FileNotFoundError:
            return {}

    def record_revocation(self, name: str, serial: str, reason: str) -> None:
        """Read-modify-write of ``<name>/revocations.json`` under its own flock (not the
        certificate lock, which the emergency flow already holds while it revokes)."""
        check_name(self.label, serial, "serial")
        d = self._dir(name)
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / ".revocations.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            revoked = self.revocations(name)
            if serial not in revoked:
                revoked[serial] = revocation_entry(reason)
                atomic_write(d / "revocations.json", json.dumps(revoked, indent=2).encode(), 0o644)
        finally:
            os.close(fd)

    # -- locking -----------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = 600.0) -> Iterator[None]:
        """Exclusive per-certificate lock across processes (flock on ``<name>/.lock``)."""
        d = self._dir(name)
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        delay = 0.01
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockTimeout(f"store: certificate '{name}' is locked by another run (waited {timeout:.0f}s)") from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
