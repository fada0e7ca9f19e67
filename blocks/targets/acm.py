"""Target block: an imported certificate in AWS Certificate Manager (ALB, NLB, CloudFront, API Gateway).

Deploy re-imports into the SAME ``certificate_arn``: load balancers and distributions
reference the ARN, so they pick the new certificate up without any change on their side.
A new ARN would leave them serving the old one — the outage certfleet exists to prevent.

Without ``certificate_arn``, the first deploy imports a new certificate and the
receipt's detail names its ARN. Pin that ARN in the target's configuration then:
the block remembers it only for the rest of the run, and an unpinned target imports
another new certificate on every run.

Rollback: ACM keeps no history of an ARN's previous contents, and the private key of
an imported certificate cannot be exported back out. So there is no ``rollback()``; the
previous bundle must come from the store, where every version is kept:
``rollback_to(previous_bundle)`` re-imports it into the same ARN.

``current()`` reads the certificate itself (GetCertificate) and takes the serial from
it, in certfleet's spelling (lowercase hex, no leading zeros). DescribeCertificate's
``Serial`` would do on AWS ("0a:1b:..." colon hex, see ``acm_serial``), but moto spells
it in decimal; the PEM reads the same on both.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from certfleet.blocks.aws import AwsCredentials, aws_errors
from certfleet.blocks.targets.file import TargetError
from certfleet import pki
from certfleet.contracts import DeployBundle
from certfleet.models import Receipt


def acm_serial(value: str) -> str:
    """ACM's "0a:1b:2c" serial as certfleet spells serials: "a1b2c" (format(n, 'x'))."""
    return format(int(value.replace(":", ""), 16), "x")


class AcmTarget(Block):
    _block_type_name = "certfleet ACM target"
    _block_type_slug = "certfleet-acm-target"
    _description = "Re-imports the certificate into one AWS Certificate Manager ARN, so attached load balancers serve it."

    # What ImportCertificate takes and ELB/CloudFront can serve; preflight refuses the rest.
    accepted_key_types: ClassVar[tuple[str, ...]] = ("rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384")

    certificate_arn: str | None = Field(None, description="ARN to re-import into. Unset: the first deploy imports a new certificate and names its ARN in the receipt; pin it here then")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags for the ACM certificate; certfleet:certificate and certfleet:serial are always set")
    credentials: AwsCredentials = Field(default_factory=AwsCredentials, description="How to reach AWS (region, keys or profile, endpoint)")

    def _label(self) -> str:
        return f"acm target '{self.certificate_arn or 'new certificate'}'"

    def current(self) -> str | None:
        if not self.certificate_arn:
            return None
        acm = self.credentials.get_client("acm")
        with aws_errors(self._label(), "read certificate", TargetError):
            pem = acm.get_certificate(CertificateArn=self.certificate_arn)["Certificate"]
        return pki.serial_hex(pki.load_certs(pem)[0])

    def deploy(self, bundle: DeployBundle) -> Receipt:
        arn, new = self._import(bundle)
        detail = (f"imported as new certificate {arn}; pin certificate_arn to it" if new
                  else f"re-imported into {arn}")
        return Receipt(target=arn, certificate=bundle.certificate, serial=bundle.serial,
                       changed=True, detail=detail, at=datetime.now(timezone.utc))

    def rollback_to(self, previous: DeployBundle) -> str | None:
        """Re-import ``previous`` (loaded from the store by the caller) into the same ARN.

        Needs a pinned (or, in this run, learnt) ARN: rolling back into a new certificate
        would attach nothing. Returns the serial the ARN now holds.
        """
        if not self.certificate_arn:
            raise TargetError(f"{self._label()}: no certificate_arn, nothing to roll back")
        self._import(previous)
        return self.current()

    def _import(self, bundle: DeployBundle) -> tuple[str, bool]:
        """ImportCertificate, into ``certificate_arn`` when set; returns (arn, was_new)."""
        chain = pki.order_chain(pki.load_certs(bundle.fullchain_pem))
        self._check_key_type(chain[0])
        args = {"Certificate": pki.to_pem(chain[:1]), "PrivateKey": bundle.key_pem}
        if chain[1:]:
            args["CertificateChain"] = pki.to_pem(chain[1:])
        tags = [{"Key": k, "Value": v} for k, v in {**self.tags, "certfleet:certificate": bundle.certificate,
                                                   "certfleet:serial": bundle.serial}.items()]
        acm = self.credentials.get_client("acm")
        new = not self.certificate_arn
        with aws_errors(self._label(), "import certificate", TargetError):
            if new:  # tags go with the first import; AWS refuses them on a re-import
                self.certificate_arn = acm.import_certificate(**args, Tags=tags)["CertificateArn"]
            else:
                acm.import_certificate(**args, CertificateArn=self.certificate_arn)
                acm.add_tags_to_certificate(CertificateArn=self.certificate_arn, Tags=tags)
        return self.certificate_arn, new

    def _check_key_type(self, leaf) -> None:
        key_type = pki.key_type_of(leaf.public_key())
        if key_type not in self.accepted_key_types:
            raise TargetError(f"{self._label()}: ACM does not accept {key_type} keys "
                              f"(accepts {', '.join(self.accepted_key_types)}); nothing imported")
