"""Store block: the versioned certificate store in an S3 bucket.

Configuration only; the logic is ``certfleet.store_s3.S3CertificateStore`` (layout,
conditional-write lock, retention). Every object is written with server-side
encryption; set ``encryption_keys`` to also seal private keys client side, so that
read access to the bucket alone yields no key.
"""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, SecretStr, model_validator

from certfleet.blocks.aws import AwsCredentials
from certfleet.blocks.stores.base import DelegatingStore, unwrap_encryption_keys
from certfleet.store import DEFAULT_KEEP_VERSIONS
from certfleet.store_s3 import DEFAULT_LOCK_TTL, S3CertificateStore


class S3Store(DelegatingStore, Block):
    _block_type_name = "certfleet S3 store"
    _block_type_slug = "certfleet-s3-store"
    _description = "Keeps every issued certificate version (and its key) in an S3 bucket, with a lock per certificate."

    bucket: str = Field(description="Bucket that holds the store")
    prefix: str = Field("certfleet/", description="Prefix of every object key, used verbatim (e.g. 'certfleet/'): objects are <prefix><name>/versions/<serial>/...")
    server_side_encryption: Literal["AES256", "aws:kms"] = Field("AES256", description="SSE algorithm sent with every PUT")
    kms_key_id: str | None = Field(None, description="KMS key ID or ARN when server_side_encryption is 'aws:kms'; AWS's managed key when unset")
    encryption_keys: SecretStr | None = Field(None, description="Client-side encryption of private keys: one or more base64 32-byte keys, comma separated; the first encrypts, all are tried to decrypt (rotation). Unset: keys are stored as PEM (still SSE-encrypted)")
    keep_versions: int | None = Field(DEFAULT_KEEP_VERSIONS, ge=2, description="Versions kept per certificate; older ones are deleted after each put (never the current one or the one before it). None keeps all")
    lock_ttl: float = Field(DEFAULT_LOCK_TTL, gt=0, description="Seconds after which a lock left by a crashed run may be broken; must exceed the longest renewal")
    credentials: AwsCredentials = Field(default_factory=AwsCredentials, description="How to reach AWS (region, keys or profile, endpoint)")

    _store: S3CertificateStore | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _kms_needs_kms(self) -> "S3Store":
        if self.kms_key_id and self.server_side_encryption != "aws:kms":
            raise ValueError("kms_key_id is only used with server_side_encryption 'aws:kms'")
        return self

    def get_store(self) -> S3CertificateStore:
        """The core store, built once: one boto3 client per block instance."""
        if self._store is None:
            label = f"s3 store 's3://{self.bucket}/{self.prefix}'"
            self._store = S3CertificateStore(
                self.credentials.get_client("s3"), self.bucket, self.prefix,
                server_side_encryption=self.server_side_encryption, kms_key_id=self.kms_key_id,
                keep_versions=self.keep_versions, lock_ttl=self.lock_ttl,
                encryption_keys=unwrap_encryption_keys(self.encryption_keys, f"{label}: encryption_keys"))
        return self._store
