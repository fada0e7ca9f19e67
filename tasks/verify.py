"""Verification task: every endpoint of a certificate serves the expected serial."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from certfleet import verification
from certfleet.tasks.common import load_inventory, roots_for


@task(name="verify", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="verify {name}@{serial}")
def verify_certificate(inventory_path: str, name: str, serial: str, deadline: float = 60.0) -> list[verification.EndpointVerdict]:
    inv = load_inventory(inventory_path)
    spec = inv.certificate(name)
    return verification.verify(spec.endpoint_list(), serial, roots=roots_for(inv, name), deadline=deadline)
