"""nginx fixtures: real SNI vhosts on loopback, with certificates from a local CA.

``nginx_factory(vhosts)`` starts an nginx in its own temp dir and stops every nginx it
started at teardown (by PID). ``tls_files(...)`` issues a certificate + key into files a
vhost can point at, and returns the serial so tests assert exactly what was issued.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from certfleet import localca, pki
from certfleet_dev.nginx import Nginx, Vhost, free_port, start_nginx


@dataclass(frozen=True)
class TlsFiles:
    """A certificate as nginx consumes it: a fullchain file, a key file, its serial."""

    cert_path: Path
    key_path: Path
    serial: str
    fullchain_pem: bytes


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory) -> localca.LocalCA:
    """One root → intermediate CA for the session; its root is the probe's trust anchor."""
    return localca.LocalCA.create(tmp_path_factory.mktemp("local-ca"))


@pytest.fixture
def tls_files(local_ca, tmp_path):
    """``tls_files(name, domains, kind="good")`` → TlsFiles written under tmp_path.

    ``kind``: "good" (leaf + intermediate), "expired", "not-yet-valid",
    "no-intermediate" (leaf only, the classic missing-intermediate outage),
    "self-signed".
    """
    directory = tmp_path / "tls"
    directory.mkdir(exist_ok=True)

    def make(name: str, domains: list[str], kind: str = "good") -> TlsFiles:
        chain, key = _issue(local_ca, domains, kind)
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_bytes(chain)
        key_path.write_bytes(key)
        key_path.chmod(0o600)
        serial = pki.serial_hex(pki.load_certs(chain)[0])
        return TlsFiles(cert_path, key_path, serial, chain)

    return make


def _issue(ca: localca.LocalCA, domains: list[str], kind: str) -> tuple[bytes, bytes]:
    now = datetime.now(timezone.utc)
    if kind == "good":
        return ca.issue(domains)
    if kind == "expired":
        return ca.issue(domains, not_before=now - timedelta(days=90), not_after=now - timedelta(days=1))
    if kind == "not-yet-valid":
        return ca.issue(domains, not_before=now + timedelta(days=1), not_after=now + timedelta(days=91))
    if kind == "no-intermediate":
        return ca.issue(domains, with_intermediate=False)
    if kind == "self-signed":
        return localca.self_signed(domains)
    raise ValueError(f"unknown certificate kind {kind!r}")


@pytest.fixture
def nginx_factory(tmp_path):
    """``nginx_factory(vhosts, **kw)`` → a running Nginx; all are stopped at teardown."""
    started: list[Nginx] = []

    def start(vhosts: list[Vhost] = (), **kw) -> Nginx:
        workdir = tmp_path / f"nginx-{len(started)}"
        nginx = start_nginx(workdir, list(vhosts), **kw)
        started.append(nginx)
        return nginx

    yield start
    for nginx in started:
        nginx.stop()


@pytest.fixture
def loopback_port():
    """``loopback_port(host="127.0.0.1")`` → a free TCP port (IPv6 when host is ::1)."""
    return free_port
