"""Discovery: what the store holds and what each endpoint serves, for one certificate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from prefect import task
from prefect.cache_policies import NO_CACHE

from certfleet import renewal
from certfleet.models import CheckResult, ProbeResult
from certfleet.probe import probe_sync
from tasks.common import load_inventory, roots_for, store_for


@dataclass(frozen=True)
class Discovery:
    certificate: str
    stored_serial: str | None
    decision: CheckResult  # ok=True: nothing to issue
    served: tuple[ProbeResult, ...]


@task(name="discover", cache_policy=NO_CACHE, persist_result=False)
def discover_certificate(inventory_path: str, name: str) -> Discovery:
    inv = load_inventory(inventory_path)
    spec = inv.certificate(name)
    store = store_for(inv)
    cur = store.current(name)
    served = probe_sync(spec.endpoint_list(), roots=roots_for(inv, name)) if spec.endpoints else []
    decision = renewal.decide(spec, store, datetime.now(timezone.utc))
    return Discovery(name, cur.serial if cur else None, decision, tuple(served))
