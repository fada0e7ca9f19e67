"""Monitor: discovery + probe, no writes. Cheap, frequent, and the source of the events
(expiring, drift, unreachable, verification failed) that automations act on."""

from __future__ import annotations

from collections import Counter

from prefect import flow
from certfleet.flows._names import TIMEOUTS, run_name
from prefect.states import Completed, Failed

from certfleet.flows._futures import settle
from certfleet.tasks.common import load_inventory
from certfleet.tasks.monitor import emit_fleet_events, scan_source, snapshot_certificate
from certfleet.tasks.report import publish_table, validate_inventory


@flow(name="monitor", flow_run_name=run_name("monitor"), timeout_seconds=TIMEOUTS["monitor"])
def monitor(inventory: str = "inventory.yaml", certificates: list[str] | None = None, emit_events: bool = True):
    """Publish the fleet table and emit events for whatever is not OK.

    Args:
        inventory: path of the inventory YAML file.
        certificates: only these certificate names (default: all, plus discovery sources).
        emit_events: emit Prefect events for automations (default true).
    """
    names = validate_inventory(inventory, certificates)
    inv = load_inventory(inventory)
    futures = {("certificate", n): snapshot_certificate.submit(inventory, n) for n in names}
    if not certificates:
        futures.update({("discovery", i): scan_source.submit(inventory, i) for i in range(len(inv.discovery))})
    done, failed = settle(futures)
    rows = [row for part in done.values() for row in part]
    counts = Counter(str(r.status) for r in rows)
    publish_table("fleet-status", [r.as_table_row() for r in rows],
                  "Fleet status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    emitted = emit_fleet_events(rows) if emit_events else []
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"; {len(emitted)} events"
    if failed:
        return Failed(message=f"{summary}; could not look at: " + "; ".join(f"{k[1]}: {v}" for k, v in failed.items()), data=rows)
    return Completed(message=summary, data=rows)
