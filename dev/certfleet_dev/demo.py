"""A local fleet that reproduces the midnight incident, for ``certfleet demo``.

Pebble (the ACME CA) + challtestsrv (its DNS), and one nginx with three vhosts:
``shop.test`` and ``api.shop.test`` in production, serving certificates that expire
within hours, and ``staging.shop.test`` serving a fresh one — the renewal that ran on
the wrong machine. The inventory names production as the targets. Prefect-free: the
CLI composes this with the lifecycle flow.
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from certfleet import localca
from certfleet_dev.nginx import Nginx, Vhost, start_nginx
from certfleet_dev.pebble import Pebble, start_pebble
from certfleet_dev.ports import free_port


@dataclass
class DemoFleet:
    workdir: Path
    inventory: Path
    pebble: Pebble
    nginx: Nginx
    services: list = field(default_factory=list)

    def pids(self) -> list[int]:
        return [self.nginx.pid] + [p.pid for p in self.pebble._procs]

    def stop(self) -> None:
        for s in reversed(self.services):
            s.stop()


def build(workdir: Path) -> DemoFleet:
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    pebble = start_pebble(workdir / "pebble", validity_seconds=90 * 86400)
    try:
        return _fleet(workdir, pebble)
    except BaseException:
        pebble.stop()
        raise


def _fleet(workdir: Path, pebble: Pebble) -> DemoFleet:
    now = datetime.now(timezone.utc)
    old_ca = localca.LocalCA.create(workdir / "old-ca", "yesterday's CA")
    tls = workdir / "prod"
    staging = workdir / "staging"
    tls.mkdir()
    staging.mkdir()
    for name, domains, hours in (("shop", ["shop.test", "www.shop.test"], 9), ("api", ["api.shop.test"], 3)):
        chain, key = old_ca.issue(domains, not_before=now - timedelta(days=89), not_after=now + timedelta(hours=hours))
        (tls / f"{name}.pem").write_bytes(chain)
        (tls / f"{name}.key").write_bytes(key)
        (tls / f"{name}.key").chmod(0o600)
    chain, key = old_ca.issue(["staging.shop.test"])
    (staging / "shop.pem").write_bytes(chain)
    (staging / "shop.key").write_bytes(key)
    port, staging_port = free_port(), free_port()
    nginx = start_nginx(workdir / "nginx", [
        Vhost("shop", ["shop.test", "www.shop.test"], port, tls / "shop.pem", tls / "shop.key", default_server=True),
        Vhost("api", ["api.shop.test"], port, tls / "api.pem", tls / "api.key"),
        Vhost("staging", ["staging.shop.test"], staging_port, staging / "shop.pem", staging / "shop.key"),
    ])
    (workdir / "roots.pem").write_bytes(pebble.roots_pem())
    reload = ", ".join(f'"{a}"' for a in nginx.reload_command)
    inventory = workdir / "inventory.yaml"
    inventory.write_text(textwrap.dedent(f"""\
        # The demo fleet: production nginx on 127.0.0.1:{port}; Pebble as the ACME CA.
        store: {{path: store}}
        trust_bundle: roots.pem          # Pebble's root: what "valid" means here
        issuers:
          pebble:
            kind: acme
            directory_url: {pebble.directory_url}
            email: ops@shop.test
            ca_bundle: {pebble.ca_cert_path}
            solver: {{kind: challtestsrv, url: "{pebble.challtestsrv_url}"}}
        targets:
          prod-shop:
            kind: file
            fullchain_path: prod/shop.pem
            key_path: prod/shop.key
            reload_command: [{reload}]
          prod-api:
            kind: file
            fullchain_path: prod/api.pem
            key_path: prod/api.key
            reload_command: [{reload}]
        certificates:
          - name: shop
            domains: [shop.test, www.shop.test]
            issuer: pebble
            targets: [prod-shop]
            endpoints: ["127.0.0.1:{port}", "www.shop.test@127.0.0.1:{port}"]
          - name: api
            domains: [api.shop.test]
            issuer: pebble
            targets: [prod-api]
            endpoints: ["127.0.0.1:{port}"]
        """))
    return DemoFleet(workdir, inventory, pebble, nginx, [pebble, nginx])
