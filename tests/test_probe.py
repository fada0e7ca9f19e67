"""The TLS probe against real nginx vhosts and misbehaving listeners on loopback.

Each test asserts what a user would see: the status, the serial nginx actually served
(equal to the one issued), and that a broken endpoint neither raises nor stalls a scan.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from certfleet import pki
from certfleet_dev.nginx import (
    NginxError,
    Vhost,
    free_port,
    ipv6_loopback_available,
)
from certfleet.models import Endpoint, ProbeStatus
from certfleet.probe import probe, probe_many, probe_sync

pytestmark = pytest.mark.services

FAST = dict(connect_timeout=1.0, handshake_timeout=1.0)
_KINDS = {  # SNI name → (certificate kind, names in the certificate)
    "good.test": ("good", ["good.test"]),
    "expired.test": ("expired", ["expired.test"]),
    "future.test": ("not-yet-valid", ["future.test"]),
    "selfsigned.test": ("self-signed", ["selfsigned.test"]),
    "nointer.test": ("no-intermediate", ["nointer.test"]),
    "wronghost.test": ("good", ["other.test"]),
}


def probe1(endpoint, **kw):
    return asyncio.run(probe(endpoint, **kw))


def probe_all(endpoints, **kw):
    return asyncio.run(probe_many(endpoints, **kw))


@pytest.fixture
def fleet(nginx_factory, tls_files):
    """One nginx, one TLS port, one SNI vhost per failure kind; plus a plain-HTTP port."""
    port, plain_port = free_port(), free_port()
    issued, vhosts = {}, []
    for sni, (kind, names) in _KINDS.items():
        files = tls_files(sni, names, kind)
        issued[sni] = files
        vhosts.append(Vhost(sni, [sni], port, files.cert_path, files.key_path,
                            default_server=(sni == "good.test")))
    vhosts.append(Vhost("plain", ["plain.test"], plain_port, None, None))
    nginx = nginx_factory(vhosts)
    return nginx, port, plain_port, issued


@pytest.fixture
def roots(local_ca):
    return [local_ca.root_cert]


@pytest.fixture
def silent_port():
    """A listener whose kernel completes TCP handshakes but whose owner never speaks."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield sock.getsockname()[1]


def test_good_vhost_is_ok_with_issued_serial(fleet, roots):
    nginx, port, _, issued = fleet
    result = probe1(Endpoint("127.0.0.1", port, "good.test"), roots=roots)
    assert result.status == ProbeStatus.OK, result.reason
    assert result.serial == issued["good.test"].serial
    assert len(result.chain_pem) == 2  # leaf + intermediate, as served
    assert result.chain_valid and result.hostname_valid
    assert "good.test@127.0.0.1" in result.reason


@pytest.mark.parametrize("sni, status", [
    ("expired.test", ProbeStatus.EXPIRED),
    ("future.test", ProbeStatus.NOT_YET_VALID),
    ("selfsigned.test", ProbeStatus.SELF_SIGNED),
    ("nointer.test", ProbeStatus.INCOMPLETE_CHAIN),
    ("wronghost.test", ProbeStatus.HOSTNAME_MISMATCH),
])
def test_bad_certificate_is_named_and_described(fleet, roots, sni, status):
    nginx, port, _, issued = fleet
    result = probe1(Endpoint("127.0.0.1", port, sni), roots=roots)
    assert result.status == status, result.reason
    assert result.serial == issued[sni].serial  # the leaf is reported even when invalid
    assert result.chain_pem and result.chain_pem[0].startswith("-----BEGIN CERTIFICATE")
    assert sni in result.reason
    assert not result.ok


def test_wrong_host_keeps_chain_valid_but_not_hostname(fleet, roots):
    _, port, _, _ = fleet
    result = probe1(Endpoint("127.0.0.1", port, "wronghost.test"), roots=roots)
    assert result.chain_valid and not result.hostname_valid


def test_unknown_sni_gets_the_default_server(fleet, roots):
    _, port, _, issued = fleet
    result = probe1(Endpoint("127.0.0.1", port, "nobody.test"), roots=roots)
    assert result.status == ProbeStatus.HOSTNAME_MISMATCH
    assert result.serial == issued["good.test"].serial


def test_plain_http_port(fleet, roots):
    _, _, plain_port, _ = fleet
    result = probe1(Endpoint("127.0.0.1", plain_port, "plain.test"), roots=roots, **FAST)
    assert result.status == ProbeStatus.PLAIN_HTTP, result.reason
    assert result.leaf is None


def test_closed_port_is_refused(roots):
    result = probe1(Endpoint("127.0.0.1", free_port(), "closed.test"), roots=roots, **FAST)
    assert result.status == ProbeStatus.REFUSED, result.reason
    assert "closed.test" in result.reason


def test_silent_listener_times_out(silent_port, roots):
    result = probe1(Endpoint("127.0.0.1", silent_port, "silent.test"),
                         roots=roots, connect_timeout=1.0, handshake_timeout=0.5)
    assert result.status == ProbeStatus.TIMEOUT, result.reason
    assert 0.5 <= result.elapsed < 2.0


def test_server_that_hangs_up_is_reset(roots):
    async def accept_and_hang_up():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
            sock.setblocking(False)
            endpoint = Endpoint("127.0.0.1", sock.getsockname()[1], "hangup.test")
            task = asyncio.create_task(probe(endpoint, roots=roots, **FAST))
            conn, _ = await asyncio.get_running_loop().sock_accept(sock)
            conn.close()
            return await task

    result = asyncio.run(accept_and_hang_up())
    assert result.status == ProbeStatus.RESET, result.reason


def test_untrusted_when_roots_do_not_include_our_ca(fleet):
    _, port, _, issued = fleet
    result = probe1(Endpoint("127.0.0.1", port, "good.test"), roots=None)
    assert not result.ok and not result.chain_valid
    assert result.status in (ProbeStatus.UNTRUSTED_CHAIN, ProbeStatus.INCOMPLETE_CHAIN)
    assert result.serial == issued["good.test"].serial


@pytest.mark.skipif(not ipv6_loopback_available(), reason="::1 cannot be bound on this machine")
def test_ipv6_loopback(nginx_factory, tls_files, roots):
    files = tls_files("v6", ["v6.test"])
    port = free_port("::1")
    nginx_factory([Vhost("v6", ["v6.test"], port, files.cert_path, files.key_path, listen="::1")])
    endpoint = Endpoint("::1", port, "v6.test")
    result = probe1(endpoint, roots=roots)
    assert result.status == ProbeStatus.OK, result.reason
    assert result.serial == files.serial
    assert "[::1]" in str(endpoint)


def test_scan_of_50_with_silent_and_closed_finishes_in_bounded_time(fleet, silent_port, roots):
    """A silent endpoint costs its own timeout; the other 49 are not held up by it."""
    _, port, plain_port, issued = fleet
    snis = list(_KINDS) * 8  # 48 TLS endpoints
    endpoints = [Endpoint("127.0.0.1", silent_port, "silent.test")]
    endpoints += [Endpoint("127.0.0.1", port, sni) for sni in snis]
    endpoints += [Endpoint("127.0.0.1", free_port(), "closed.test")]
    started = time.monotonic()
    results = probe_all(endpoints, roots=roots, concurrency=20,
                               connect_timeout=1.0, handshake_timeout=1.0)
    wall = time.monotonic() - started
    assert [r.endpoint for r in results] == endpoints  # input order kept
    assert results[0].status == ProbeStatus.TIMEOUT
    assert results[-1].status == ProbeStatus.REFUSED
    by_sni = {r.endpoint.sni: r for r in results[1:-1]}
    assert by_sni["good.test"].ok and by_sni["expired.test"].status == ProbeStatus.EXPIRED
    assert all(r.elapsed < 1.0 for r in results[1:-1])  # none waited on the silent one
    assert wall < 1.0 + 1.0 + 5.0  # the timeouts plus generous slack, not a stall


def test_probe_sync_and_sharding_agree(fleet, roots):
    """Two worker processes give the same answers, in the same order, as one."""
    _, port, _, issued = fleet
    endpoints = [Endpoint("127.0.0.1", port, sni) for sni in list(_KINDS) * 3]
    single = probe_sync(endpoints, roots=roots, processes=1)
    sharded = probe_sync(endpoints, roots=roots, processes=2)
    assert [(r.endpoint, r.status, r.serial) for r in single] == \
        [(r.endpoint, r.status, r.serial) for r in sharded]
    assert {r.serial for r in sharded if r.endpoint.sni == "good.test"} == {issued["good.test"].serial}


def test_reload_makes_new_serial_visible_and_is_counted(fleet, roots, tls_files):
    """The distribution story: new files on disk, one reload, the probe sees the new serial."""
    nginx, port, _, issued = fleet
    endpoint = Endpoint("127.0.0.1", port, "good.test")
    assert nginx.reload_count == 0
    renewed = tls_files("good-renewed", ["good.test"])
    good = issued["good.test"]
    good.cert_path.write_bytes(renewed.fullchain_pem)
    good.key_path.write_bytes(renewed.key_path.read_bytes())
    assert (probe1(endpoint, roots=roots)).serial == good.serial  # not reloaded yet
    nginx.reload()
    assert nginx.reload_count == 1
    result = probe1(endpoint, roots=roots)
    assert result.ok and result.serial == renewed.serial


def test_add_vhost_is_live_on_return(fleet, roots, tls_files):
    nginx, port, _, _ = fleet
    files = tls_files("late", ["late.test"])
    nginx.add_vhost(Vhost("late", ["late.test"], port, files.cert_path, files.key_path))
    result = probe1(Endpoint("127.0.0.1", port, "late.test"), roots=roots)
    assert result.ok and result.serial == files.serial
    assert pki.san_covers(result.leaf.sans, "late.test")


@pytest.fixture
def alert_port():
    """A server that answers any ClientHello with a fatal handshake_failure alert."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"\x15\x03\x03\x00\x02\x02\x28")  # alert: fatal, handshake_failure

    threading.Thread(target=serve, daemon=True).start()
    yield sock.getsockname()[1]
    sock.close()


def test_tls_alert_is_handshake_failed(alert_port, roots):
    result = probe1(Endpoint("127.0.0.1", alert_port, "alert.test"), roots=roots, **FAST)
    assert result.status == ProbeStatus.HANDSHAKE_FAILED, result.reason
    assert "HANDSHAKE_FAILURE" in result.reason.upper()


def test_rejected_reload_raises_and_old_certificate_stays_served(fleet, roots):
    """A broken config must not take the endpoint down, and the caller must hear about it."""
    nginx, port, _, issued = fleet
    nginx.vhosts[0].cert_path = nginx.workdir / "missing.pem"
    nginx.write_config()
    with pytest.raises(NginxError, match="missing.pem"):
        nginx.reload()
    result = probe1(Endpoint("127.0.0.1", port, "good.test"), roots=roots)
    assert result.ok and result.serial == issued["good.test"].serial
