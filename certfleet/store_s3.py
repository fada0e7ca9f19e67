"""The certificate store in an S3 bucket: the same versions as ``LocalStore``, as objects.

Layout, under ``prefix`` (used verbatim, so it usually ends with ``/``)::

    <prefix><name>/versions/<serial>/fullchain.pem
    <prefix><name>/versions/<serial>/key.pem  or  key.pem.enc   (envelope, see certfleet.store)
    <prefix><name>/versions/<serial>/meta.json                  written last: its presence = complete
    <prefix><name>/current                                      body: the current serial
    <prefix><name>/lock                                         body: {"owner", "expires"}
    <prefix><name>/revocations.json                             serial -> {"reason", "at"}

Every put carries server-side encryption (``AES256`` or ``aws:kms``); with an encryption
key the private key is also sealed client side, so a reader of the bucket without the
store key gets no key material.

The lock is S3's conditional write: ``PutObject`` with ``If-None-Match: *`` creates the
lock object only if there is none. A holder that crashed leaves an object whose
``expires`` has passed; it is taken over with ``If-Match: <its ETag>`` so that of two
runs breaking the same stale lock exactly one wins. Release deletes with ``If-Match``
(our ETag), so a holder that overran ``lock_ttl`` cannot delete its successor's lock.
``lock_ttl`` must therefore exceed the longest renewal. moto (5.x) implements both
conditions, which is what the tests run against.

This core module takes a boto3 S3 client; the Prefect block ``blocks.stores.s3.S3Store``
builds one from its credentials.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Iterator

from botocore.exceptions import BotoCoreError, ClientError

from certfleet import pki
from certfleet.store import (
    DEFAULT_KEEP_VERSIONS,
    ENCRYPTED_KEY_FILE,
    KEY_FILE,
    LockTimeout,
    StoredVersion,
    StoreError,
    check_bundle,
    check_keep,
    check_name,
    envelope_for,
    new_meta,
    open_key,
    previous_of,
    refuse_revoked,
    revocation_entry,
    to_prune,
    version_from_meta,
)

log = logging.getLogger(__name__)

DEFAULT_LOCK_TTL = 1800.0
_MISSING = {"NoSuchKey", "404", "NotFound"}
_LOST_RACE = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_TRANSIENT = {"Throttling", "ThrottlingException", "SlowDown", "RequestTimeout", "InternalError",
              "InternalFailure", "InternalServiceError", "ServiceUnavailable", "503", "500"}
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(-----END [A-Z0-9 ]+-----|$)", re.DOTALL)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


def explain(exc: BaseException) -> str:
    """'AccessDenied: Access Denied' with any PEM text cut out of AWS's message."""
    message = str(exc.response.get("Error", {}).get("Message") or "") if isinstance(exc, ClientError) else str(exc)
    message = _PEM.sub("<pem redacted>", message).strip()
    return f"{error_code(exc)}: {message}" if message else error_code(exc)


@contextlib.contextmanager
def aws_call(label: str, action: str) -> Iterator[None]:
    """botocore failures become ``StoreError("<label>: <action>: <Code>: <message>")``.

    Connection errors and AWS throttling/5xx are marked ``transient`` so a task's retry
    condition retries them; ``from None`` keeps request parameters out of tracebacks.
    """
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        err = StoreError(f"{label}: {action}: {explain(exc)}")
        err.transient = isinstance(exc, BotoCoreError) or error_code(exc) in _TRANSIENT  # type: ignore[attr-defined]
        raise err from None


class S3CertificateStore:
    """``CertificateStore`` over one bucket + prefix, through a boto3 S3 client."""

    def __init__(self, client, bucket: str, prefix: str = "", *,
                 server_side_encryption: str | None = "AES256", kms_key_id: str | None = None,
                 keep_versions: int | None = DEFAULT_KEEP_VERSIONS,
                 encryption_keys: Sequence[bytes] | None = None, lock_ttl: float = DEFAULT_LOCK_TTL):
        self.s3, self.bucket, self.prefix = client, bucket, prefix
        self.label = f"s3 store 's3://{bucket}/{prefix}'"
        self.sse = {"ServerSideEncryption": server_side_encryption} if server_side_encryption else {}
        if kms_key_id:
            self.sse["SSEKMSKeyId"] = kms_key_id
        self.keep_versions = check_keep(keep_versions)
        self.lock_ttl = lock_ttl
        self._envelope = envelope_for(encryption_keys)

    def __repr__(self) -> str:
        return f"S3CertificateStore('s3://{self.bucket}/{self.prefix}')"

    # -- object helpers ----------------------------------------------------------
    def _key(self, name: str, *parts: str) -> str:
        return "/".join([self.prefix + check_name(self.label, name), *parts])

    def _vkey(self, name: str, serial: str, file: str) -> str:
        return self._key(name, "versions", check_name(self.label, serial, "serial"), file)

    def _read(self, key: str) -> bytes | None:
        """The object's bytes; ``None`` when it does not exist (other errors raise)."""
        with aws_call(self.label, f"read {key}"):
            try:
                return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if error_code(exc) in _MISSING:
                    return None
                raise

    def _write(self, key: str, body: bytes, **conditions) -> dict:
        with aws_call(self.label, f"write {key}"):
            return self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, **self.sse, **conditions)

    def _list(self, prefix: str, **kw) -> Iterator[dict]:
        with aws_call(self.label, f"list {prefix}"):
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, **kw):
                yield page

    # -- reading -----------------------------------------------------------------
    def current(self, name: str) -> StoredVersion | None:
        serial = self._read(self._key(name, "current"))
        return self.get(name, serial.decode().strip()) if serial else None

    def get(self, name: str, serial: str) -> StoredVersion:
        meta = self._read(self._vkey(name, serial, "meta.json"))
        if meta is None:
            raise StoreError(f"{self.label}: certificate '{name}' has no version with serial {serial}")
        return version_from_meta(name, json.loads(meta), f"s3://{self.bucket}/{self._key(name, 'versions', serial)}/")

    def versions(self, name: str) -> list[StoredVersion]:
        """All stored versions, oldest first (one read per version: meta.json)."""
        serials = []
        for page in self._list(self._key(name, "versions", "")):
            serials += [o["Key"].split("/")[-2] for o in page.get("Contents", []) if o["Key"].endswith("/meta.json")]
        found = [self.get(name, s) for s in serials]
        return sorted(found, key=lambda v: (v.stored_at, v.serial))

    def names(self) -> list[str]:
        names = []
        for page in self._list(self.prefix, Delimiter="/"):
            names += [p["Prefix"][len(self.prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(names)

    def load_fullchain(self, name: str, serial: str) -> bytes:
        body = self._read(self._vkey(name, serial, "fullchain.pem"))
        if body is None:
            raise StoreError(f"{self.label}: certificate '{name}' has no version with serial {serial}")
        return body

    def load_key(self, name: str, serial: str) -> bytes:
        """The private key PEM, decrypted when sealed. Keep it in locals only."""
        sealed = self._read(self._vkey(name, serial, ENCRYPTED_KEY_FILE))
        if sealed is not None:
            return open_key(self.label, self._envelope, name, serial, sealed)
        plain = self._read(self._vkey(name, serial, KEY_FILE))
        if plain is None:
            raise StoreError(f"{self.label}: certificate '{name}' has no key for serial {serial}")
        return plain

    # -- writing -----------------------------------------------------------------
    def put(self, name: str, fullchain_pem: bytes, key_pem: bytes, *, issuer: str = "",
            make_current: bool = True) -> StoredVersion:
        """Store a new version (meta.json last); refuses a key that does not match the leaf."""
        chain, info = check_bundle(self.label, name, fullchain_pem, key_pem)
        if self._read(self._vkey(name, info.serial, "meta.json")) is None:
            self._write(self._vkey(name, info.serial, "fullchain.pem"), pki.to_pem(chain))
            if self._envelope:
                self._write(self._vkey(name, info.serial, ENCRYPTED_KEY_FILE), self._envelope.seal(name, info.serial, key_pem))
            else:
                self._write(self._vkey(name, info.serial, KEY_FILE), key_pem)
            meta = new_meta(info, issuer, encrypted=self._envelope is not None)
            self._write(self._vkey(name, info.serial, "meta.json"), json.dumps(meta, indent=2).encode())
        if make_current:
            self.set_current(name, info.serial)
        self._prune(name, just_put=info.serial)
        return self.get(name, info.serial)

    def set_current(self, name: str, serial: str) -> None:
        """One PUT of the ``current`` object: S3 makes it visible atomically."""
        self.get(name, serial)  # refuses an unknown serial
        refuse_revoked(self.label, name, serial, self.revocations(name))
        self._write(self._key(name, "current"), serial.encode())

    def restore_previous(self, name: str) -> StoredVersion:
        prev = previous_of(self.versions(name), self.current(name))
        if prev is None:
            raise StoreError(f"{self.label}: certificate '{name}' has no previous version to restore")
        self.set_current(name, prev.serial)
        return prev

    def _prune(self, name: str, just_put: str) -> None:
        """Delete versions beyond ``keep_versions``; meta.json first, so a half-deleted
        version is no longer listed."""
        cur = self.current(name)
        for v in to_prune(self.versions(name), cur.serial if cur else None, self.keep_versions, just_put):
            for file in ("meta.json", "fullchain.pem", ENCRYPTED_KEY_FILE, KEY_FILE):
                key = self._vkey(name, v.serial, file)
                with aws_call(self.label, f"delete {key}"):
                    self.s3.delete_object(Bucket=self.bucket, Key=key)
            log.info("%s: certificate '%s': pruned serial %s", self.label, name, v.serial)

    # -- revocation records --------------------------------------------------------
    def revocations(self, name: str) -> dict[str, dict]:
        body = self._read(self._key(name, "revocations.json"))
        return json.loads(body) if body else {}

    def record_revocation(self, name: str, serial: str, reason: str) -> None:
        """Compare-and-set on the object's ETag (``If-None-Match: *`` for the first one),
        so two runs recording at once both land."""
        check_name(self.label, serial, "serial")
        key = self._key(name, "revocations.json")
        for _ in range(50):
            with aws_call(self.label, f"read {key}"):
                try:
                    held = self.s3.get_object(Bucket=self.bucket, Key=key)
                    revoked, cond = json.loads(held["Body"].read()), {"IfMatch": held["ETag"]}
                except ClientError as exc:
                    if error_code(exc) not in _MISSING:
                        raise
                    revoked, cond = {}, {"IfNoneMatch": "*"}
            if serial in revoked:
                return
            revoked[serial] = revocation_entry(reason)
            with aws_call(self.label, f"write {key}"):
                try:
                    self.s3.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(revoked, indent=2).encode(),
                                       **self.sse, **cond)
                    return
                except ClientError as exc:
                    if error_code(exc) not in _LOST_RACE:
                        raise
            time.sleep(0.05)  # another run wrote it between our read and write: read again
        raise StoreError(f"{self.label}: {key}: could not record the revocation of {serial} (kept losing the race)")

    # -- locking -----------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = 600.0) -> Iterator[None]:
        """Exclusive per-certificate lock: a conditional PUT, broken only after ``lock_ttl``."""
        key = self._key(name, "lock")
        deadline, delay = time.monotonic() + timeout, 0.05
        while True:
            with aws_call(self.label, f"lock {key}"):  # connection errors; AWS errors handled inside
                etag = self._try_lock(key)
            if etag is not None:
                break
            if time.monotonic() > deadline:
                raise LockTimeout(f"{self.label}: certificate '{name}' is locked by another run (waited {timeout:.0f}s)")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        try:
            yield
        finally:
            self._unlock(key, etag)

    def _lock_body(self) -> bytes:
        expires = datetime.now(timezone.utc).timestamp() + self.lock_ttl
        return json.dumps({"owner": uuid.uuid4().hex, "expires": expires}).encode()

    def _try_lock(self, key: str) -> str | None:
        """Our lock's ETag, or ``None`` while someone else holds a live lock."""
        try:
            return self.s3.put_object(Bucket=self.bucket, Key=key, Body=self._lock_body(),
                                      IfNoneMatch="*", **self.sse)["ETag"]
        except ClientError as exc:
            if error_code(exc) not in _LOST_RACE:
                raise StoreError(f"{self.label}: lock {key}: {explain(exc)}") from None
        try:
            return self._take_over_if_stale(key)
        except ClientError as exc:
            if error_code(exc) in _LOST_RACE | _MISSING:
                return None  # another run broke it first, or the holder released: try again
            raise StoreError(f"{self.label}: lock {key}: {explain(exc)}") from None

    def _take_over_if_stale(self, key: str) -> str | None:
        """Replace a lock whose holder's ``expires`` has passed, conditionally on its ETag."""
        held = self.s3.get_object(Bucket=self.bucket, Key=key)
        try:
            expires = float(json.loads(held["Body"].read())["expires"])
        except (ValueError, KeyError, TypeError):
            expires = 0.0  # unreadable lock object: treat as stale
        if expires > datetime.now(timezone.utc).timestamp():
            return None
        log.warning("%s: breaking the stale lock %s (expired %s)", self.label, key,
                    datetime.fromtimestamp(expires, timezone.utc).isoformat())
        return self.s3.put_object(Bucket=self.bucket, Key=key, Body=self._lock_body(),
                                  IfMatch=held["ETag"], **self.sse)["ETag"]

    def _unlock(self, key: str, etag: str) -> None:
        try:  # a BotoCoreError here propagates: the lock then expires after lock_ttl
            self.s3.delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        except ClientError as exc:
            if error_code(exc) not in _LOST_RACE | _MISSING:
                raise StoreError(f"{self.label}: unlock {key}: {explain(exc)}") from None
            log.warning("%s: lock %s was taken over before release (held longer than lock_ttl=%ss)",
                        self.label, key, self.lock_ttl)
