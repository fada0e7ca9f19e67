"""Monitor tasks: read-only looks at the fleet, and the events automations act on."""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from certfleet.blocks import registry
from certfleet import fleet
from certfleet.probe import probe_sync
from certfleet.tasks.common import load_inventory, roots_for, store_for


@task(name="snapshot", cache_policy=NO_CACHE, persist_result=False, task_run_name="snapshot {name}")
def snapshot_certificate(inventory_path: str, name: str) -> list[fleet.Row]:
    """What the store issued, what each target holds, what each endpoint serves."""
    inv = load_inventory(inventory_path)
    spec = inv.certificate(name)
    cur = store_for(inv).current(name)
    stored = cur.info if cur else None
    now = datetime.now(timezone.utc)
    rows = [fleet.endpoint_row(name, stored, r, now)
            for r in probe_sync(spec.endpoint_list(), roots=roots_for(inv, name))]
    for t in spec.targets:
        try:
            held, error = registry.target(inv, t).current(), None
        except Exception as exc:  # noqa: BLE001 - an unreachable target is a row, not a crash
            held, error = None, str(exc)
        rows.append(fleet.target_row(name, stored, t, held, error))
    return rows


@task(name="scan source", cache_policy=NO_CACHE, persist_result=False, task_run_name="scan discovery[{index}]")
def scan_source(inventory_path: str, index: int) -> list[fleet.Row]:
    inv = load_inventory(inventory_path)
    found = registry.discovery_source(inv, index).scan()
    store = store_for(inv)
    managed = []
    for spec in inv.certificates:
        cur = store.current(spec.name)
        managed.append(fleet.Managed(spec.name, tuple(spec.domains),
                                     frozenset(v.serial for v in store.versions(spec.name)),
                                     cur.info if cur else None))
    return fleet.discovered_rows(found, managed, datetime.now(timezone.utc))


@task(name="emit events", cache_policy=NO_CACHE, persist_result=False)
def emit_fleet_events(rows: list[fleet.Row]) -> list[str]:
    """Emit one Prefect event per finding; returns the event names, for the report."""
    emitted = []
    for spec in fleet.events_for(rows):
        emit_event(event=spec.event, resource=spec.resource, payload=spec.payload)
        emitted.append(spec.event)
    return emitted
