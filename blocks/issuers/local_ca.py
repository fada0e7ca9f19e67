"""Issuer block: a local certificate authority (internal PKI, dev fleets).

The CA's keys live in ``directory`` (created on first use, mode 0600). The root to trust
is ``<directory>/root.pem``; give it to clients and to certfleet's ``trust_bundle``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field

from certfleet.contracts import IssuanceRequest, Issued
from certfleet.localca import LocalCA


class LocalCAIssuer(Block):
    _block_type_name = "certfleet local CA issuer"
    _block_type_slug = "certfleet-local-ca-issuer"
    _description = "Issues certificates from a local CA kept in a directory (internal PKI, development)."

    directory: str = Field(description="Directory holding the CA's certificates and keys; created on first use")
    validity_days: float = Field(90, gt=0, description="Lifetime of issued certificates, in days")
    ca_name: str = Field("certfleet local CA", description="Common name prefix of the CA when it is created")

    def _ca(self) -> LocalCA:
        return LocalCA.load_or_create(Path(self.directory), self.ca_name)

    def issue(self, request: IssuanceRequest) -> Issued:
        now = datetime.now(timezone.utc)
        chain = self._ca().sign_csr(request.csr_pem, not_before=now - timedelta(minutes=1),
                                    not_after=now + timedelta(days=self.validity_days))
        return Issued(fullchain_pem=chain, issuer_name=f"local-ca:{self.directory}")

    def revoke(self, cert_pem: bytes, reason: int = 0) -> None:
        """Record the serial in ``<directory>/revoked.json`` (what a CRL would be made from)."""
        from certfleet import pki

        self._ca().revoke(pki.serial_hex(pki.load_certs(cert_pem)[0]), reason)

    def revoked(self) -> dict:
        return LocalCA(Path(self.directory), None, None, None).revoked()  # type: ignore[arg-type]

    def roots_pem(self) -> bytes:
        return self._ca().root_pem
