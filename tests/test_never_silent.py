"""Never silent: every flow has a timeout, runs are named after what they do, renew and
lifecycle publish one summary row per certificate, UNMANAGED certificates raise
``expiring`` events too. Artifacts and run names are read back through the API."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from certfleet import fleet


def test_every_flow_has_a_timeout():
    from certfleet.flows.distribute import distribute
    from certfleet.flows.emergency import emergency_rotation
    from certfleet.flows.lifecycle import lifecycle
    from certfleet.flows.monitor import monitor
    from certfleet.flows.notify import notify_alert, notify_verification_failed
    from certfleet.flows.renew import renew
    from certfleet.flows.verify import verify

    for f in (distribute, emergency_rotation, lifecycle, monitor, notify_alert, notify_verification_failed, renew, verify):
        assert f.timeout_seconds and f.timeout_seconds > 0, f.name
    assert monitor.timeout_seconds < 900  # shorter than its schedule: never overlaps the next run


def test_unmanaged_certificates_get_expiring_events():
    now = datetime.now(timezone.utc)
    row = fleet.Row(certificate="", kind="endpoint", location="legacy.test@10.0.0.9:443", status=fleet.Status.UNMANAGED,
                    reason="found by discovery, not in the inventory", seen_serial="abc",
                    not_after=now + timedelta(days=2), days_left=2.0)
    far = fleet.Row(certificate="", kind="endpoint", location="fine.test@10.0.0.8:443", status=fleet.Status.UNMANAGED,
                    reason="found", seen_serial="def", not_after=now + timedelta(days=80), days_left=80.0)
    events = fleet.events_for([row, far])
    [ev] = [e for e in events if e.event == "certfleet.certificate.expiring"]
    assert ev.resource["certfleet.endpoint"] == "legacy.test@10.0.0.9:443"
    assert ev.resource["certfleet.severity"] == "critical"
    assert ev.resource["certfleet.certificate"] == ""  # the renew automation matches "?*": not this one


async def _read(flow_run_ids):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)))
        arts = await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids)))
        return runs, arts


@pytest.mark.services
def test_lifecycle_names_its_runs_and_publishes_one_row_per_certificate(prefect_harness, fleet):
    import json

    from prefect.client.orchestration import get_client
    from certfleet.flows.lifecycle import lifecycle

    state = lifecycle(inventory=str(fleet["inventory"]), certificates=["shop"], verify_deadline=30, return_state=True)
    assert state.is_completed(), state.message
    parent = state.state_details.flow_run_id

    async def children():
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
        async with get_client() as client:
            me = await client.read_flow_run(parent)
            subs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])))
            return me, subs
    me, subs = asyncio.run(children())
    assert me.name == "lifecycle-shop"
    assert {r.name for r in subs} == {"renew-shop", "distribute-shop", "verify-shop"}
    runs, arts = asyncio.run(_read([parent, *(r.id for r in subs)]))
    by_key = {a.key: a for a in arts}
    renew_rows = json.loads(by_key["renewal-summary"].data) if isinstance(by_key["renewal-summary"].data, str) else by_key["renewal-summary"].data
    assert len(renew_rows) == 1 and renew_rows[0]["certificate"] == "shop"
    assert renew_rows[0]["result"].startswith("issued ") and renew_rows[0]["why"]
    life = by_key["lifecycle-summary"].data
    life_rows = json.loads(life) if isinstance(life, str) else life
    assert [r["certificate"] for r in life_rows] == ["shop"]
    assert life_rows[0]["renewal"].startswith("issued ")
    assert "production-lb" in life_rows[0]["rollout"]
    assert "OK" in life_rows[0]["verification"]
