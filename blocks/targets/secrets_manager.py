"""Target block: a secret in AWS Secrets Manager (apps and sidecars that fetch their TLS material).

Each deploy adds a new version of the secret and gives it the AWSCURRENT label (and
``extra_stage_label`` if set); Secrets Manager moves AWSPREVIOUS to the version it
replaced on its own. That label is the backup: ``rollback()`` moves AWSCURRENT back to
the AWSPREVIOUS version, and Secrets Manager swaps AWSPREVIOUS accordingly.

The secret is created on the first deploy when it does not exist, which needs
``secret_id`` to be a name: an ARN names a secret that must already exist.

Formats: ``json`` → ``{"certificate": leaf, "private_key": key, "chain": intermediates,
"serial": serial}`` (all PEM but the serial); ``pem`` → the full chain then the key,
one PEM text (what HAProxy and many sidecars read).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Literal

from botocore.exceptions import ClientError
from prefect.blocks.core import Block
from pydantic import Field

from certfleet.blocks.aws import AwsCredentials, aws_errors, error_code
from certfleet.blocks.targets.file import TargetError
from certfleet import pki
from certfleet.contracts import DeployBundle
from certfleet.models import Receipt

CURRENT, PREVIOUS = "AWSCURRENT", "AWSPREVIOUS"


class SecretsManagerTarget(Block):
    _block_type_name = "certfleet Secrets Manager target"
    _block_type_slug = "certfleet-secrets-manager-target"
    _description = "Writes the certificate and key as a new version of an AWS Secrets Manager secret."

    secret_id: str = Field(description="Secret name (created on first deploy if missing) or ARN of an existing secret")
    format: Literal["json", "pem"] = Field("json", description="'json': {certificate, private_key, chain, serial}; 'pem': full chain then key as one PEM text")
    extra_stage_label: str | None = Field(None, description="Staging label attached to each new version besides AWSCURRENT (e.g. 'certfleet')")
    kms_key_id: str | None = Field(None, description="KMS key to encrypt the secret with when certfleet creates it; AWS's managed key when unset")
    description: str = Field("TLS certificate and key managed by certfleet", description="Description given to the secret when certfleet creates it")
    credentials: AwsCredentials = Field(default_factory=AwsCredentials, description="How to reach AWS (region, keys or profile, endpoint)")

    def _label(self) -> str:
        return f"secrets-manager target '{self.secret_id}'"

    def current(self) -> str | None:
        sm = self.credentials.get_client("secretsmanager")
        with aws_errors(self._label(), "read AWSCURRENT", TargetError):
            try:
                value = sm.get_secret_value(SecretId=self.secret_id, VersionStage=CURRENT)["SecretString"]
            except ClientError as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return None  # no secret yet: deploy creates it
                raise
        return self._serial_of(value)

    def deploy(self, bundle: DeployBundle) -> Receipt:
        value = self._value(bundle)
        sm = self.credentials.get_client("secretsmanager")
        with aws_errors(self._label(), "write new version", TargetError):
            try:
                stages = [CURRENT] + ([self.extra_stage_label] if self.extra_stage_label else [])
                version = sm.put_secret_value(SecretId=self.secret_id, SecretString=value, VersionStages=stages)["VersionId"]
                detail = f"new version {version}"
            except ClientError as exc:
                if error_code(exc) != "ResourceNotFoundException" or self.secret_id.startswith("arn:"):
                    raise
                version = self._create(sm, value)
                detail = f"created secret, version {version}"
        return Receipt(target=self.secret_id, certificate=bundle.certificate, serial=bundle.serial,
                       changed=True, detail=detail, at=datetime.now(timezone.utc))

    def rollback(self) -> str | None:
        """Move AWSCURRENT (and the extra label) to the AWSPREVIOUS version; returns its serial."""
        sm = self.credentials.get_client("secretsmanager")
        with aws_errors(self._label(), "roll back", TargetError):
            stages = sm.describe_secret(SecretId=self.secret_id).get("VersionIdsToStages", {})
            previous = next((v for v, labels in stages.items() if PREVIOUS in labels), None)
            if previous is None:
                raise TargetError(f"{self._label()}: no AWSPREVIOUS version to roll back to")
            for label in [CURRENT] + ([self.extra_stage_label] if self.extra_stage_label else []):
                holder = next((v for v, labels in stages.items() if label in labels), None)
                args = {"RemoveFromVersionId": holder} if holder else {}
                sm.update_secret_version_stage(SecretId=self.secret_id, VersionStage=label,
                                               MoveToVersionId=previous, **args)
        return self.current()

    def _create(self, sm, value: str) -> str:
        """CreateSecret for a missing secret; the extra label is added in a second call."""
        args = {"Name": self.secret_id, "SecretString": value, "Description": self.description,
                "Tags": [{"Key": "certfleet:managed", "Value": "true"}]}
        if self.kms_key_id:
            args["KmsKeyId"] = self.kms_key_id
        version = sm.create_secret(**args)["VersionId"]
        if self.extra_stage_label:
            sm.update_secret_version_stage(SecretId=self.secret_id, VersionStage=self.extra_stage_label,
                                           MoveToVersionId=version)
        return version

    def _value(self, bundle: DeployBundle) -> str:
        chain = pki.order_chain(pki.load_certs(bundle.fullchain_pem))
        if self.format == "pem":
            return (pki.to_pem(chain) + bundle.key_pem).decode()
        return json.dumps({"certificate": pki.to_pem(chain[:1]).decode(), "private_key": bundle.key_pem.decode(),
                           "chain": pki.to_pem(chain[1:]).decode(), "serial": bundle.serial})

    def _serial_of(self, value: str) -> str | None:
        """Serial of the leaf in a stored value; ``None`` for anything unreadable (redeploy)."""
        try:
            pem = json.loads(value)["certificate"] if self.format == "json" else value
            certs = pki.load_certs(pem)
            return pki.serial_hex(pki.leaf(certs)) if certs else None
        except (ValueError, KeyError, TypeError):  # JSONDecodeError and PemError are ValueErrors
            return None
