"""Monitor tasks: read-only looks at the fleet, and the events automations act on."""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from certfleet.blocks import registry
from certfleet import fleet
from certfleet.tasks.common import load_inventory, roots_for, store_for


@task(name="snapshot", cache_policy=NO_CACHE, persist_result=False, task_run_name="snapshot {name}")
def snapshot_certificate(inventory_path: str, name: str) -> list[fleet.Row]:
    """What the store issued, what each target holds, what each endpoint serves
    (``fleet.snapshot``, the same function ``certfleet status`` calls)."""
    inv = load_inventory(inventory_path)
    spec = inv.certificate(name)
    cur = store_for(inv).current(name)
    look = fleet.Look(name, cur.info if cur else None, tuple(spec.endpoint_list()), roots_for(inv, name),
                      tuple(spec.targets))
    return fleet.snapshot([look], read_target=lambda t: registry.target(inv, t).current())


@task(name="scan source", cache_policy=NO_CACHE, persist_result=False, task_run_name="scan discovery[{index}]")
def scan_source(inventory_path: str, index: int) -> list[fleet.Row]:
    inv = load_inventory(inventory_path)
    found = registry.discovery_source(inv, index).scan()
    return fleet.discovered_rows(found, fleet.managed(inv.certificates, store_for(inv)), datetime.now(timezone.utc))


@task(name="emit events", cache_policy=NO_CACHE, persist_result=False)
def emit_fleet_events(rows: list[fleet.Row]) -> list[str]:
    """Emit one Prefect event per finding; returns the event names, for the report."""
    emitted = []
    for spec in fleet.events_for(rows):
        emit_event(event=spec.event, resource=spec.resource, payload=spec.payload)
        emitted.append(spec.event)
    return emitted
