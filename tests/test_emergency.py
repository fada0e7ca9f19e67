"""Emergency rotation: a key compromise across 20 certificates, and a CA that is down.

Twenty certificates from Pebble on nginx (a file target + an SNI vhost each); five also
go to S3 (moto server), five to Kubernetes Secrets (kmock). One call rotates them all.
Asserted from outside certfleet: each endpoint's served serial (our own handshake), the
objects and Secrets (plain boto3 / the official client), and every old serial revoked
at Pebble (its management API).
"""

from __future__ import annotations

import asyncio
import json
import textwrap

import pytest

from certfleet import pki
from certfleet_dev.nginx import Vhost
from certfleet_dev.pebble import start_pebble
from certfleet_dev.ports import free_port
from certfleet.store import LocalStore
from tests.plugins.fleet import served_serial

pytestmark = pytest.mark.services

N = 20


def _serial_of_pem(pem: bytes) -> str:
    return pki.serial_hex(pki.order_chain(pki.load_certs(pem))[0])


def build_fleet(tmp_path, pebble, nginx_factory, *, s3=None, kubeconfig=None, fallback=None):
    port = free_port()
    tls = tmp_path / "tls"
    tls.mkdir()
    vhosts, targets, certs = [], [], []
    for i in range(N):
        # nginx needs the files to exist at start: a placeholder from Pebble comes later.
        from certfleet import localca

        chain, key = localca.self_signed([f"c{i}.shop.test"])
        (tls / f"c{i}.pem").write_bytes(chain)
        (tls / f"c{i}.key").write_bytes(key)
        vhosts.append(Vhost(f"c{i}", [f"c{i}.shop.test"], port, tls / f"c{i}.pem", tls / f"c{i}.key", default_server=i == 0))
    nginx = nginx_factory(vhosts)
    reload = json.dumps(nginx.reload_command)
    for i in range(N):
        targets.append(f"  file-{i}: {{kind: file, fullchain_path: tls/c{i}.pem, key_path: tls/c{i}.key, reload_command: {reload}}}")
        names = [f"file-{i}"]
        if s3 and i < 5:
            targets.append(f"  s3-{i}: {{kind: s3, bucket: {s3['bucket']}, key_prefix: c{i}/, credentials: {json.dumps(s3['credentials'])}}}")
            names.append(f"s3-{i}")
        if kubeconfig and 5 <= i < 10:
            targets.append(f"  k8s-{i}: {{kind: kubernetes, secret_name: c{i}-tls, namespaces: [shop], kubeconfig_path: {kubeconfig}}}")
            names.append(f"k8s-{i}")
        certs.append(f"  - {{name: c{i}, domains: [c{i}.shop.test], issuer: pebble, targets: [{', '.join(names)}], "
                     f"endpoints: ['127.0.0.1:{port}']}}")
    (tmp_path / "roots.pem").write_bytes(pebble.roots_pem() + (fallback.roots_pem() if fallback else b""))
    fb = "\n    fallback: backup" if fallback else ""
    backup = ""
    if fallback:
        backup = textwrap.dedent(f"""
          backup:
            kind: acme
            directory_url: {fallback.directory_url}
            ca_bundle: {fallback.ca_cert_path}
            solver: {{kind: challtestsrv, url: "{fallback.challtestsrv_url}"}}""").replace("\n", "\n  ")
    inv = tmp_path / "inventory.yaml"
    inv.write_text(
        "store: {path: store}\ntrust_bundle: roots.pem\nissuers:\n"
        f"  pebble:\n    kind: acme\n    directory_url: {pebble.directory_url}\n    ca_bundle: {pebble.ca_cert_path}\n"
        f"    solver: {{kind: challtestsrv, url: \"{pebble.challtestsrv_url}\"}}{fb}{backup}\n"
        "targets:\n" + "\n".join(targets) + "\ncertificates:\n" + "\n".join(certs) + "\n")
    return {"inventory": inv, "port": port, "nginx": nginx, "store": LocalStore(tmp_path / "store"), "tls": tls}


@pytest.mark.asyncio
async def test_compromise_rotates_verifies_then_revokes(prefect_harness, tmp_path, pebble, nginx_factory,
                                                         aws, s3_bucket, kmock, monkeypatch):
    from certfleet.flows.emergency import emergency_rotation
    from certfleet.flows.lifecycle import lifecycle
    from tests.test_target_kubernetes import read_secret, serial_of, write_kubeconfig

    kubeconfig = write_kubeconfig(tmp_path, str(kmock.url))
    monkeypatch.setenv("CERTFLEET_TEST_AWS_SECRET", "testing")  # secrets are references, never inline
    creds = {"region_name": aws.region_name, "aws_access_key_id": "testing",
             "aws_secret_access_key": {"env": "CERTFLEET_TEST_AWS_SECRET"}, "endpoint_url": aws.endpoint_url}
    f = build_fleet(tmp_path, pebble, nginx_factory, s3={"bucket": s3_bucket, "credentials": creds}, kubeconfig=kubeconfig)
    inv = str(f["inventory"])
    state = await asyncio.to_thread(lifecycle, inventory=inv, verify_deadline=30, return_state=True)
    assert state.is_completed(), state.message
    old = {f"c{i}": f["store"].current(f"c{i}").serial for i in range(N)}

    # A dry run changes nothing anywhere.
    mtimes = sorted((p.name, p.stat().st_mtime_ns) for p in f["tls"].iterdir())
    reloads = f["nginx"].reload_count
    state = await asyncio.to_thread(emergency_rotation, inventory=inv, issuer="pebble", dry_run=True, return_state=True)
    assert state.is_completed() and "nothing changed" in state.message
    assert sorted((p.name, p.stat().st_mtime_ns) for p in f["tls"].iterdir()) == mtimes
    assert f["nginx"].reload_count == reloads
    assert {n: f["store"].current(n).serial for n in old} == old

    from certfleet.blocks.notifiers.slack import SlackNotifier
    from tests.test_leaks import key_fragments, leaks_in
    from tests.test_slack import Receiver

    slack = Receiver()
    await asyncio.to_thread(SlackNotifier(bot_token="xoxb-test", channel="C0OPS", base_url=f"{slack.url}/api/").save,
                            "emergency-test-slack", overwrite=True)
    state = await asyncio.to_thread(emergency_rotation, inventory=inv, issuer="pebble", reason="keyCompromise",
                                    verify_deadline=30, slack_block="emergency-test-slack", return_state=True)
    slack.close()
    assert state.is_completed(), state.message
    new = {n: f["store"].current(n).serial for n in old}
    assert all(new[n] != old[n] for n in old)
    # New keys always: no certificate kept its public key.
    for n in old:
        assert f["store"].get(n, new[n]).info.public_key_sha256 != f["store"].get(n, old[n]).info.public_key_sha256
    # Every endpoint serves its new serial (our own handshake, full verification).
    for i in range(N):
        assert served_serial(f["port"], f"c{i}.shop.test", tmp_path / "roots.pem") == new[f"c{i}"]
    s3 = aws.client("s3")
    for i in range(5):
        body = s3.get_object(Bucket=s3_bucket, Key=f"c{i}/fullchain.pem")["Body"].read()
        assert _serial_of_pem(body) == new[f"c{i}"]
    for i in range(5, 10):
        secret = await asyncio.to_thread(read_secret, kubeconfig, "shop", f"c{i}-tls")
        assert serial_of(secret) == new[f"c{i}"]
    # Only then revoked: every old serial is revoked at the CA.
    for n, serial in old.items():
        assert pebble.cert_status(serial)["Status"] == "Revoked", n
        assert pebble.cert_status(new[n])["Status"] == "Valid", n
    # Slack got exactly one message: the timeline, with no key material in it.
    assert len(slack.requests) == 1
    body = slack.requests[0]["body"]
    assert b"emergency rotation" in body and b"keyCompromise" in body and b"revoked 20/20" in body
    keys = sorted((tmp_path / "store").rglob("key.pem"))
    assert len(keys) >= 2 * N
    assert not leaks_in(body, key_fragments(keys))
    timeline = (await asyncio.to_thread(state.result))["timeline"]
    steps = [line.split(") ", 1)[1] for line in timeline]
    assert steps[0] == "started" and steps[1].startswith("issued 20/20") and steps[2] == "distributed"
    assert steps[3].startswith("verified 20/20") and steps[4].startswith("revoked 20/20")


@pytest.mark.asyncio
async def test_unsafe_endpoint_keeps_old_certificate_unrevoked(prefect_harness, tmp_path, pebble, nginx_factory):
    """An endpoint that cannot be made safe is named, and its old certificate not revoked."""
    from certfleet.flows.emergency import emergency_rotation
    from certfleet.flows.lifecycle import lifecycle

    f = build_fleet(tmp_path, pebble, nginx_factory)
    inv = f["inventory"]
    state = await asyncio.to_thread(lifecycle, inventory=str(inv), verify_deadline=30, return_state=True)
    assert state.is_completed(), state.message
    old = f["store"].current("c3").serial
    # c3's target now writes where nginx does not read: its endpoint will keep the old one.
    inv.write_text(inv.read_text().replace("fullchain_path: tls/c3.pem, key_path: tls/c3.key",
                                           "fullchain_path: elsewhere/c3.pem, key_path: elsewhere/c3.key"))
    state = await asyncio.to_thread(emergency_rotation, inventory=str(inv), certificates=["c3", "c4"],
                                    reason="superseded", verify_deadline=2, return_state=True)
    assert state.is_failed()
    assert f"c3.shop.test@127.0.0.1:{f['port']}" in state.message
    assert pebble.cert_status(old)["Status"] == "Valid", "must not revoke while an endpoint depends on it"


@pytest.mark.asyncio
async def test_fallback_issuer_when_primary_ca_is_down(prefect_harness, tmp_path, nginx_factory, pebble):
    """Two Pebbles; the primary is stopped: the fallback issues, loudly, and all is verified."""
    from certfleet.flows.emergency import emergency_rotation

    primary = start_pebble(tmp_path / "primary")
    backup = pebble
    try:
        f = build_fleet(tmp_path, primary, nginx_factory, fallback=backup)
    finally:
        primary.stop()
    inv = str(f["inventory"])
    before = len(backup.issued_serials())
    state = await asyncio.to_thread(emergency_rotation, inventory=inv, certificates=["c0", "c1"],
                                    reason="cessationOfOperation", verify_deadline=30, return_state=True)
    assert state.is_completed(), state.message
    rows = {r["certificate"]: r for r in (await asyncio.to_thread(state.result))["rows"]}
    assert rows["c0"]["issuer"] == "backup (FALLBACK)"
    issued = backup.issued_serials()[before:]
    assert sorted(issued) == sorted(f["store"].current(n).serial for n in ("c0", "c1"))
    for n in ("c0", "c1"):
        assert served_serial(f["port"], f"{n}.shop.test", tmp_path / "roots.pem") == f["store"].current(n).serial
