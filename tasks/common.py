"""What every task needs: the inventory (cached per file version), the store, roots.

Tasks receive the inventory *path* and names, never configuration objects or secrets,
so a task run's parameters in the UI show nothing sensitive.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from certfleet import distribution, inventory
from certfleet.store import LocalStore


@lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int, size: int) -> inventory.Inventory:
    return inventory.load(path)


def load_inventory(path: str) -> inventory.Inventory:
    """Parse once per file version: a 1,000-target fan-out must not parse 1,000 times."""
    st = os.stat(path)
    return _load(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def store_for(inv: inventory.Inventory) -> LocalStore:
    if inv.store.kind != "local":
        raise inventory.InventoryError([f"{inv.source}: store.kind: unknown store kind '{inv.store.kind}' (known: local)"])
    return LocalStore(inv.store_path())


def roots_for(inv: inventory.Inventory, name: str) -> list:
    return distribution.load_roots(inv.trust_bundle_for(inv.certificate(name)))


def not_permanent(task, task_run, state) -> bool:
    """retry_condition_fn: retry only errors that a later attempt can cure."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classify, do not handle
        return bool(getattr(exc, "transient", False)) or isinstance(exc, (OSError, TimeoutError))
    return False
