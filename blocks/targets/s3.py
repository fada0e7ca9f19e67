"""Target block: PEM objects in an S3 bucket (fleets that pull their certificate at boot).

Objects, all under ``key_prefix`` (used verbatim, so it usually ends with ``/``):
``privkey.pem`` (unless ``include_key`` is false), ``cert.pem`` and ``chain.pem`` (when
``split_files``), and ``fullchain.pem``. Each carries the metadata ``serial``,
``certificate`` and ``not-after`` and is written with server-side encryption.

Deploy = back up → write the key → write the split files → write ``fullchain.pem``.
The full chain goes last because it is the object readers (and ``current()``) key on: a
reader that sees the new chain is sure to find the new key beside it.

Backups are copies under ``<prefix>previous/`` rather than bucket versioning: they work
on every bucket whatever its versioning setting, need no ListObjectVersions permission,
and make ``rollback()`` one deterministic copy per object. If a write fails, the objects
are put back from that backup (or removed, when there was nothing before) and the error
is raised.

Permissions needed on ``<prefix>*``: s3:GetObject, s3:PutObject, s3:DeleteObject (to
clear a stale backup), plus kms:GenerateDataKey/kms:Decrypt on the key with aws:kms.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from typing import Literal

from botocore.exceptions import ClientError
from prefect.blocks.core import Block
from pydantic import Field, model_validator

from certfleet.blocks.aws import AwsCredentials, aws_errors, error_code
from certfleet.blocks.targets.file import TargetError
from certfleet import pki
from certfleet.contracts import DeployBundle
from certfleet.models import Receipt

KEY, CERT, CHAIN, FULLCHAIN = "privkey.pem", "cert.pem", "chain.pem", "fullchain.pem"
BACKUP_DIR = "previous/"
_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3Target(Block):
    _block_type_name = "certfleet S3 target"
    _block_type_slug = "certfleet-s3-target"
    _description = "Writes the key and full chain as PEM objects to an S3 bucket, with server-side encryption."

    bucket: str = Field(description="Bucket that holds the objects")
    key_prefix: str = Field("", description="Prefix of every object key, used verbatim (e.g. 'certs/www/'): objects are <prefix>fullchain.pem, <prefix>privkey.pem, ...")
    server_side_encryption: Literal["AES256", "aws:kms"] | None = Field("AES256", description="SSE algorithm for every object; None leaves it to the bucket's default encryption")
    kms_key_id: str | None = Field(None, description="KMS key ID or ARN when server_side_encryption is 'aws:kms'; AWS's managed key when unset")
    include_key: bool = Field(True, description="Write privkey.pem; false when readers get the key another way")
    split_files: bool = Field(False, description="Also write cert.pem (leaf only) and chain.pem (intermediates only)")
    credentials: AwsCredentials = Field(default_factory=AwsCredentials, description="How to reach AWS (region, keys or profile, endpoint)")

    @model_validator(mode="after")
    def _kms_needs_kms(self) -> "S3Target":
        if self.kms_key_id and self.server_side_encryption != "aws:kms":
            raise ValueError("kms_key_id is only used with server_side_encryption 'aws:kms'")
        return self

    def _label(self) -> str:
        return f"s3 target '{self._url()}'"

    def _names(self) -> list[str]:
        """Object names in write order: key first, full chain last."""
        names = [KEY] if self.include_key else []
        names += [CERT, CHAIN] if self.split_files else []
        return names + [FULLCHAIN]

    def _url(self) -> str:
        return f"s3://{self.bucket}/{self.key_prefix}"

    def current(self) -> str | None:
        return self._held(self.credentials.get_client("s3"))

    def deploy(self, bundle: DeployBundle) -> Receipt:
        chain = pki.order_chain(pki.load_certs(bundle.fullchain_pem))
        contents = self._contents(bundle, chain)
        meta = {"serial": bundle.serial, "certificate": bundle.certificate,
                "not-after": chain[0].not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")}
        s3 = self.credentials.get_client("s3")
        backed_up = self._held(s3) != bundle.serial  # same serial again: keep the real backup
        if backed_up:
            self._backup(s3)
        try:
            for name in self._names():
                self._put(s3, name, contents[name], meta)
        except TargetError:
            if backed_up:
                self._restore(s3)
            raise
        return Receipt(target=self._url(), certificate=bundle.certificate, serial=bundle.serial,
                       changed=True, detail=f"written {', '.join(self._names())}",
                       at=datetime.now(timezone.utc))

    def rollback(self) -> str | None:
        """Copy the objects under ``<prefix>previous/`` back; returns the serial now held.

        Every backup is checked first, so a rollback either starts complete or not at all.
        """
        s3 = self.credentials.get_client("s3")
        missing = [BACKUP_DIR + n for n in self._names() if not self._exists(s3, BACKUP_DIR + n)]
        if missing:
            raise TargetError(f"{self._label()}: no previous certificate to roll back to ({', '.join(missing)} missing)")
        for name in self._names():
            self._copy(s3, BACKUP_DIR + name, name, "restore")
        return self._held(s3)

    def _held(self, s3) -> str | None:
        body = self._read(s3, FULLCHAIN)
        if body is None:
            return None
        try:
            certs = pki.load_certs(body)
            return pki.serial_hex(pki.leaf(certs)) if certs else None
        except pki.PemError:
            return None  # garbage in the object: "holds nothing we know", redeploy

    def _contents(self, bundle: DeployBundle, chain) -> dict[str, bytes]:
        return {KEY: bundle.key_pem, CERT: pki.to_pem(chain[:1]), CHAIN: pki.to_pem(chain[1:]),
                FULLCHAIN: pki.to_pem(chain)}

    def _sse(self) -> dict[str, str]:
        if self.server_side_encryption is None:
            return {}
        sse = {"ServerSideEncryption": self.server_side_encryption}
        if self.kms_key_id:
            sse["SSEKMSKeyId"] = self.kms_key_id
        return sse

    def _read(self, s3, name: str) -> bytes | None:
        """``<prefix>name``'s bytes, ``None`` when there is no such object (other errors raise)."""
        with aws_errors(self._label(), f"read {name}", TargetError):
            try:
                return s3.get_object(Bucket=self.bucket, Key=self.key_prefix + name)["Body"].read()
            except ClientError as exc:
                if error_code(exc) in _MISSING:
                    return None
                raise

    def _exists(self, s3, name: str) -> bool:
        with aws_errors(self._label(), f"look up {name}", TargetError):
            try:
                s3.head_object(Bucket=self.bucket, Key=self.key_prefix + name)
            except ClientError as exc:
                if error_code(exc) in _MISSING:
                    return False
                raise
        return True

    def _put(self, s3, name: str, data: bytes, meta: dict[str, str]) -> None:
        with aws_errors(self._label(), f"write {name}", TargetError):
            s3.put_object(Bucket=self.bucket, Key=self.key_prefix + name, Body=data, Metadata=meta,
                          ContentType="application/x-pem-file", **self._sse())

    def _copy(self, s3, src: str, dst: str, action: str) -> bool:
        """Copy ``<prefix>src`` to ``<prefix>dst`` with SSE; False when the source is missing."""
        with aws_errors(self._label(), f"{action} {dst}", TargetError):
            try:
                s3.copy_object(Bucket=self.bucket, Key=self.key_prefix + dst, MetadataDirective="COPY",
                               CopySource={"Bucket": self.bucket, "Key": self.key_prefix + src}, **self._sse())
            except ClientError as exc:
                if error_code(exc) in _MISSING:
                    return False
                raise
        return True

    def _backup(self, s3) -> None:
        """Copy each current object to ``previous/``; drop stale backups of absent objects."""
        for name in self._names():
            if not self._copy(s3, name, BACKUP_DIR + name, "back up"):
                with aws_errors(self._label(), f"clear stale {BACKUP_DIR}{name}", TargetError):
                    s3.delete_object(Bucket=self.bucket, Key=self.key_prefix + BACKUP_DIR + name)

    def _restore(self, s3) -> None:
        """After a failed write: best effort back to the backup, or to nothing."""
        for name in self._names():
            with contextlib.suppress(TargetError):
                if not self._copy(s3, BACKUP_DIR + name, name, "restore"):
                    with aws_errors(self._label(), f"remove {name}", TargetError):
                        s3.delete_object(Bucket=self.bucket, Key=self.key_prefix + name)
