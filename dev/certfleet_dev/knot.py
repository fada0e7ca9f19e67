"""Start a throwaway Knot DNS server on loopback, for tests and local runs.

The server is authoritative for the given zones and accepts RFC 2136 TXT
updates signed with a TSIG key generated at start. Everything it writes
(config, zone files, LMDB databases, control socket, log) stays inside
``workdir`` so runs never collide and cleanup is ``rm -rf``. No Prefect import.

Knot 3.2 facts this relies on (see NOTES-test-services.md): the key algorithm
is spelled ``hmac-sha256``; an update ACL needs ``action: update`` and
``update-type: [TXT]``; ``zonefile-sync: -1`` keeps updates in the journal so
zone files are never rewritten under us.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from certfleet_dev.ports import free_port
from certfleet_dev.process import stop_process

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"
START_TIMEOUT = 10.0


class KnotStartError(RuntimeError):
    """knotd did not come up; the message carries the tail of its log."""


@dataclass
class Knot:
    """A running knotd. Stop it with ``stop()`` or by leaving the ``with`` block."""

    port: int
    tsig_name: str
    tsig_secret: str
    tsig_algorithm: str
    zones: list[str]
    workdir: Path
    process: subprocess.Popen = field(repr=False)
    host: str = "127.0.0.1"

    @property
    def log_path(self) -> Path:
        return self.workdir / "knot.log"

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate by PID (never by name: other knotd may run on the host)."""
        stop_process(self.process, timeout)

    def __enter__(self) -> Knot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:  # keep the TSIG secret out of test output
        return f"Knot(host={self.host!r}, port={self.port}, zones={self.zones!r}, pid={self.process.pid})"


def start_knot(
    workdir: Path,
    zones: list[str],
    *,
    tsig_name: str = "acme-key",
    tsig_algorithm: str = "hmac-sha256",
) -> Knot:
    """Write config + zones into ``workdir``, start knotd, return once it answers SOA.

    A port picked free can be taken by someone else before knotd binds it, so
    a start that fails is retried on a new port a couple of times.
    """
    workdir = Path(workdir).resolve()
    zones = [z.rstrip(".").lower() for z in zones]
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    _write_zone_files(workdir / "zones", zones)
    last_error: KnotStartError | None = None
    for _attempt in range(3):
        port = free_port(udp=True)  # knotd listens on both protocols with one number
        conf = _write_config(workdir, port, zones, tsig_name, tsig_algorithm, secret)
        process = _spawn(conf, workdir / "knot.log")
        knot = Knot(port, tsig_name, secret, tsig_algorithm, zones, workdir, process)
        try:
            _wait_ready(knot)
            return knot
        except KnotStartError as exc:
            knot.stop()
            last_error = exc
    assert last_error is not None
    raise last_error


def _write_zone_files(zone_dir: Path, zones: list[str]) -> None:
    zone_dir.mkdir(parents=True, exist_ok=True)
    for zone in zones:
        (zone_dir / f"{zone}.zone").write_text(_zone_text(zone))


def _zone_text(zone: str) -> str:
    """Smallest valid zone: SOA, NS, glue A. Short TTLs so tests never wait on caches."""
    return (
        f"$ORIGIN {zone}.\n"
        "$TTL 60\n"
        f"@  SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n"
        f"@  NS  ns.{zone}.\n"
        "ns A   127.0.0.1\n"
    )


def _write_config(
    workdir: Path, port: int, zones: list[str], tsig_name: str, algorithm: str, secret: str
) -> Path:
    run = workdir / "run"
    db = workdir / "db"
    for d in (run, db):
        d.mkdir(parents=True, exist_ok=True)
    zone_entries = "".join(
        f"  - domain: {z}\n    file: {z}.zone\n    acl: acme-update\n" for z in zones
    )
    text = f"""\
server:
    rundir: "{run}"
    pidfile: "{run}/knot.pid"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1

control:
    listen: "{run}/knot.sock"

log:
  - target: stderr
    any: info

database:
    storage: "{db}"
    journal-db: "{db}/journal"
    journal-db-max-size: 64M
    kasp-db: "{db}/kasp"
    kasp-db-max-size: 16M
    timer-db: "{db}/timer"
    timer-db-max-size: 16M
    catalog-db: "{db}/catalog"
    catalog-db-max-size: 16M

key:
  - id: {tsig_name}
    algorithm: {algorithm}
    secret: {secret}

acl:
  - id: acme-update
    key: {tsig_name}
    action: update
    update-type: [TXT]

template:
  - id: default
    storage: "{workdir / 'zones'}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes

zone:
{zone_entries}"""
    conf = workdir / "knot.conf"
    conf.write_text(text)
    conf.chmod(0o600)  # holds the TSIG secret
    return conf


def _spawn(conf: Path, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            [KNOTD, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the test runner is not forwarded twice
        )
    finally:
        log.close()


def _wait_ready(knot: Knot) -> None:
    """Poll every zone's SOA over UDP and TCP until all answer authoritatively."""
    deadline = time.monotonic() + START_TIMEOUT
    pending = [(z, tcp) for z in knot.zones for tcp in (False, True)]
    while pending:
        if knot.process.poll() is not None:
            raise KnotStartError(f"knotd exited with {knot.process.returncode}:\n{knot.log_tail()}")
        if time.monotonic() > deadline:
            raise KnotStartError(f"knotd not answering SOA for {pending} on port {knot.port}:\n{knot.log_tail()}")
        pending = [(z, tcp) for z, tcp in pending if not _answers_soa(knot, z, tcp)]
        if pending:
            time.sleep(0.02)


def _answers_soa(knot: Knot, zone: str, tcp: bool) -> bool:
    query = dns.message.make_query(zone + ".", dns.rdatatype.SOA)
    send = dns.query.tcp if tcp else dns.query.udp
    try:
        reply = send(query, knot.host, port=knot.port, timeout=0.5)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
