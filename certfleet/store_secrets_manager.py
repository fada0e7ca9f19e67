"""The certificate store in AWS Secrets Manager: one secret per certificate, one secret
version per certificate version.

Why one secret per certificate (not one per version): Secrets Manager already versions a
secret, and ``AWSCURRENT`` is exactly "the current version" — readers outside certfleet
(an app, an init container) fetch ``<prefix><name>`` and get the current certificate
with no certfleet code. ``AWSPREVIOUS`` follows ``AWSCURRENT`` by itself.

Each stored version::

    secret  <prefix><name>
    version VersionId = uuid5(name, serial)            deterministic: put is idempotent
            staging label  serial-<serial>              keeps it (unlabelled versions are
                                                        deleted by AWS) and finds it by serial
            SecretString   {"format": "certfleet-store-version", "fullchain": PEM,
                            "key": PEM | "key_envelope": envelope, "meta": {...}}
    AWSCURRENT on the current version; set_current / restore move it.

Retention removes a version's ``serial-`` label; AWS then deletes the unlabelled
version itself (there is no API to delete one version). AWS caps the staging labels of
a secret (20 at the time of writing, AWSCURRENT and AWSPREVIOUS included), hence
``keep_versions`` at most ``MAX_KEEP_VERSIONS``.

Revocation records: a companion secret ``<prefix><name>/revocations`` whose value is
``{serial: {"reason", "at"}}``, updated with the same token trick as the lock.

Lock: a companion secret ``<prefix><name>/lock`` whose value is ``{"owner", "expires"}``.
Secrets Manager has no conditional write, but a ``ClientRequestToken`` that already names
a version with a different value is refused. Taking the lock writes the next version
with the token ``uuid5(<current lock version id>)``: of two runs racing from the same
lock state, exactly one succeeds. Release writes ``expires: 0`` the same way, so a
holder that overran ``lock_ttl`` cannot release its successor's lock. The Secrets
Manager encryption (KMS, ``kms_key_id`` or the account's ``aws/secretsmanager`` key)
applies to every version; with an encryption key the private key is also sealed client
side.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Iterator

from botocore.exceptions import ClientError

from certfleet import pki
from certfleet.store import (
    DEFAULT_KEEP_VERSIONS,
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
from certfleet.store_s3 import DEFAULT_LOCK_TTL, aws_call, error_code

log = logging.getLogger(__name__)

MAX_KEEP_VERSIONS = 18
VALUE_FORMAT = "certfleet-store-version"
TAG = {"Key": "certfleet", "Value": "store"}
_NS = uuid.UUID("5b0e3c1e-6a43-4c55-9b7e-2f1d8f0c9a11")
_MISSING = {"ResourceNotFoundException"}
_TAKEN = {"ResourceExistsException"}


def _label(serial: str) -> str:
    return f"serial-{serial}"


def _serial_of(stages: list[str]) -> str | None:
    return next((s[len("serial-"):] for s in stages if s.startswith("serial-")), None)


class SecretsManagerCertificateStore:
    """``CertificateStore`` over secrets named ``<prefix><name>``, via a boto3 client."""

    def __init__(self, client, prefix: str = "certfleet/", *, kms_key_id: str | None = None,
                 keep_versions: int | None = DEFAULT_KEEP_VERSIONS,
                 encryption_keys: Sequence[bytes] | None = None, lock_ttl: float = DEFAULT_LOCK_TTL):
        self.sm, self.prefix, self.kms_key_id = client, prefix, kms_key_id
        self.label = f"secrets-manager store '{prefix}'"
        if keep_versions is None or keep_versions > MAX_KEEP_VERSIONS:
            raise StoreError(f"{self.label}: keep_versions must be at most {MAX_KEEP_VERSIONS} "
                             "(Secrets Manager caps the staging labels of a secret)")
        self.keep_versions = check_keep(keep_versions)
        self.lock_ttl = lock_ttl
        self._envelope = envelope_for(encryption_keys)

    def __repr__(self) -> str:
        return f"SecretsManagerCertificateStore({self.prefix!r})"

    def _secret(self, name: str) -> str:
        return self.prefix + check_name(self.label, name)

    def _vid(self, name: str, serial: str) -> str:
        return str(uuid.uuid5(_NS, f"{name}\0{serial}"))

    def _stages(self, name: str) -> dict[str, list[str]]:
        """VersionId -> staging labels; empty when the secret does not exist yet."""
        with aws_call(self.label, f"describe {self._secret(name)}"):
            try:
                return self.sm.describe_secret(SecretId=self._secret(name)).get("VersionIdsToStages", {})
            except ClientError as exc:
                if error_code(exc) in _MISSING:
                    return {}
                raise

    def _value(self, name: str, stage: str) -> dict | None:
        """The parsed value of the version carrying ``stage``; ``None`` if there is none."""
        with aws_call(self.label, f"read {self._secret(name)} ({stage})"):
            try:
                resp = self.sm.get_secret_value(SecretId=self._secret(name), VersionStage=stage)
            except ClientError as exc:
                if error_code(exc) in _MISSING:
                    return None
                raise
        try:
            value = json.loads(resp["SecretString"])
            assert value["format"] == VALUE_FORMAT
            return value
        except (KeyError, ValueError, TypeError, AssertionError):
            raise StoreError(f"{self.label}: secret {self._secret(name)} ({stage}) is not a certfleet store version") from None

    def _version(self, name: str, serial: str) -> dict:
        value = self._value(name, _label(serial))
        if value is None:
            raise StoreError(f"{self.label}: certificate '{name}' has no version with serial {serial}")
        return value

    # -- reading -----------------------------------------------------------------
    def current(self, name: str) -> StoredVersion | None:
        value = self._value(name, "AWSCURRENT")
        return self._stored(name, value) if value else None

    def get(self, name: str, serial: str) -> StoredVersion:
        return self._stored(name, self._version(name, serial))

    def _stored(self, name: str, value: dict) -> StoredVersion:
        serial = value["meta"]["info"]["serial"]
        return version_from_meta(name, value["meta"], f"secretsmanager:{self._secret(name)}#{_label(serial)}")

    def versions(self, name: str) -> list[StoredVersion]:
        """All kept versions (those with a ``serial-`` label), oldest first."""
        serials = [s for s in map(_serial_of, self._stages(name).values()) if s]
        return sorted((self.get(name, s) for s in serials), key=lambda v: (v.stored_at, v.serial))

    def names(self) -> list[str]:
        filters = [{"Key": "tag-key", "Values": [TAG["Key"]]}]
        if self.prefix:
            filters.append({"Key": "name", "Values": [self.prefix]})
        found = []
        with aws_call(self.label, "list secrets"):
            for page in self.sm.get_paginator("list_secrets").paginate(Filters=filters):
                found += [s["Name"][len(self.prefix):] for s in page["SecretList"] if s["Name"].startswith(self.prefix)]
        return sorted(n for n in found if n and "/" not in n)

    def load_fullchain(self, name: str, serial: str) -> bytes:
        return self._version(name, serial)["fullchain"].encode()

    def load_key(self, name: str, serial: str) -> bytes:
        """The private key PEM, decrypted when sealed. Keep it in locals only."""
        value = self._version(name, serial)
        if "key_envelope" in value:
            return open_key(self.label, self._envelope, name, serial, value["key_envelope"].encode())
        return value["key"].encode()

    # -- writing -----------------------------------------------------------------
    def put(self, name: str, fullchain_pem: bytes, key_pem: bytes, *, issuer: str = "",
            make_current: bool = True) -> StoredVersion:
        """Store a new secret version labelled ``serial-<serial>``; AWSCURRENT moves only
        when ``make_current`` (or when it is the secret's first version)."""
        chain, info = check_bundle(self.label, name, fullchain_pem, key_pem)
        stages = self._stages(name)
        if not stages:
            self._create(name)
        if _label(info.serial) not in stages.get(self._vid(name, info.serial), []):
            self._put_version(name, info, self._encode(name, info, chain, key_pem, issuer))
        if make_current:
            self.set_current(name, info.serial)
        self._prune(name, just_put=info.serial)
        return self.get(name, info.serial)

    def _encode(self, name: str, info, chain, key_pem: bytes, issuer: str) -> str:
        value = {"format": VALUE_FORMAT, "fullchain": pki.to_pem(chain).decode(),
                 "meta": new_meta(info, issuer, encrypted=self._envelope is not None)}
        if self._envelope:
            value["key_envelope"] = self._envelope.seal(name, info.serial, key_pem).decode()
        else:
            value["key"] = key_pem.decode()
        return json.dumps(value)

    def _create(self, name: str) -> None:
        """An empty secret (no version yet); a concurrent creation is fine."""
        kms = {"KmsKeyId": self.kms_key_id} if self.kms_key_id else {}
        with aws_call(self.label, f"create {self._secret(name)}"):
            with contextlib.suppress(self.sm.exceptions.ResourceExistsException):
                self.sm.create_secret(Name=self._secret(name), Tags=[TAG], **kms,
                                      Description=f"certfleet: certificate '{name}' (versions labelled serial-<serial>)")

    def _put_version(self, name: str, info, value: str) -> None:
        """A version with a deterministic id; if it exists (a pruned serial put again),
        only its label is re-attached."""
        vid, label = self._vid(name, info.serial), _label(info.serial)
        with aws_call(self.label, f"write {self._secret(name)} serial {info.serial}"):
            try:
                self.sm.put_secret_value(SecretId=self._secret(name), ClientRequestToken=vid,
                                         SecretString=value, VersionStages=[label])
            except ClientError as exc:
                if error_code(exc) not in _TAKEN:
                    raise
                self.sm.update_secret_version_stage(SecretId=self._secret(name), VersionStage=label, MoveToVersionId=vid)

    def set_current(self, name: str, serial: str) -> None:
        """Move AWSCURRENT to the version of ``serial`` (AWS moves AWSPREVIOUS itself)."""
        stages, vid = self._stages(name), self._vid(name, serial)
        if _label(serial) not in stages.get(vid, []):
            raise StoreError(f"{self.label}: certificate '{name}' has no version with serial {serial}")
        refuse_revoked(self.label, name, serial, self.revocations(name))
        cur = next((v for v, s in stages.items() if "AWSCURRENT" in s), None)
        if cur == vid:
            return
        move = {"RemoveFromVersionId": cur} if cur else {}
        with aws_call(self.label, f"set AWSCURRENT of {self._secret(name)} to serial {serial}"):
            self.sm.update_secret_version_stage(SecretId=self._secret(name), VersionStage="AWSCURRENT",
                                                MoveToVersionId=vid, **move)

    def restore_previous(self, name: str) -> StoredVersion:
        prev = previous_of(self.versions(name), self.current(name))
        if prev is None:
            raise StoreError(f"{self.label}: certificate '{name}' has no previous version to restore")
        self.set_current(name, prev.serial)
        return prev

    def _prune(self, name: str, just_put: str) -> None:
        """Remove the ``serial-`` label of versions beyond ``keep_versions``; AWS deletes them."""
        cur = self.current(name)
        for v in to_prune(self.versions(name), cur.serial if cur else None, self.keep_versions, just_put):
            with aws_call(self.label, f"unlabel {self._secret(name)} serial {v.serial}"):
                self.sm.update_secret_version_stage(SecretId=self._secret(name), VersionStage=_label(v.serial),
                                                    RemoveFromVersionId=self._vid(name, v.serial))
            log.info("%s: certificate '%s': pruned serial %s", self.label, name, v.serial)

    # -- revocation records --------------------------------------------------------
    def _revocations_value(self, name: str) -> tuple[dict, str | None]:
        secret = self._secret(name) + "/revocations"
        with aws_call(self.label, f"read {secret}"):
            try:
                resp = self.sm.get_secret_value(SecretId=secret, VersionStage="AWSCURRENT")
            except ClientError as exc:
                if error_code(exc) in _MISSING:
                    return {}, None
                raise
        return json.loads(resp["SecretString"]), resp["VersionId"]

    def revocations(self, name: str) -> dict[str, dict]:
        return self._revocations_value(name)[0]

    def record_revocation(self, name: str, serial: str, reason: str) -> None:
        """The next version of the companion secret, written with a token derived from the
        version read (or created): of two runs recording at once, one retries and both land."""
        check_name(self.label, serial, "serial")
        secret = self._secret(name) + "/revocations"
        kms = {"KmsKeyId": self.kms_key_id} if self.kms_key_id else {}
        for _ in range(50):
            revoked, vid = self._revocations_value(name)
            if serial in revoked:
                return
            revoked[serial] = revocation_entry(reason)
            body = json.dumps(revoked)
            with aws_call(self.label, f"write {secret}"):
                try:
                    if vid is None:
                        self.sm.create_secret(Name=secret, SecretString=body, Tags=[TAG], **kms,
                                              ClientRequestToken=str(uuid.uuid4()))
                    else:
                        self.sm.put_secret_value(SecretId=secret, SecretString=body,
                                                 ClientRequestToken=str(uuid.uuid5(_NS, f"revocations-after\0{vid}")))
                    return
                except ClientError as exc:
                    if error_code(exc) not in _TAKEN:
                        raise
            time.sleep(0.05)  # another run wrote first: read again
        raise StoreError(f"{self.label}: {secret}: could not record the revocation of {serial} (kept losing the race)")

    # -- locking -----------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = 600.0) -> Iterator[None]:
        """Exclusive per-certificate lock; a crashed holder's lock is broken after ``lock_ttl``."""
        secret = self._secret(name) + "/lock"
        deadline, delay = time.monotonic() + timeout, 0.05
        while True:
            with aws_call(self.label, f"lock {secret}"):
                mine = self._try_lock(secret)
            if mine is not None:
                break
            if time.monotonic() > deadline:
                raise LockTimeout(f"{self.label}: certificate '{name}' is locked by another run (waited {timeout:.0f}s)")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        try:
            yield
        finally:
            self._unlock(secret, mine)

    def _lock_body(self, ttl: float) -> str:
        expires = datetime.now(timezone.utc).timestamp() + ttl if ttl else 0
        return json.dumps({"owner": uuid.uuid4().hex, "expires": expires})

    def _try_lock(self, secret: str) -> str | None:
        """The version id of our lock, or ``None`` while another run holds it."""
        token = str(uuid.uuid4())
        kms = {"KmsKeyId": self.kms_key_id} if self.kms_key_id else {}
        try:
            self.sm.create_secret(Name=secret, SecretString=self._lock_body(self.lock_ttl),
                                  ClientRequestToken=token, Tags=[TAG], **kms)
            return token
        except ClientError as exc:
            if error_code(exc) not in _TAKEN:
                raise
        held = self.sm.get_secret_value(SecretId=secret, VersionStage="AWSCURRENT")
        if float(json.loads(held["SecretString"]).get("expires") or 0) > datetime.now(timezone.utc).timestamp():
            return None
        return self._next_version(secret, held["VersionId"], self._lock_body(self.lock_ttl))

    def _next_version(self, secret: str, after: str, body: str) -> str | None:
        """Write the version that follows ``after``; ``None`` if another run wrote it first."""
        token = str(uuid.uuid5(_NS, f"lock-after\0{after}"))
        try:
            self.sm.put_secret_value(SecretId=secret, ClientRequestToken=token, SecretString=body)
            return token
        except ClientError as exc:
            if error_code(exc) in _TAKEN:
                return None
            raise

    def _unlock(self, secret: str, mine: str) -> None:
        with aws_call(self.label, f"unlock {secret}"):
            if self._next_version(secret, mine, self._lock_body(0)) is None:
                log.warning("%s: lock %s was taken over before release (held longer than lock_ttl=%ss)",
                            self.label, secret, self.lock_ttl)
