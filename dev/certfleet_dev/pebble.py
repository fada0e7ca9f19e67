"""Start Pebble (a test ACME CA) and pebble-challtestsrv (its fake DNS) on loopback.

Prefect-free so tests, the demo and the benchmarks share one launcher. Everything lives
in ``workdir``: the generated TLS certificate Pebble serves its API with (made at run
time, never committed), the config and the logs. All ports are free loopback ports.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfleet_dev.ports import free_port
from certfleet_dev.process import stop_process

log = logging.getLogger(__name__)

PEBBLE_BIN = "pebble"
CHALLTESTSRV_BIN = "pebble-challtestsrv"
_ISSUED = re.compile(r"Issued certificate serial ([0-9A-Fa-f]+) for order (\S+)")


@dataclass
class Pebble:
    """A running Pebble + challtestsrv pair, with helpers to ask Pebble what it did."""

    directory_url: str
    management_url: str
    ca_cert_path: Path
    challtestsrv_url: str
    dns_port: int
    log_path: Path
    challtestsrv_log_path: Path
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False)

    def _client(self) -> httpx.Client:
        """An HTTPS client trusting the CA that signed Pebble's own certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ca_cert_path))
        return httpx.Client(verify=ctx, timeout=10)

    def _management_get(self, path: str) -> httpx.Response:
        with self._client() as client:
            response = client.get(f"{self.management_url}{path}")
        response.raise_for_status()
        return response

    def roots_pem(self) -> bytes:
        """Pebble's root for issued certificates; a new one on every start."""
        return self._management_get("/roots/0").content

    def intermediates_pem(self) -> bytes:
        """The intermediate that signs issued leaves; a new one on every start."""
        return self._management_get("/intermediates/0").content

    def issued_serials(self) -> list[str]:
        """Serials Pebble logged as issued, in order, spelled like ``format(n, "x")``.

        The log is the CA's own record, so a test counting issuances here cannot be
        fooled by a client that claims success without an order.
        """
        text = self.log_path.read_text(errors="replace")
        return [format(int(m.group(1), 16), "x") for m in _ISSUED.finditer(text)]

    def cert_status(self, serial: str) -> dict[str, Any]:
        """Pebble's view of one certificate (``Status``: Valid / Revoked, ...)."""
        return self._management_get(f"/cert-status-by-serial/{serial}").json()

    def stop(self) -> None:
        """Stop both processes by PID and wait for them; safe to call twice."""
        for proc in reversed(self._procs):
            stop_process(proc)
        self._procs.clear()

    def __enter__(self) -> "Pebble":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_pebble(
    workdir: Path,
    *,
    validity_seconds: int | None = None,
    dns_server: str | None = None,
    nonce_reject: int | None = None,
    http_port: int | None = None,
    timeout: float = 20.0,
) -> Pebble:
    """Start challtestsrv and Pebble in ``workdir``; return once the directory answers.

    ``dns_server`` ("host:port") points Pebble's validator at another DNS server (e.g. a
    Knot under test) instead of challtestsrv. ``nonce_reject`` overrides Pebble's default
    5% rejection of good nonces; by default it stays, because real clients must cope.
    ``http_port`` is the port Pebble's validator connects to for http-01 (a web server
    under test, e.g. nginx serving a webroot); by default an unused free port.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = write_tls_files(workdir)
    dns_port, chall_mgmt = free_port(udp=True), free_port()
    chall_log = workdir / "challtestsrv.log"
    procs = [_start_challtestsrv(dns_port, chall_mgmt, chall_log)]
    try:
        _wait_tcp(chall_mgmt, timeout, procs[0], chall_log)
        acme_port, mgmt_port = free_port(), free_port()
        config = _write_config(workdir, acme_port, mgmt_port, cert_path, key_path, validity_seconds, http_port)
        pebble_log = workdir / "pebble.log"
        dns = dns_server or f"127.0.0.1:{dns_port}"
        procs.append(_start_pebble(config, dns, nonce_reject, pebble_log))
        pebble = Pebble(
            directory_url=f"https://127.0.0.1:{acme_port}/dir",
            management_url=f"https://127.0.0.1:{mgmt_port}",
            ca_cert_path=ca_path,
            challtestsrv_url=f"http://127.0.0.1:{chall_mgmt}",
            dns_port=dns_port,
            log_path=pebble_log,
            challtestsrv_log_path=chall_log,
            _procs=procs,
        )
        _wait_directory(pebble, procs[1], timeout)
    except BaseException:
        for proc in reversed(procs):
            stop_process(proc)
        raise
    log.info("pebble up: %s (dns 127.0.0.1:%d)", pebble.directory_url, dns_port)
    return pebble


def write_tls_files(workdir: Path) -> tuple[Path, Path, Path]:
    """Make a tiny CA and a leaf for 127.0.0.1/localhost; return (ca, cert, key) paths.

    Generated per run so no key file is ever committed; the key file is 0600.
    """
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certfleet devstack CA")])
    ca_cert = _sign(ca_name, ca_name, ca_key.public_key(), ca_key, is_ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    leaf_cert = _sign(leaf_name, ca_name, leaf_key.public_key(), ca_key, is_ca=False)
    ca_path, cert_path, key_path = (workdir / n for n in ("tls-ca.pem", "tls-cert.pem", "tls-key.pem"))
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    return ca_path, cert_path, key_path


def _sign(subject, issuer, public_key, signing_key, *, is_ca: bool) -> x509.Certificate:
    """One certificate valid for a day either side of now (clock skew in CI)."""
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    else:
        sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


def _write_config(workdir, acme_port, mgmt_port, cert_path, key_path, validity_seconds, http_port=None) -> Path:
    """Pebble's JSON config with only the keys 2.4.0 reads (see NOTES-test-services)."""
    cfg: dict[str, Any] = {
        "listenAddress": f"127.0.0.1:{acme_port}",
        "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": str(cert_path),
        "privateKey": str(key_path),
        "httpPort": http_port or free_port(),  # must be set even when http-01 is unused
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
    if validity_seconds is not None:
        cfg["certificateValidityPeriod"] = int(validity_seconds)
    path = workdir / "pebble-config.json"
    path.write_text(json.dumps({"pebble": cfg}, indent=2))
    return path


def _start_challtestsrv(dns_port: int, mgmt_port: int, log_path: Path) -> subprocess.Popen:
    """challtestsrv with only DNS and management on; the HTTP/TLS responders disabled."""
    args = [
        CHALLTESTSRV_BIN,
        "-dns01", f"127.0.0.1:{dns_port}",
        "-management", f"127.0.0.1:{mgmt_port}",
        "-http01", "", "-https01", "", "-tlsalpn01", "",
    ]  # fmt: skip
    log.info("starting challtestsrv: dns 127.0.0.1:%d, management %d", dns_port, mgmt_port)
    return _spawn(args, os.environ.copy(), log_path)


def _start_pebble(config: Path, dns: str, nonce_reject: int | None, log_path: Path) -> subprocess.Popen:
    """Pebble without validation sleeps, resolving through ``dns``."""
    env = os.environ.copy()
    env["PEBBLE_VA_NOSLEEP"] = "1"
    if nonce_reject is not None:
        env["PEBBLE_WFE_NONCEREJECT"] = str(nonce_reject)
    log.info("starting pebble: config %s, dns %s", config, dns)
    return _spawn([PEBBLE_BIN, "-config", str(config), "-dnsserver", dns], env, log_path)


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as out:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)


def _wait_tcp(port: int, timeout: float, proc: subprocess.Popen, log_path: Path) -> None:
    """Wait until something accepts on 127.0.0.1:port, failing fast if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(proc, log_path)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{Path(proc.args[0]).name} did not listen on {port}:\n{_tail(log_path)}")


def _wait_directory(pebble: Pebble, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until Pebble's ACME directory answers over HTTPS with our CA."""
    deadline = time.monotonic() + timeout
    with pebble._client() as client:
        while time.monotonic() < deadline:
            _check_alive(proc, pebble.log_path)
            try:
                if client.get(pebble.directory_url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"pebble directory {pebble.directory_url} did not answer:\n{_tail(pebble.log_path)}")


def _check_alive(proc: subprocess.Popen, log_path: Path) -> None:
    if proc.poll() is not None:
        name = Path(proc.args[0]).name
        raise RuntimeError(f"{name} exited with {proc.returncode}:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
