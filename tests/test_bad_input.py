"""Bad input to a real run: a clear error naming file, path and field — and no write."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.services


def snapshot(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "nginx" not in p.parts}


@pytest.mark.parametrize("mangle,expect", [
    (lambda t: t.replace("domains: [shop.test, www.shop.test]", "domains: [shop.test, 'exa mple.com']"),
     "inventory.yaml: certificates[0].domains[1]: 'exa mple.com' is not a valid DNS name"),
    (lambda t: t.replace("kind: file", "kind: fiel"),
     "inventory.yaml: targets.production-lb.kind: unknown target kind 'fiel'"),
    (lambda t: t.replace("issuers:", "issuers: [", 1),
     "inventory.yaml: line"),
    (lambda t: t.replace("email: ops@shop.test", "email: ops@shop.test\n    eab_hmac_key: hunter2"),
     "issuers.pebble.eab_hmac_key: secrets are never inline"),
])
def test_bad_inventory_fails_clearly_and_writes_nothing(prefect_harness, fleet, tmp_path, issued_since, mangle, expect):
    from certfleet.flows.lifecycle import lifecycle

    inv = fleet["inventory"]
    inv.write_text(mangle(inv.read_text()))
    before = snapshot(tmp_path)
    reloads = fleet["nginx"].reload_count
    state = lifecycle(inventory=str(inv), verify_deadline=1, return_state=True)
    assert state.is_failed()
    assert expect in state.message
    assert "hunter2" not in state.message
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "store").exists()
    assert fleet["nginx"].reload_count == reloads
    assert issued_since() == []
