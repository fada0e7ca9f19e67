"""Discovery source: PEM certificates stored as objects in an S3 bucket.

ListObjectsV2 (paginated) under each prefix → objects whose name ends with one of
``suffixes`` and whose size is at most ``max_object_bytes`` → GetObject → the leaf of the
bundle, reported as ``s3://bucket/key``.

Skipped without error, like the files source: objects with no certificate (a private
key, a config file, DER or other non-PEM bytes), bundles with no single leaf, and
CA-only bundles (a trust bundle is not a certificate anyone serves). Objects larger than
the cap are not downloaded. Object bodies live only inside ``_leaf``: a key that shares
an object with its certificate is never decoded, kept or returned.

certfleet's own S3 target keeps the certificate it replaced under
``<prefix>previous/``; those backups are not live certificates and are skipped
(otherwise every renewal would show them as drift).

Errors (AccessDenied, NoSuchBucket) raise
``S3DiscoveryError("s3 discovery 's3://bucket/prefix': <action>: <Code>: <message>")``.
Permissions: s3:ListBucket on the bucket, s3:GetObject on the prefixes (plus kms:Decrypt
for SSE-KMS objects).
"""

from __future__ import annotations

from botocore.exceptions import ClientError
from prefect.blocks.core import Block
from pydantic import Field

from certfleet.blocks.aws import AwsCredentials, aws_errors, error_code
from certfleet.blocks.targets.s3 import BACKUP_DIR, CERT, CHAIN, FULLCHAIN, KEY
from certfleet import pki
from certfleet.fleet import Discovered

_TARGET_FILES = {KEY, CERT, CHAIN, FULLCHAIN}
_GONE = {"NoSuchKey", "404", "NotFound"}


class S3DiscoveryError(RuntimeError):
    """An S3 call failed; the message starts with ``s3 discovery 's3://<bucket>/<prefix>':``."""


class S3Discovery(Block):
    _block_type_name = "certfleet S3 discovery"
    _block_type_slug = "certfleet-s3-discovery"
    _description = "Finds PEM certificates stored as objects in an S3 bucket."

    bucket: str = Field(description="Bucket to look in")
    prefixes: list[str] = Field(default_factory=lambda: [""], description="Key prefixes to list, used verbatim (e.g. 'certs/'); [''] = the whole bucket")
    suffixes: list[str] = Field(default_factory=lambda: [".pem", ".crt"], description="Only objects whose key ends with one of these (case-insensitive) are read")
    max_object_bytes: int = Field(256 * 1024, gt=0, description="Objects larger than this are skipped without being downloaded")
    credentials: AwsCredentials = Field(default_factory=AwsCredentials, description="How to reach AWS (region, keys or profile, endpoint)")

    def _label(self, prefix: str = "") -> str:
        return f"s3 discovery 's3://{self.bucket}/{prefix}'"

    def scan(self) -> list[Discovered]:
        s3, found, seen = self.credentials.get_client("s3"), [], set()
        for prefix in self.prefixes or [""]:
            for key in self._candidates(s3, prefix):
                if key in seen:  # overlapping prefixes: report each object once
                    continue
                seen.add(key)
                body = self._get(s3, key, prefix)
                info = _leaf(body) if body is not None else None
                del body
                if info is not None:
                    found.append(Discovered("s3", f"s3://{self.bucket}/{key}", info))
        return found

    def _candidates(self, s3, prefix: str) -> list[str]:
        suffixes = tuple(s.lower() for s in self.suffixes)
        keys = []
        with aws_errors(self._label(prefix), "list objects", S3DiscoveryError):
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.lower().endswith(suffixes) and obj.get("Size", 0) <= self.max_object_bytes \
                            and not _is_target_backup(key):
                        keys.append(key)
        return keys

    def _get(self, s3, key: str, prefix: str) -> bytes | None:
        """At most ``max_object_bytes`` of the object (it may have grown since the listing)."""
        with aws_errors(self._label(prefix), f"read {key}", S3DiscoveryError):
            try:
                resp = s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{self.max_object_bytes - 1}")
            except ClientError as exc:
                if error_code(exc) in _GONE:
                    return None  # deleted between the listing and the read
                raise
            with resp["Body"] as stream:
                return stream.read(self.max_object_bytes)


def _is_target_backup(key: str) -> bool:
    """``<prefix>previous/fullchain.pem`` & co., as written by certfleet's S3 target."""
    parent, _, name = key.rpartition("/")
    return name in _TARGET_FILES and parent.rpartition("/")[2] + "/" == BACKUP_DIR


def _leaf(body: bytes):
    """The leaf certificate's facts, or ``None`` for keys, non-PEM, CA-only or ambiguous bundles."""
    try:
        certs = pki.load_certs(body)
        leaf = pki.leaf(certs) if certs else None
    except pki.PemError:
        return None
    if leaf is None:
        return None
    info = pki.describe(leaf)
    return None if info.is_ca else info
