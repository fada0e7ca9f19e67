"""Distribution task: one certificate serial onto one target. Thin: the work is core."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from blocks import registry
from certfleet import distribution
from certfleet.models import Receipt
from tasks.common import load_inventory, not_permanent, roots_for, store_for


def hostnames_for(inv, name: str) -> tuple[str, ...]:
    spec = inv.certificate(name)
    return tuple(dict.fromkeys(e.sni for e in spec.endpoint_list()))


@task(name="deploy", cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=exponential_backoff(backoff_factor=1), retry_jitter_factor=0.5,
      retry_condition_fn=not_permanent,
      task_run_name="deploy {name}@{serial} → {target}")
def deploy_to_target(inventory_path: str, name: str, serial: str, target: str) -> Receipt:
    inv = load_inventory(inventory_path)
    return distribution.deploy(name, serial, target, registry.target(inv, target), store_for(inv),
                               hostnames=hostnames_for(inv, name), roots=roots_for(inv, name))
