"""End to end through the company's DNS: Pebble validates dns-01 against a real Knot that
certfleet updated with TSIG-signed RFC 2136 updates — the renew flow, nothing mocked."""

from __future__ import annotations

import textwrap

import pytest

from certfleet import pki
from certfleet_dev.pebble import start_pebble
from certfleet.store import LocalStore

pytestmark = pytest.mark.services


def test_renew_flow_issues_through_rfc2136_and_knot(prefect_harness, tmp_path, knot, monkeypatch):
    from certfleet.flows.renew import renew

    # Pebble's validator asks Knot directly, as a CA would ask the zone's nameservers.
    with start_pebble(tmp_path / "pebble", dns_server=f"127.0.0.1:{knot.port}") as pebble:
        monkeypatch.setenv("CERTFLEET_TEST_TSIG", knot.tsig_secret)
        inv = tmp_path / "inventory.yaml"
        inv.write_text(textwrap.dedent(f"""
            store: {{path: store}}
            issuers:
              company-dns:
                kind: acme
                directory_url: {pebble.directory_url}
                ca_bundle: {pebble.ca_cert_path}
                solver:
                  kind: rfc2136
                  nameserver: 127.0.0.1
                  port: {knot.port}
                  zone: shop.test
                  tsig_name: {knot.tsig_name}
                  tsig_secret: {{env: CERTFLEET_TEST_TSIG}}
                  tsig_algorithm: {knot.tsig_algorithm}
            certificates:
              - {{name: shop, domains: [shop.test, www.shop.test], issuer: company-dns}}
              - {{name: other, domains: [api.example.test], issuer: company-dns}}
        """))
        state = renew(inventory=str(inv), certificates=["shop"], return_state=True)
        assert state.is_completed(), state.message
        cur = LocalStore(tmp_path / "store").current("shop")
        assert pebble.issued_serials() == [cur.serial]
        assert set(cur.info.sans) == {"shop.test", "www.shop.test"}
        chain = pki.load_certs(LocalStore(tmp_path / "store").load_fullchain("shop", cur.serial))
        assert pki.verify_chain(chain[0], chain[1:], pki.load_certs(pebble.roots_pem()), "www.shop.test").ok

        # A domain outside the solver's zone is refused before any order reaches the CA.
        state = renew(inventory=str(inv), certificates=["other"], return_state=True)
        assert state.is_failed()
        assert "api.example.test" in state.message and "no order placed" in state.message
        assert len(pebble.issued_serials()) == 1
        assert "Added order" not in pebble.log_path.read_text().split(cur.serial)[-1]
