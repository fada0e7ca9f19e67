"""A domain the issuer's solver does not control is refused before any ACME order.

The refusal must cost the CA nothing: Pebble's own log ("Added order ...") is read to
prove that no order was placed, and the error names certificate, domain and solver.
"""

from __future__ import annotations

import uuid

import pytest
from acme import crypto_util
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certfleet.blocks.issuers.acme import AcmeIssuer
from certfleet.blocks.solvers.rfc2136 import Rfc2136Solver
from certfleet.acme_client import AcmeError
from certfleet.contracts import IssuanceRequest

pytestmark = pytest.mark.services


def _orders(pebble) -> int:
    return pebble.log_path.read_text(errors="replace").count("Added order ")


def _request(name: str, *domains: str) -> IssuanceRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return IssuanceRequest(name=name, domains=domains, csr_pem=crypto_util.make_csr(key_pem, list(domains)))


def test_uncontrolled_domain_is_refused_before_any_order(pebble, tmp_path):
    # A zone is configured, so controls() answers from configuration alone: no DNS server needed.
    solver = Rfc2136Solver(nameserver="127.0.0.1", port=53, zone="shop.test",
                           tsig_name="acme-key", tsig_secret="c2VjcmV0")
    issuer = AcmeIssuer(
        directory_url=pebble.directory_url,
        ca_bundle=str(pebble.ca_cert_path),
        account_key_path=str(tmp_path / "account.pem"),
        solver=solver,
    )
    base = f"{uuid.uuid4().hex[:10]}.shop.test"
    before = _orders(pebble)
    with pytest.raises(AcmeError) as info:
        issuer.issue(_request("storefront", base, "api.other.example"))

    message = str(info.value)
    assert message.startswith(f"acme issuer '{pebble.directory_url}': certificate 'storefront':")
    assert "'api.other.example'" in message and "rfc2136 solver '127.0.0.1:53'" in message
    assert info.value.transient is False
    assert _orders(pebble) == before, "Pebble logged no new order"
    assert issuer._client is None or issuer._client.account_url is None, "the CA was not even contacted"
