"""The incident's fleet, shared by the tests that replay it, and an independent handshake.

Production and staging vhosts on one nginx: production serves a certificate that
expires within a day, staging already holds a fresh one (the renewal that ran on the
wrong machine). The inventory names production as the target.
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
from certfleet_dev.nginx import Vhost
from certfleet.store import LocalStore


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

    from certfleet_dev.ports import free_port

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
