"""The midnight incident, reproduced end to end (the acceptance test of the foundation).

Production nginx serves a certificate that expires within a day; a staging directory
already holds a fresh certificate (the renewal that ran "on the wrong machine"). The
inventory says production is a target. One ``lifecycle`` run must get production
serving a new certificate — counted at Pebble, checked by our own TLS handshake — and a
second run must issue nothing and write nothing.
"""

from __future__ import annotations

import socket
import ssl
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509

from certfleet import pki
from certfleet.devstack.nginx import Vhost
from certfleet.store import LocalStore

pytestmark = pytest.mark.services


def served_serial(port: int, sni: str, cafile: Path) -> str:
    """An independent handshake (stdlib ssl, full verification): what a browser gets."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


@pytest.fixture
def fleet(tmp_path, pebble, local_ca, nginx_factory):
    """Production and staging vhosts on one nginx, and an inventory naming production."""
    now = datetime.now(timezone.utc)
    prod, staging = tmp_path / "prod", tmp_path / "staging"
    prod.mkdir()
    staging.mkdir()
    old_chain, old_key = local_ca.issue(["shop.test", "www.shop.test"], not_before=now - timedelta(days=89),
                                        not_after=now + timedelta(hours=12))
    (prod / "shop.pem").write_bytes(old_chain)
    (prod / "shop.key").write_bytes(old_key)
    fresh_chain, fresh_key = local_ca.issue(["shop.test", "www.shop.test"])
    (staging / "shop.pem").write_bytes(fresh_chain)
    (staging / "shop.key").write_bytes(fresh_key)

    from certfleet.devstack.ports import free_port

    port, staging_port = free_port(), free_port()
    nginx = nginx_factory([
        Vhost("production", ["shop.test", "www.shop.test"], port, prod / "shop.pem", prod / "shop.key"),
        Vhost("staging", ["staging.shop.test"], staging_port, staging / "shop.pem", staging / "shop.key"),
    ])
    roots = tmp_path / "roots.pem"
    roots.write_bytes(pebble.roots_pem())
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(textwrap.dedent(f"""
        store: {{path: store}}
        trust_bundle: roots.pem
        issuers:
          pebble:
            kind: acme
            directory_url: {pebble.directory_url}
            email: ops@shop.test
            ca_bundle: {pebble.ca_cert_path}
            solver: {{kind: challtestsrv, url: "{pebble.challtestsrv_url}"}}
        targets:
          production-lb:
            kind: file
            fullchain_path: prod/shop.pem
            key_path: prod/shop.key
            reload_command: {nginx.reload_command!r}
        certificates:
          - name: shop
            domains: [shop.test, www.shop.test]
            issuer: pebble
            targets: [production-lb]
            endpoints: ["127.0.0.1:{port}", "www.shop.test@127.0.0.1:{port}"]
    """).replace("'", '"'))
    return {
        "inventory": inventory, "port": port, "nginx": nginx, "roots": roots, "prod": prod,
        "staging": staging, "old_serial": pki.serial_hex(pki.load_certs(old_chain)[0]),
        "store": LocalStore(tmp_path / "store"),
    }


def test_midnight_incident_fixed_and_second_run_is_a_no_op(prefect_harness, fleet, pebble, issued_since):
    from flows.lifecycle import lifecycle

    cafile = fleet["roots"]
    # Before: production serves the certificate that dies tonight (not from Pebble).
    with pytest.raises(ssl.SSLCertVerificationError):
        served_serial(fleet["port"], "shop.test", cafile)

    state = lifecycle(inventory=str(fleet["inventory"]), verify_deadline=20, return_state=True)
    assert state.is_completed(), state.message

    issued = issued_since()
    assert len(issued) == 1, f"Pebble issued {issued}"
    new_serial = issued[0]
    assert served_serial(fleet["port"], "shop.test", cafile) == new_serial
    assert served_serial(fleet["port"], "www.shop.test", cafile) == new_serial
    assert fleet["store"].current("shop").serial == new_serial
    # Staging was never a target: untouched.
    assert pki.serial_hex(pki.load_certs((fleet["staging"] / "shop.pem").read_bytes())[0]) != new_serial

    files = [fleet["prod"] / "shop.pem", fleet["prod"] / "shop.key"]
    mtimes = [f.stat().st_mtime_ns for f in files]
    reloads = fleet["nginx"].reload_count
    assert reloads >= 1

    state = lifecycle(inventory=str(fleet["inventory"]), verify_deadline=20, return_state=True)
    assert state.is_completed(), state.message
    assert issued_since() == [new_serial], "the second run must not issue"
    assert [f.stat().st_mtime_ns for f in files] == mtimes, "the second run must not write"
    assert fleet["nginx"].reload_count == reloads, "the second run must not reload"
    assert served_serial(fleet["port"], "shop.test", cafile) == new_serial
    assert (fleet["prod"] / "shop.key").stat().st_mode & 0o777 == 0o600


def test_run_fails_and_names_the_endpoint_that_does_not_verify(prefect_harness, fleet, pebble, tmp_path):
    """A target that reloads nothing (wrong machine!) leaves the endpoint on the old cert."""
    from flows.lifecycle import lifecycle

    inv = fleet["inventory"]
    # Point the target somewhere nginx does not read: the renewal "lands on staging".
    inv.write_text(inv.read_text().replace("prod/shop.pem", "elsewhere/shop.pem").replace("prod/shop.key", "elsewhere/shop.key"))
    state = lifecycle(inventory=str(inv), verify_deadline=1, return_state=True)
    assert state.is_failed()
    assert f"shop.test@127.0.0.1:{fleet['port']}" in state.message
    assert fleet["old_serial"] in state.message
