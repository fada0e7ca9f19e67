"""The distribute flow: idempotent, failure-isolated, transactional, staged.

A small real fleet: one nginx with three SNI vhosts fed by three file targets, and a
local CA as the issuer. Every fault gets a clear error naming the target, writes
nothing bad, and loses nothing; a re-run retries only what failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid

import pytest

from certfleet import pki
from certfleet_dev.nginx import Vhost
from certfleet_dev.ports import free_port
from certfleet.store import LocalStore
from tests.plugins.fleet import served_serial

pytestmark = pytest.mark.services

NAMES = ("a", "b", "c")


@pytest.fixture
def fleet(tmp_path, local_ca, nginx_factory):
    """Three vhosts serving an old certificate; the store holds a new one to distribute."""
    domains = [f"{n}.shop.test" for n in NAMES]
    old_chain, old_key = local_ca.issue(domains)
    tls = tmp_path / "tls"
    tls.mkdir()
    for n in NAMES:
        (tls / f"{n}.pem").write_bytes(old_chain)
        (tls / f"{n}.key").write_bytes(old_key)
    port = free_port()
    nginx = nginx_factory([Vhost(n, [f"{n}.shop.test"], port, tls / f"{n}.pem", tls / f"{n}.key", default_server=n == "a")
                           for n in NAMES])
    store = LocalStore(tmp_path / "store")
    chain, key = local_ca.issue(domains)
    new = store.put("shop", chain, key, issuer="internal")
    (tmp_path / "roots.pem").write_bytes(local_ca.root_pem)
    fleet = {"tmp": tmp_path, "tls": tls, "port": port, "nginx": nginx, "store": store, "new": new.serial,
             "old": pki.serial_hex(pki.load_certs(old_chain)[0]), "ca": local_ca,
             "targets": {n: {"kind": "file", "fullchain_path": f"tls/{n}.pem", "key_path": f"tls/{n}.key",
                             "reload_command": nginx.reload_command} for n in NAMES},
             "canary": [], "domains": domains}
    write(fleet)
    return fleet


def write(fleet, *, with_endpoint_targets=True):
    eps = [{"host": "127.0.0.1", "port": fleet["port"], "sni": f"{n}.shop.test",
            **({"target": n} if with_endpoint_targets else {})} for n in NAMES]
    inv = {
        "store": {"path": "store"}, "trust_bundle": "roots.pem",
        "issuers": {"internal": {"kind": "local-ca", "directory": str(fleet["ca"].directory)}},
        "targets": fleet["targets"],
        "certificates": [{"name": "shop", "domains": fleet["domains"], "issuer": "internal",
                          "targets": list(fleet["targets"]), "canary_targets": fleet["canary"], "endpoints": eps}],
    }
    path = fleet["tmp"] / "inventory.yaml"
    path.write_text(json.dumps(inv, indent=1))  # JSON is YAML
    fleet["inventory"] = str(path)


def mtimes(fleet):
    return {p.name: p.stat().st_mtime_ns for p in sorted(fleet["tls"].iterdir())}


def serving(fleet):
    return {n: served_serial(fleet["port"], f"{n}.shop.test", fleet["tmp"] / "roots.pem") for n in NAMES}


def run(fleet, **kw):
    from certfleet.flows.distribute import distribute

    return distribute(inventory=fleet["inventory"], verify_deadline=kw.pop("verify_deadline", 10), return_state=True, **kw)


def test_distributes_then_a_rerun_writes_nothing(prefect_harness, fleet):
    state = run(fleet)
    assert state.is_completed(), state.message
    assert serving(fleet) == {n: fleet["new"] for n in NAMES}
    before, reloads = mtimes(fleet), fleet["nginx"].reload_count
    state = run(fleet)
    assert state.is_completed() and "deployed 0, already current 3" in state.message
    assert mtimes(fleet) == before
    assert fleet["nginx"].reload_count == reloads


def test_target_changed_out_of_band_is_redeployed(prefect_harness, fleet):
    assert run(fleet).is_completed()
    (fleet["tls"] / "b.pem").write_bytes(b"someone edited this by hand\n")
    state = run(fleet)
    assert state.is_completed() and "deployed 1, already current 2" in state.message
    assert serving(fleet)["b"] == fleet["new"]


def test_one_failing_target_does_not_stop_the_others_and_a_rerun_retries_only_it(prefect_harness, fleet):
    blocker = fleet["tmp"] / "not-a-directory"
    blocker.write_text("a file where a directory should be")
    fleet["targets"]["c"].update(fullchain_path=str(blocker / "c.pem"), key_path=str(blocker / "c.key"))
    write(fleet, with_endpoint_targets=False)
    state = run(fleet)
    assert state.is_failed()
    assert "1 failed: shop → c: file target" in state.message and "cannot write" in state.message
    assert {n: s for n, s in serving(fleet).items() if n != "c"} == {"a": fleet["new"], "b": fleet["new"]}
    done = mtimes(fleet)
    fleet["targets"]["c"].update(fullchain_path="tls/c.pem", key_path="tls/c.key")
    write(fleet, with_endpoint_targets=False)
    state = run(fleet)
    assert state.is_completed() and "deployed 1, already current 2" in state.message, state.message
    after = mtimes(fleet)
    assert {k: after[k] for k in ("a.pem", "a.key", "b.pem", "b.key")} == {k: done[k] for k in ("a.pem", "a.key", "b.pem", "b.key")}


def test_failing_reload_restores_the_previous_files(prefect_harness, fleet):
    fleet["targets"]["b"]["reload_command"] = ["sh", "-c", "echo 'reload refused' >&2; exit 3"]
    write(fleet)
    old_files = {p: (fleet["tls"] / p).read_bytes() for p in ("b.pem", "b.key")}
    state = run(fleet)
    assert state.is_failed()
    assert "shop → b" in state.message and "exit 3" in state.message and "reload refused" in state.message
    assert {p: (fleet["tls"] / p).read_bytes() for p in old_files} == old_files
    assert serving(fleet)["b"] == fleet["old"]


def test_verification_failure_rolls_the_target_back(prefect_harness, fleet):
    # Target 'a' writes where nginx does not read (the incident's "wrong machine"):
    # its endpoint keeps serving the old certificate, so the deploy is rolled back.
    elsewhere = fleet["tmp"] / "elsewhere"
    elsewhere.mkdir()
    for ext in ("pem", "key"):
        (elsewhere / f"a.{ext}").write_bytes((fleet["tls"] / f"a.{ext}").read_bytes())
    fleet["targets"]["a"].update(fullchain_path="elsewhere/a.pem", key_path="elsewhere/a.key")
    fleet["canary"] = ["a"]  # alone in its wave: no other target's reload makes it live by accident
    write(fleet)
    old_pem = (elsewhere / "a.pem").read_bytes()
    state = run(fleet, verify_deadline=1)
    assert state.is_failed()
    assert "shop → a" in state.message and f"rolled back to {fleet['old']}" in state.message, state.message
    assert (elsewhere / "a.pem").read_bytes() == old_pem
    assert serving(fleet) == {n: fleet["old"] for n in NAMES}


def test_verification_failure_never_rolls_back_to_a_revoked_serial(prefect_harness, fleet):
    # As above, but the certificate the target held before was revoked (an emergency
    # rotation recorded it): putting it back would serve a revoked certificate.
    elsewhere = fleet["tmp"] / "elsewhere"
    elsewhere.mkdir()
    for ext in ("pem", "key"):
        (elsewhere / f"a.{ext}").write_bytes((fleet["tls"] / f"a.{ext}").read_bytes())
    fleet["targets"]["a"].update(fullchain_path="elsewhere/a.pem", key_path="elsewhere/a.key")
    fleet["canary"] = ["a"]
    write(fleet)
    fleet["store"].record_revocation("shop", fleet["old"], "keyCompromise")
    state = run(fleet, verify_deadline=1)
    assert state.is_failed()
    assert "shop → a" in state.message and f"not rolled back: the previous certificate {fleet['old']} was revoked (keyCompromise)" in state.message, state.message
    assert pki.serial_hex(pki.load_certs((elsewhere / "a.pem").read_bytes())[0]) == fleet["new"]


def test_failed_canary_holds_back_the_rest(prefect_harness, fleet):
    fleet["canary"] = ["a"]
    fleet["targets"]["a"]["reload_command"] = ["true"]  # the canary never goes live
    write(fleet)
    before = mtimes(fleet)
    state = run(fleet, verify_deadline=1)
    assert state.is_failed() and "held back 2" in state.message
    assert {k: v for k, v in mtimes(fleet).items() if k[0] in "bc"} == {k: v for k, v in before.items() if k[0] in "bc"}
    assert serving(fleet) == {n: fleet["old"] for n in NAMES}


def test_key_not_matching_the_certificate_is_refused_before_any_write(prefect_harness, fleet):
    # Corrupt the stored version's key (as a bad restore or a bug would): preflight catches it.
    _, other_key = fleet["ca"].issue(["x.test"])
    (fleet["store"].get("shop", fleet["new"]).path / "key.pem").write_bytes(other_key)
    before = mtimes(fleet)
    state = run(fleet)
    assert state.is_failed() and "KEY_MISMATCH" in state.message and "nothing written" in state.message
    assert mtimes(fleet) == before


def test_sans_not_covering_a_target_hostname_are_refused(prefect_harness, fleet):
    fleet["domains"] = fleet["domains"] + ["d.shop.test"]
    write(fleet)
    inv = json.loads(open(fleet["inventory"]).read())
    inv["certificates"][0]["endpoints"].append({"host": "127.0.0.1", "port": fleet["port"], "sni": "d.shop.test", "target": "a"})
    open(fleet["inventory"], "w").write(json.dumps(inv))
    before = mtimes(fleet)
    state = run(fleet)
    assert state.is_failed() and "SANS_DO_NOT_COVER" in state.message and "d.shop.test" in state.message
    assert mtimes(fleet) == before


@contextlib.contextmanager
def small_mount(path, options: str):
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs for the full/read-only directory test: {proc.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("options,expect", [("size=4k", "No space left"), ("ro,size=64k", "Read-only file system")])
def test_full_or_read_only_directory_is_a_clear_error_and_nothing_lost(prefect_harness, fleet, options, expect):
    mount = fleet["tmp"] / f"mnt-{uuid.uuid4().hex[:6]}"
    with small_mount(mount, options):
        if "ro" not in options:
            # Leave almost no room: the chain fits nowhere.
            (mount / "filler").write_bytes(b"x" * 3000)
        fleet["targets"]["c"].update(fullchain_path=str(mount / "c.pem"), key_path=str(mount / "c.key"))
        write(fleet, with_endpoint_targets=False)
        state = run(fleet)
        assert state.is_failed() and "shop → c" in state.message and expect in state.message, state.message
        assert not (mount / "c.pem").exists()
    assert serving(fleet)["a"] == fleet["new"]
