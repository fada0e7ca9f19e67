"""The monitor flow: the fleet as a user sees it, and the events automations act on.

The drift case from the issue: the store holds serial B, one of three nginx vhosts still
serves A. The monitor must say DRIFT for exactly that endpoint and emit exactly one
drift event — read back from the Prefect server, as an automation would see it.
"""

from __future__ import annotations

import textwrap
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from certfleet_dev.nginx import Vhost
from certfleet_dev.ports import free_port
from certfleet.store import LocalStore

pytestmark = pytest.mark.services


def read_events(names: list[str], since: datetime, certificate: str, expected: int, timeout: float = 20.0) -> list[dict]:
    """Events the server has stored (the event persister flushes every few seconds)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    body = {"filter": {"event": {"name": names}, "occurred": {"since": since.isoformat()},
                       "resource": {"labels": {"certfleet.certificate": [certificate]}}}, "limit": 50}
    while True:
        with get_client(sync_client=True) as client:
            events = client.request("POST", "/events/filter", json=body).json()["events"]
        if len(events) >= expected or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


@pytest.fixture
def drifting_fleet(tmp_path, local_ca, nginx_factory):
    name = f"drift-{uuid.uuid4().hex[:8]}"   # events are per certificate: keep tests apart
    domains = ["a.shop.test", "b.shop.test", "c.shop.test"]
    store = LocalStore(tmp_path / "store")
    b_chain, b_key = local_ca.issue(domains)
    b = store.put(name, b_chain, b_key, issuer="local")
    a_chain, a_key = local_ca.issue(domains)
    for label, chain, key in (("b", b_chain, b_key), ("a", a_chain, a_key)):
        (tmp_path / f"{label}.pem").write_bytes(chain)
        (tmp_path / f"{label}.key").write_bytes(key)
    port = free_port()
    nginx_factory([
        Vhost("a", ["a.shop.test"], port, tmp_path / "b.pem", tmp_path / "b.key", default_server=True),
        Vhost("b", ["b.shop.test"], port, tmp_path / "b.pem", tmp_path / "b.key"),
        Vhost("c", ["c.shop.test"], port, tmp_path / "a.pem", tmp_path / "a.key"),  # never got B
    ])
    (tmp_path / "roots.pem").write_bytes(local_ca.root_pem)
    inv = tmp_path / "inventory.yaml"
    inv.write_text(textwrap.dedent(f"""
        store: {{path: store}}
        trust_bundle: roots.pem
        issuers:
          internal: {{kind: local-ca, directory: {local_ca.directory}}}
        certificates:
          - name: {name}
            domains: [a.shop.test, b.shop.test, c.shop.test]
            issuer: internal
            endpoints: ["a.shop.test@127.0.0.1:{port}", "b.shop.test@127.0.0.1:{port}", "c.shop.test@127.0.0.1:{port}"]
        discovery:
          - {{kind: files, paths: ["*.pem"]}}
    """))
    return {"inventory": inv, "name": name, "port": port, "b": b.serial, "store": store}


def test_drift_on_exactly_one_endpoint_and_one_event(prefect_harness, drifting_fleet):
    from certfleet.flows.monitor import monitor

    f = drifting_fleet
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    before = [v.serial for v in f["store"].versions(f["name"])]
    state = monitor(inventory=str(f["inventory"]), return_state=True)
    assert state.is_completed(), state.message
    rows = state.result()
    endpoint_rows = {r.location: r for r in rows if r.kind == "endpoint"}
    assert {loc: str(r.status) for loc, r in endpoint_rows.items()} == {
        f"a.shop.test@127.0.0.1:{f['port']}": "OK",
        f"b.shop.test@127.0.0.1:{f['port']}": "OK",
        f"c.shop.test@127.0.0.1:{f['port']}": "DRIFT",
    }
    assert f["b"] in endpoint_rows[f"c.shop.test@127.0.0.1:{f['port']}"].reason
    # The files source finds a.pem (drift: not the issued serial) and b.pem (the issued one).
    found = {r.location.rsplit("/", 1)[-1]: str(r.status) for r in rows if r.kind == "discovered"}
    assert found == {"a.pem": "DRIFT", "b.pem": "OK"}

    drift = read_events(["certfleet.certificate.drift"], since, f["name"], expected=2)
    endpoints = sorted(e["resource"].get("certfleet.endpoint", e["resource"].get("certfleet.location")) for e in drift)
    assert [e for e in endpoints if e.startswith("c.shop.test")] == [f"c.shop.test@127.0.0.1:{f['port']}"]
    assert len([e for e in drift if "certfleet.endpoint" in e["resource"]]) == 1
    # Monitor writes nothing.
    assert [v.serial for v in f["store"].versions(f["name"])] == before


def test_expiring_event_carries_days_left_and_severity(prefect_harness, tmp_path, local_ca, nginx_factory):
    from certfleet.flows.monitor import monitor

    name = f"soon-{uuid.uuid4().hex[:8]}"
    now = datetime.now(timezone.utc)
    chain, key = local_ca.issue(["soon.shop.test"], not_before=now - timedelta(days=85), not_after=now + timedelta(days=3))
    (tmp_path / "c.pem").write_bytes(chain)
    (tmp_path / "c.key").write_bytes(key)
    port = free_port()
    nginx_factory([Vhost("soon", ["soon.shop.test"], port, tmp_path / "c.pem", tmp_path / "c.key")])
    LocalStore(tmp_path / "store").put(name, chain, key)
    (tmp_path / "roots.pem").write_bytes(local_ca.root_pem)
    inv = tmp_path / "inventory.yaml"
    inv.write_text(textwrap.dedent(f"""
        store: {{path: store}}
        trust_bundle: roots.pem
        issuers: {{internal: {{kind: local-ca, directory: {local_ca.directory}}}}}
        certificates:
          - {{name: {name}, domains: [soon.shop.test], issuer: internal, endpoints: ["127.0.0.1:{port}"]}}
    """))
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    state = monitor(inventory=str(inv), return_state=True)
    assert state.is_completed(), state.message
    events = read_events(["certfleet.certificate.expiring"], since, name, expected=1)
    assert len(events) == 1
    ev = events[0]
    assert ev["resource"]["certfleet.severity"] == "critical"
    assert 2.9 < ev["payload"]["days_left"] <= 3.0
    assert "PRIVATE KEY" not in str(ev)
