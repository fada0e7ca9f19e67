"""Artifacts a person would rather read than logs: the fleet table after a run."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from certfleet.blocks import registry
from certfleet.tasks.common import load_inventory


@task(name="validate inventory", cache_policy=NO_CACHE, persist_result=False)
def validate_inventory(inventory_path: str, only: list[str] | None = None) -> list[str]:
    """Parse the file and build every issuer and target: bad input fails before any work."""
    inv = load_inventory(inventory_path)
    registry.check_all(inv)
    names = [c.name for c in inv.certificates]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"{inv.source}: no certificate named {', '.join(repr(u) for u in unknown)} (known: {', '.join(names)})")
    return [n for n in names if not only or n in only]


@task(name="publish report", cache_policy=NO_CACHE, persist_result=False)
def publish_table(key: str, rows: list[dict], description: str) -> None:
    create_table_artifact(key=key, table=rows, description=description)
