"""The storage seam: one small key-value contract that every piece of shared state goes through.

Modelled on certmagic's ``Storage`` + ``Locker`` + ``KeyBuilder`` (``storage.go``): a
backend is a flat namespace of keys holding bytes, with

- ``get(key) -> bytes`` (``NotFound``, which is also a ``KeyError``, when absent),
  ``read(key) -> Item`` (value + version token + backend timestamps),
- ``put(key, value, *, if_match=, create_only=, fence=) -> version``: a compare-and-set
  where the backend has one (S3 ``If-Match`` / ``If-None-Match``, Secrets Manager
  ``ClientRequestToken``, local: a rename under a mutex); a lost race is ``Conflict``,
- ``delete(key)`` (absent is fine), ``list(prefix) -> [keys]``, ``stat(key) -> KeyInfo``,
- ``lock(key, ttl) -> Lease``: an exclusive lease, renewed by a background thread while
  it is held, carrying a fencing token that grows by one at every acquisition.

Why a lease and not a lock with a fixed TTL: the emergency flow holds a certificate's
lock for a whole fleet rollout. A fixed TTL long enough for that keeps a crashed
holder's lock for as long; a short one is broken under a live holder. A lease is short
(``DEFAULT_LEASE_TTL``) and renewed every ``ttl / 3`` while its holder lives, so a
SIGKILLed holder loses it after one TTL and a live one never does.

Expiry is judged by the backend's clock, never the worker's: a lock record is stale when
``read_at - modified > ttl``, both timestamps taken by the backend (S3: ``LastModified``
and the response's ``Date``; Secrets Manager: the version's ``CreatedDate`` and the
response's ``Date``; local: the record's mtime and a probe file's mtime on the same
file system). Two workers whose clocks disagree by an hour still agree on who holds a
lock.

Fencing: a holder that was paused (GC, SIGSTOP, a network partition) past its TTL may
wake up after another worker took the lock over. ``put(..., fence=lease)`` and
``lease.check()`` refuse its late write with ``LeaseLost``: the lock record must still
carry the lease's owner and token, unexpired. Locally the check and the write happen
under the same mutex as a takeover, so the refusal is exact. On S3 and Secrets Manager
the check is followed by a compare-and-set on the written key: a successor's write to
that key since the check makes the stale write fail and re-check (and be refused). What
remains is a write landing between a takeover and the successor's first write to that
key — which the successor then sees when it looks again under the lock (lock, then look
again: certmagic's ``renewCert``), and its own compare-and-set catches.

Adapters: ``LocalStorage`` here (the embedded default: a directory, atomic writes, 0600
files, 0700 directories); S3 and Secrets Manager in ``certfleet.blocks.stores`` (boto3
stays out of the core). All three share ``CasStorage``'s lock, lease and fencing logic and
implement four primitives: ``_read``, ``_put``, ``_delete``, ``_list``.

``Keys`` names every piece of state; no other module builds a storage key.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL = 60.0
"""Seconds a lease lasts without renewal (renewed every ttl/3): how long a crashed
holder blocks the others. Long enough to ride out a slow backend call or two."""

DEFAULT_LOCK_TIMEOUT = 600.0


# -- errors --------------------------------------------------------------------------

class StoreError(RuntimeError):
    """Any storage failure; the message names the store, the key and the cause."""

    transient = False  # set on an instance: a later attempt may succeed (throttling, 5xx, connection)


class NotFound(StoreError, KeyError):
    """The key does not exist. Also a ``KeyError``, so ``except KeyError`` works."""

    def __str__(self) -> str:  # KeyError would quote the message
        return RuntimeError.__str__(self)


class Conflict(StoreError):
    """A compare-and-set lost: the key changed (``if_match``) or exists (``create_only``)."""


class LockTimeout(StoreError):
    pass


class LeaseLost(StoreError):
    """The lease is no longer ours (expired, or taken over): the write is refused."""


# -- values -----------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyInfo:
    key: str
    version: str
    """Opaque token that changes at every write; pass it back as ``if_match``."""
    modified: datetime
    """When the backend stored this version, by the backend's clock."""
    size: int


@dataclass(frozen=True)
class Item:
    key: str
    value: bytes
    version: str
    modified: datetime
    read_at: datetime
    """The backend's clock when it answered the read; ``read_at - modified`` is the age."""

    @property
    def age(self) -> float:
        return (self.read_at - self.modified).total_seconds()


@runtime_checkable
class Storage(Protocol):
    """The contract. Keys are '/'-separated, relative (no leading '/', no '.' segments)."""

    label: str

    def get(self, key: str) -> bytes: ...

    def read(self, key: str) -> Item: ...

    def put(self, key: str, value: bytes, *, if_match: str | None = None, create_only: bool = False,
            fence: "Lease | None" = None) -> str: ...

    def delete(self, key: str, *, fence: "Lease | None" = None) -> None: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def stat(self, key: str) -> KeyInfo: ...

    def lock(self, key: str, ttl: float = DEFAULT_LEASE_TTL, *, timeout: float = DEFAULT_LOCK_TIMEOUT) -> "Lease": ...


def check_key(label: str, key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in (".", ".."):
        raise StoreError(f"{label}: invalid storage key '{key}'")
    return key


def check_segment(label: str, value: str, what: str) -> str:
    """A name that becomes one key segment: no '/', not hidden, not reserved ('_...')."""
    if not value or "/" in value or value.startswith((".", "_")) or value != value.strip():
        raise StoreError(f"{label}: invalid {what} '{value}'")
    return value


# -- key builder ------------------------------------------------------------------------

class Keys:
    """Every storage key certfleet uses, in one place.

    Certificates sit at the top (``<name>/...``, the layout the local and S3 stores have
    always had); everything else under reserved ``_<kind>/`` prefixes, which no
    certificate name may take::

        <name>/versions/<serial>/fullchain.pem | key.pem | key.pem.enc | meta.json
        <name>/current                         body: the current serial
        <name>/revocations/<serial>.json       a revocation record
        _locks/<name>                          the certificate's lease record
        _ledger/<issuer>.json                  the rate-limit ledger of an ACME issuer
        _ari/<name>.json                       the persisted ARI renewal choice
        _accounts/<issuer>.key | .json         ACME account key and its URL/metadata
        _localca/<issuer>/<file>               local-CA state (key, certificate, serials)
        _probe/<random>                        the storage self-test's scratch key
    """

    label = "storage keys"

    @classmethod
    def _name(cls, name: str, what: str = "certificate name") -> str:
        return check_segment(cls.label, name, what)

    @classmethod
    def certificate(cls, name: str) -> str:
        return f"{cls._name(name)}/"

    @classmethod
    def versions(cls, name: str) -> str:
        return f"{cls._name(name)}/versions/"

    @classmethod
    def version(cls, name: str, serial: str, file: str) -> str:
        return f"{cls.versions(name)}{cls._name(serial, 'serial')}/{file}"

    @classmethod
    def current(cls, name: str) -> str:
        return f"{cls._name(name)}/current"

    @classmethod
    def revocations(cls, name: str) -> str:
        return f"{cls._name(name)}/revocations/"

    @classmethod
    def revocation(cls, name: str, serial: str) -> str:
        return f"{cls.revocations(name)}{cls._name(serial, 'serial')}.json"

    @classmethod
    def lock(cls, name: str) -> str:
        return f"_locks/{cls._name(name, 'lock name')}"

    @staticmethod
    def _file_safe(value: str) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in value).lstrip(".") or "_"

    @classmethod
    def ledger(cls, issuer: str) -> str:
        return f"_ledger/{cls._file_safe(issuer)}.json"

    @classmethod
    def ari(cls, name: str) -> str:
        return f"_ari/{cls._name(name)}.json"

    @classmethod
    def account_key(cls, issuer: str) -> str:
        return f"_accounts/{cls._file_safe(issuer)}.key"

    @classmethod
    def account(cls, issuer: str) -> str:
        return f"_accounts/{cls._file_safe(issuer)}.json"

    @classmethod
    def localca(cls, issuer: str, file: str) -> str:
        return f"_localca/{cls._file_safe(issuer)}/{cls._file_safe(file)}"

    @classmethod
    def probe(cls) -> str:
        return f"_probe/{uuid.uuid4().hex}"

    @staticmethod
    def is_certificate_prefix(segment: str) -> bool:
        return bool(segment) and not segment.startswith(("_", "."))


# -- the lease ------------------------------------------------------------------------------

class Lease:
    """An acquired lock: renewed in the background until released; ``token`` fences writes.

    Use as a context manager (``with storage.lock(key, ttl) as lease:``) or call
    ``release()``. ``check()`` raises ``LeaseLost`` unless the backend still shows this
    lease's owner and token, unexpired by the backend's clock.
    """

    def __init__(self, storage: "CasStorage", key: str, ttl: float, token: int, owner: str, version: str):
        self.storage, self.key, self.ttl, self.token, self.owner = storage, key, ttl, token, owner
        self._version = version
        self._renewed_mono = time.monotonic()
        self._lost: str | None = None
        self._released = False
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self.renewals = 0
        self.renew_seconds = 0.0
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease {key}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"Lease({self.key!r}, token={self.token}, ttl={self.ttl})"

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def lost(self) -> str | None:
        """Why the lease was lost, or ``None`` while it holds (as far as this worker knows)."""
        return self._lost

    def _record(self, **extra) -> bytes:
        return json.dumps({"owner": self.owner, "token": self.token, "ttl": self.ttl,
                           "host": socket.gethostname(), "pid": os.getpid(), **extra}).encode()

    def renew(self) -> None:
        """Rewrite the record (compare-and-set on our version): its backend mtime moves on."""
        with self._mutex:
            if self._released or self._lost:
                return
            start = time.perf_counter()
            try:
                self._version = self.storage._put(self.key, self._record(renewal=self.renewals + 1),
                                                  if_match=self._version, create_only=False)
            except (Conflict, NotFound):
                self._lost = f"{self.storage.label}: lock {self.key}: taken over by another holder (token {self.token} is stale)"
                log.error("%s", self._lost)
                return
            except StoreError as exc:
                if time.monotonic() - self._renewed_mono > self.ttl:
                    self._lost = f"{self.storage.label}: lock {self.key}: not renewed for {self.ttl:.0f}s ({exc})"
                    log.error("%s", self._lost)
                else:
                    log.warning("%s: lock %s: renewal failed, will retry: %s", self.storage.label, self.key, exc)
                return
            finally:
                self.renew_seconds += time.perf_counter() - start
            self.renewals += 1
            self._renewed_mono = time.monotonic()

    def _renew_loop(self) -> None:
        interval = max(self.ttl / 3, 0.01)
        while not self._stop.wait(interval):
            self.renew()
            if self._lost:
                return

    def check(self) -> None:
        """Raise ``LeaseLost`` unless the backend still holds this lease (owner, token, unexpired)."""
        if self._released:
            raise LeaseLost(f"{self.storage.label}: lock {self.key}: released; token {self.token} no longer fences writes")
        if self._lost:
            raise LeaseLost(self._lost)
        try:
            item = self.storage.read(self.key)
        except NotFound:
            raise LeaseLost(f"{self.storage.label}: lock {self.key}: the lock record is gone") from None
        rec = _parse_record(item.value)
        if rec.get("owner") != self.owner or rec.get("token") != self.token or rec.get("released"):
            raise LeaseLost(f"{self.storage.label}: lock {self.key}: held by token {rec.get('token')} now, "
                            f"not {self.token}: this holder's write is refused")
        if item.age > self.ttl:
            raise LeaseLost(f"{self.storage.label}: lock {self.key}: expired {item.age - self.ttl:.1f}s ago "
                            "by the backend's clock (not renewed): this holder's write is refused")

    def release(self) -> None:
        """Stop renewing and mark the record released (keeping the token, so the next is higher)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=max(self.ttl, 1.0))
        with self._mutex:
            if self._released:
                return
            self._released = True
            if self._lost:
                return
            try:
                self.storage._put(self.key, self._record(released=True), if_match=self._version, create_only=False)
            except (Conflict, NotFound):
                log.warning("%s: lock %s was taken over before release (token %s)", self.storage.label, self.key, self.token)


def _parse_record(value: bytes) -> dict:
    try:
        rec = json.loads(value)
        return rec if isinstance(rec, dict) else {}
    except ValueError:
        return {}


# -- shared logic over four primitives ---------------------------------------------------------

class CasStorage:
    """get/put/delete/list/stat/lock, written once over an adapter's primitives.

    An adapter implements ``_read(key) -> Item``, ``_put(key, value, if_match, create_only)
    -> version`` (raising ``Conflict`` on a lost compare-and-set), ``_delete(key)``,
    ``_list(prefix)``; optionally ``_stat`` and ``_exclusive()`` (a critical section shared
    by every writer, when the backend can offer one).
    """

    label = "storage"

    # primitives -----------------------------------------------------------------------------
    def _read(self, key: str) -> Item:  # pragma: no cover - adapters implement
        raise NotImplementedError

    def _put(self, key: str, value: bytes, *, if_match: str | None, create_only: bool) -> str:  # pragma: no cover
        raise NotImplementedError

    def _delete(self, key: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def _list(self, prefix: str) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def _stat(self, key: str) -> KeyInfo:
        item = self._read(key)
        return KeyInfo(key, item.version, item.modified, len(item.value))

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        yield

    # the contract -----------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        return self.read(key).value

    def read(self, key: str) -> Item:
        return self._read(check_key(self.label, key))

    def stat(self, key: str) -> KeyInfo:
        return self._stat(check_key(self.label, key))

    def list(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (a plain string prefix), sorted."""
        return sorted(self._list(prefix))

    def put(self, key: str, value: bytes, *, if_match: str | None = None, create_only: bool = False,
            fence: Lease | None = None) -> str:
        """Write ``value``; returns the new version token.

        ``if_match``: only if the key is still at that version; ``create_only``: only if
        absent (else ``Conflict``). ``fence``: only while ``fence`` holds (else ``LeaseLost``).
        """
        check_key(self.label, key)
        if fence is None:
            return self._put(key, bytes(value), if_match=if_match, create_only=create_only)
        with self._exclusive():
            while True:
                fence.check()
                if if_match is not None or create_only:
                    return self._put(key, bytes(value), if_match=if_match, create_only=create_only)
                try:
                    seen: str | None = self._stat(key).version
                except NotFound:
                    seen = None
                try:
                    return self._put(key, bytes(value), if_match=seen, create_only=seen is None)
                except Conflict:
                    continue  # written meanwhile (perhaps by a successor): look at the lease again

    def delete(self, key: str, *, fence: Lease | None = None) -> None:
        check_key(self.label, key)
        if fence is None:
            return self._delete(key)
        with self._exclusive():
            fence.check()
            self._delete(key)

    def lock(self, key: str, ttl: float = DEFAULT_LEASE_TTL, *, timeout: float = DEFAULT_LOCK_TIMEOUT,
             what: str | None = None) -> Lease:
        """Acquire the lease on ``key`` (waiting up to ``timeout``), renewed until released.

        A record that is released, or older than its ttl by the backend's clock, is taken
        over with a compare-and-set, token + 1; of two workers racing for it one wins.
        """
        check_key(self.label, key)
        if ttl <= 0:
            raise StoreError(f"{self.label}: lock {key}: ttl must be positive, not {ttl}")
        owner = uuid.uuid4().hex
        deadline, delay = time.monotonic() + timeout, 0.01
        while True:
            lease = self._try_lock(key, ttl, owner)
            if lease is not None:
                return lease
            if time.monotonic() > deadline:
                raise LockTimeout(f"{self.label}: {what or 'lock ' + key} is locked by another run (waited {timeout:.0f}s)")
            time.sleep(delay)
            delay = min(delay * 2, 0.5, max(ttl / 4, 0.01))

    def _try_lock(self, key: str, ttl: float, owner: str) -> Lease | None:
        def record(token: int) -> bytes:
            return json.dumps({"owner": owner, "token": token, "ttl": ttl,
                               "host": socket.gethostname(), "pid": os.getpid()}).encode()

        try:
            held = self._read(key)
        except NotFound:
            try:
                return Lease(self, key, ttl, 1, owner, self._put(key, record(1), if_match=None, create_only=True))
            except Conflict:
                return None
        rec = _parse_record(held.value)
        token = rec.get("token") if isinstance(rec.get("token"), int) else 0
        held_ttl = float(rec.get("ttl") or 0)
        if not rec.get("released") and held.age <= held_ttl:
            return None
        if not rec.get("released"):
            log.warning("%s: taking over the expired lock %s (token %s, not renewed for %.1fs by the backend's clock, ttl %.0fs)",
                        self.label, key, token, held.age, held_ttl)
        try:
            return Lease(self, key, ttl, token + 1, owner, self._put(key, record(token + 1), if_match=held.version, create_only=False))
        except (Conflict, NotFound):
            return None


# -- the local directory adapter ----------------------------------------------------------

class LocalStorage(CasStorage):
    """A directory: one file per key. Atomic writes (temp file + rename, fsync), 0600
    files, 0700 directories. Compare-and-set and fenced writes run under one ``flock``
    mutex (``<root>/.mutex``), so on one file system they are exact. The version token is
    the file's inode + mtime: every write is a new file. Backend clock: a probe file's
    mtime (``<root>/.clock``) — the file system's clock, shared by every host mounting it.
    """

    def __init__(self, root: str | Path, *, label: str = "store"):
        self.root = Path(root)
        self.label = label
        self._held = threading.local()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _ensure_root(self) -> None:
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        self._ensure_root()
        fd = os.open(self.root / ".mutex", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _now(self) -> datetime:
        self._ensure_root()
        clock = self.root / ".clock"
        try:
            os.utime(clock)
        except FileNotFoundError:
            os.close(os.open(clock, os.O_WRONLY | os.O_CREAT, 0o600))
        return datetime.fromtimestamp(clock.stat().st_mtime_ns / 1e9, timezone.utc)

    @staticmethod
    def _version(st: os.stat_result) -> str:
        return f"{st.st_ino:x}.{st.st_mtime_ns:x}"

    def _legacy_current(self, path: Path) -> bytes | None:
        """Stores written before the storage seam kept ``<name>/current`` as a symlink to
        ``versions/<serial>``: read it as the serial it points at."""
        if path.is_symlink() and path.name == "current":
            return os.readlink(path).rstrip("/").rsplit("/", 1)[-1].encode()
        return None

    def _read(self, key: str) -> Item:
        path = self._path(key)
        try:
            st = os.lstat(path)
            legacy = self._legacy_current(path)
            value = legacy if legacy is not None else path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{self.label}: no key {key}") from None
        except IsADirectoryError:
            raise NotFound(f"{self.label}: no key {key} (a directory)") from None
        except PermissionError as exc:
            raise StoreError(f"{self.label}: read {key}: permission denied ({exc.filename})") from None
        return Item(key, value, self._version(st), datetime.fromtimestamp(st.st_mtime_ns / 1e9, timezone.utc), self._now())

    def get(self, key: str) -> bytes:
        """The value only: no clock probe (``read`` takes one for the age)."""
        path = self._path(check_key(self.label, key))
        try:
            legacy = self._legacy_current(path)
            return legacy if legacy is not None else path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"{self.label}: no key {key}") from None
        except PermissionError as exc:
            raise StoreError(f"{self.label}: read {key}: permission denied ({exc.filename})") from None

    def _stat(self, key: str) -> KeyInfo:
        try:
            st = os.lstat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{self.label}: no key {key}") from None
        return KeyInfo(key, self._version(st), datetime.fromtimestamp(st.st_mtime_ns / 1e9, timezone.utc), st.st_size)

    def _mkdirs(self, path: Path) -> None:
        self._ensure_root()
        missing = []
        p = path
        while not p.is_dir():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):
                d.mkdir(mode=0o700)

    def _put(self, key: str, value: bytes, *, if_match: str | None, create_only: bool) -> str:
        path = self._path(key)
        try:
            self._mkdirs(path.parent)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        except OSError as exc:
            raise StoreError(f"{self.label}: write {key}: {exc.strerror} ({exc.filename or self.root})") from None
        try:
            with os.fdopen(fd, "wb") as f:  # mkstemp: 0600 from the start, never readable by others
                f.write(value)
                f.flush()
                os.fsync(f.fileno())
            with self._exclusive():
                if create_only or if_match is not None:
                    try:
                        seen = self._version(os.lstat(path))
                    except FileNotFoundError:
                        seen = None
                    if create_only and seen is not None:
                        raise Conflict(f"{self.label}: {key} exists")
                    if if_match is not None and seen != if_match:
                        raise Conflict(f"{self.label}: {key} changed (version {seen}, expected {if_match})")
                os.replace(tmp, path)
                return self._version(os.lstat(path))
        except OSError as exc:
            raise StoreError(f"{self.label}: write {key}: {exc.strerror}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _delete(self, key: str) -> None:
        path = self._path(key)
        with self._exclusive():
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                return
            except IsADirectoryError:
                raise StoreError(f"{self.label}: delete {key}: is a directory") from None
        # drop empty parent directories, up to the root
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    break
                raise
            parent = parent.parent

    def _list(self, prefix: str) -> list[str]:
        """Keys under ``prefix``; hidden files (temp files, the mutex, old lock files) are not keys."""
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._path(base_dir) if base_dir else self.root
        if not start.is_dir():
            return []
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and not os.path.islink(os.path.join(dirpath, d))]
            rel = os.path.relpath(dirpath, self.root)
            for f in filenames + [d for d in os.listdir(dirpath) if d == "current" and os.path.islink(os.path.join(dirpath, d))]:
                if f.startswith("."):
                    continue
                key = f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
                if key.startswith(prefix):
                    found.append(key)
        return sorted(set(found))
