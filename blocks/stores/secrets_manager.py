"""Store block: the versioned certificate store in AWS Secrets Manager.

One secret per certificate, ``<prefix><name>``; each certificate version is a secret
version labelled ``serial-<serial>``, and AWSCURRENT marks the current one, so any AWS
client can read the current certificate without certfleet. The logic is
``certfleet.store_secrets_manager.SecretsManagerCertificateStore``.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, SecretStr

from certfleet.blocks.aws import AwsCredentials
from certfleet.blocks.stores.base import DelegatingStore, unwrap_encryption_keys
from certfleet.store import DEFAULT_KEEP_VERSIONS
from certfleet.store_s3 import DEFAULT_LOCK_TTL
from certfleet.store_secrets_manager import (
    MAX_KEEP_VERSIONS,
    SecretsManagerCertificateStore,
)


class SecretsManagerStore(DelegatingStore, Block):
    _block_type_name = "certfleet Secrets Manager store"
    _block_type_slug = "certfleet-secrets-manager-store"
    _description = "Keeps every issued certificate version (and its key) as versions of one Secrets Manager secret per certificate."

    prefix: str = Field("certfleet/", description="Prefix of every secret name, used verbatim: the certificate 'shop' is the secret <prefix>shop, its lock <prefix>shop/lock")
    kms_key_id: str | None = Field(None, description="KMS key for new secrets; the account's aws/secretsmanager key when unset")
    encryption_keys: SecretStr | None = Field(None, description="Client-side encryption of private keys: one or more base64 32-byte keys, comma separated; the first encrypts, all are tried to decrypt (rotation). Unset: keys are stored as PEM (still KMS-encrypted by Secrets Manager)")
    keep_versions: int = Field(DEFAULT_KEEP_VERSIONS, ge=2, le=MAX_KEEP_VERSIONS, description=f"Versions kept per certificate (at most {MAX_KEEP_VERSIONS}: AWS caps staging labels per secret); older ones lose their label and AWS deletes them")
    lock_ttl: float = Field(DEFAULT_LOCK_TTL, gt=0, description="Seconds after which a lock left by a crashed run may be broken; must exceed the longest renewal")
    credentials: AwsCredentials = Field(default_factory=AwsCredentials, description="How to reach AWS (region, keys or profile, endpoint)")

    _store: SecretsManagerCertificateStore | None = PrivateAttr(None)

    def get_store(self) -> SecretsManagerCertificateStore:
        """The core store, built once: one boto3 client per block instance."""
        if self._store is None:
            label = f"secrets-manager store '{self.prefix}'"
            self._store = SecretsManagerCertificateStore(
                self.credentials.get_client("secretsmanager"), self.prefix, kms_key_id=self.kms_key_id,
                keep_versions=self.keep_versions, lock_ttl=self.lock_ttl,
                encryption_keys=unwrap_encryption_keys(self.encryption_keys, f"{label}: encryption_keys"))
        return self._store
