"""The versioned local-directory store: the source of truth for issued certificates.

Layout under ``root``::

    <name>/versions/<serial>/fullchain.pem   leaf first, then intermediates
    <name>/versions/<serial>/key.pem         0600
    <name>/versions/<serial>/meta.json       CertificateInfo + issuer + stored_at
    <name>/current  -> versions/<serial>     a symlink, switched atomically (rename)
    <name>/.lock                             flock: one renewal per certificate at a time

Every issued version is kept, so the previous one can be restored. A version is written
into a temporary directory and renamed into place, and ``current`` is switched only
after the version is complete and its key matches its certificate: a half-written or
bad certificate never becomes current.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from certfleet import pki
from certfleet.fsutil import atomic_write
from certfleet.models import CertificateInfo


class StoreError(RuntimeError):
    pass


class LockTimeout(StoreError):
    pass


@dataclass(frozen=True)
class StoredVersion:
    """One issued version, as facts. The key stays on disk (see ``LocalStore.load_key``)."""

    name: str
    info: CertificateInfo
    issuer: str
    stored_at: datetime
    path: Path

    @property
    def serial(self) -> str:
        return self.info.serial


class LocalStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise StoreError(f"store: invalid certificate name '{name}'")
        return self.root / name

    # -- reading -----------------------------------------------------------------
    def current(self, name: str) -> StoredVersion | None:
        link = self._dir(name) / "current"
        if not link.is_symlink():
            return None
        return self._read_version(name, link.resolve())

    def get(self, name: str, serial: str) -> StoredVersion:
        path = self._dir(name) / "versions" / serial
        if not path.is_dir():
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
        return (self._dir(name) / "versions" / serial / "fullchain.pem").read_bytes()

    def load_key(self, name: str, serial: str) -> bytes:
        """The private key PEM. Callers keep it in local variables only."""
        return (self._dir(name) / "versions" / serial / "key.pem").read_bytes()

    def _read_version(self, name: str, path: Path) -> StoredVersion:
        meta = json.loads((path / "meta.json").read_text())
        return StoredVersion(
            name=name,
            info=CertificateInfo.from_dict(meta["info"]),
            issuer=meta.get("issuer", ""),
            stored_at=datetime.fromisoformat(meta["stored_at"]),
            path=path,
        )

    # -- writing -----------------------------------------------------------------
    def put(self, name: str, fullchain_pem: bytes, key_pem: bytes, *, issuer: str = "", make_current: bool = True) -> StoredVersion:
        """Store a new version; refuses a bundle whose key does not match its leaf."""
        chain = pki.order_chain(pki.load_certs(fullchain_pem))
        key = pki.load_private_key(key_pem)
        if not pki.key_matches(chain[0], key):
            raise StoreError(f"store: certificate '{name}': the private key does not match certificate {pki.serial_hex(chain[0])}; nothing stored")
        info = pki.describe(chain[0])
        vdir = self._dir(name) / "versions"
        vdir.mkdir(parents=True, exist_ok=True)
        final = vdir / info.serial
        if not final.exists():
            tmp = Path(tempfile.mkdtemp(dir=vdir, prefix=f".{info.serial}."))
            try:
                atomic_write(tmp / "fullchain.pem", pki.to_pem(chain), 0o644)
                atomic_write(tmp / "key.pem", key_pem, 0o600)
                meta = {"info": info.to_dict(), "issuer": issuer, "stored_at": datetime.now(timezone.utc).isoformat()}
                atomic_write(tmp / "meta.json", json.dumps(meta, indent=2).encode(), 0o644)
                os.chmod(tmp, 0o700)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        if make_current:
            self.set_current(name, info.serial)
        return self._read_version(name, final)

    def set_current(self, name: str, serial: str) -> None:
        """Point ``current`` at ``serial`` atomically (used for restores too)."""
        target = self._dir(name) / "versions" / serial
        if not (target / "meta.json").exists():
            raise StoreError(f"store: certificate '{name}' has no version with serial {serial}")
        link = self._dir(name) / "current"
        tmp = link.with_name(f".current.{os.getpid()}.{time.monotonic_ns()}")
        os.symlink(Path("versions") / serial, tmp)
        os.replace(tmp, link)

    def restore_previous(self, name: str) -> StoredVersion:
        """Make the version before the current one current again."""
        cur = self.current(name)
        older = [v for v in self.versions(name) if cur is None or v.serial != cur.serial]
        older = [v for v in older if cur is None or v.stored_at <= cur.stored_at]
        if not older:
            raise StoreError(f"store: certificate '{name}' has no previous version to restore")
        self.set_current(name, older[-1].serial)
        return older[-1]

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
