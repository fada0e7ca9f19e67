"""Discovery source: certificates in AWS Certificate Manager (one region per source).

ListCertificates (paginated) → per ARN, GetCertificate → the leaf's facts, taken from the
PEM as for every other source (DescribeCertificate's ``Serial`` is colon hex on AWS and
decimal on moto; the PEM reads the same on both). GetCertificate returns the public
certificate only: ACM never hands out a private key here.

Two AWS habits handled here:

- ListCertificates returns only RSA-1024/2048 certificates unless ``Includes.keyTypes``
  names the others, so every key algorithm ACM knows is asked for (an ECDSA certificate
  on a load balancer would otherwise be invisible).
- ``Type`` (IMPORTED, AMAZON_ISSUED, PRIVATE) comes in the list summary; when it does not,
  one DescribeCertificate per certificate fills it in.

A certificate that vanishes, or has no certificate yet, between the list and the read is
skipped, not an error. Anything else (AccessDenied, a wrong region or endpoint) raises
``AcmDiscoveryError("acm discovery '<region>': <action>: <Code>: <message>")``.

Permissions: acm:ListCertificates, acm:GetCertificate (and acm:DescribeCertificate when
the summaries lack ``Type``).
"""

from __future__ import annotations

from typing import Literal

from botocore.exceptions import ClientError
from prefect.blocks.core import Block
from pydantic import Field

from certfleet.blocks.aws import AwsCredentials, aws_errors, error_code
from certfleet import pki
from certfleet.fleet import Discovered

# Every KeyAlgorithm of the ACM API: without them, ListCertificates returns only RSA-1024/2048 certificates.
KEY_TYPES = ["RSA_1024", "RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1", "EC_secp384r1", "EC_secp521r1"]
AcmStatus = Literal["PENDING_VALIDATION", "ISSUED", "INACTIVE", "EXPIRED", "VALIDATION_TIMED_OUT", "REVOKED", "FAILED"]
# Gone, or not issued yet, between ListCertificates and GetCertificate: nothing to report.
_SKIP = {"ResourceNotFoundException", "RequestInProgressException", "InvalidStateException"}


class AcmDiscoveryError(RuntimeError):
    """An ACM call failed; the message starts with ``acm discovery '<region>':``."""


class AcmDiscovery(Block):
    _block_type_name = "certfleet ACM discovery"
    _block_type_slug = "certfleet-acm-discovery"
    _description = "Finds the certificates held in AWS Certificate Manager (one region), imported and Amazon-issued."

    credentials: AwsCredentials = Field(default_factory=AwsCredentials, description="How to reach AWS (region, keys or profile, endpoint); ACM is regional: one source per region")
    statuses: list[AcmStatus] = Field(default_factory=lambda: ["ISSUED"], description="Certificate statuses to list, e.g. ['ISSUED', 'EXPIRED']; empty = every status")
    include_imported: bool = Field(True, description="Report certificates imported into ACM (Type IMPORTED)")
    include_amazon_issued: bool = Field(True, description="Report certificates Amazon issued (Type AMAZON_ISSUED); ACM renews these itself")
    include_private: bool = Field(True, description="Report certificates from AWS Private CA (Type PRIVATE)")

    def _label(self) -> str:
        return f"acm discovery '{self.credentials.region_name or 'default region'}'"

    def _wanted(self) -> set[str]:
        return {t for t, on in (("IMPORTED", self.include_imported), ("AMAZON_ISSUED", self.include_amazon_issued),
                                ("PRIVATE", self.include_private)) if on}

    def scan(self) -> list[Discovered]:
        acm, wanted = self.credentials.get_client("acm"), self._wanted()
        args = {"Includes": {"keyTypes": KEY_TYPES}}
        if self.statuses:
            args["CertificateStatuses"] = list(self.statuses)
        found = []
        with aws_errors(self._label(), "list certificates", AcmDiscoveryError):
            summaries = [s for page in acm.get_paginator("list_certificates").paginate(**args)
                         for s in page.get("CertificateSummaryList", [])]
        for summary in summaries:
            arn = summary["CertificateArn"]
            if self._type_of(acm, summary) not in wanted:
                continue
            pem = self._read(acm, arn, "get_certificate", "read")
            if pem is None:
                continue
            try:
                leaf = pki.load_certs(pem["Certificate"])[0]
            except (KeyError, IndexError, pki.PemError):
                continue  # no usable certificate behind the ARN (yet)
            found.append(Discovered("acm", arn, pki.describe(leaf)))
        return found

    def _type_of(self, acm, summary: dict) -> str | None:
        if summary.get("Type"):
            return summary["Type"]
        described = self._read(acm, summary["CertificateArn"], "describe_certificate", "describe")
        return (described or {}).get("Certificate", {}).get("Type")

    def _read(self, acm, arn: str, call: str, action: str) -> dict | None:
        """One per-ARN call; ``None`` when the certificate is gone or not issued meanwhile."""
        with aws_errors(self._label(), f"{action} {arn}", AcmDiscoveryError):
            try:
                return getattr(acm, call)(CertificateArn=arn)
            except ClientError as exc:
                if error_code(exc) in _SKIP:
                    return None
                raise
