"""What every task needs: the inventory (cached per file version), the store, roots.

Tasks receive the inventory *path* and names, never configuration objects or secrets,
so a task run's parameters in the UI show nothing sensitive.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from certfleet import distribution, inventory
from certfleet.store import CertificateStore


def per_file_version(load):
    """``load(path)``, run once per version of the file (path, mtime, size), then reused.

    A 1,000-target fan-out reads the same inventory and trust bundle for every target;
    an edited file is a new version and is read again."""
    cached = lru_cache(maxsize=16)(lambda path, _mtime_ns, _size: load(path))

    def wrapper(path):
        st = os.stat(path)
        return cached(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)

    return wrapper


_load_inventory = per_file_version(inventory.load)
_load_roots = per_file_version(distribution.load_roots)


def load_inventory(path: str) -> inventory.Inventory:
    """Parse once per file version: a 1,000-target fan-out must not parse 1,000 times."""
    return _load_inventory(path)


def store_for(inv: inventory.Inventory) -> CertificateStore:
    from certfleet.blocks import registry

    return registry.store(inv)


def roots_for(inv: inventory.Inventory, name: str) -> list | None:
    """The certificate's trust roots (``None``: this machine's trust store), parsed once per file version."""
    path = inv.trust_bundle_for(inv.certificate(name))
    return None if path is None else _load_roots(path)


def not_permanent(task, task_run, state) -> bool:
    """retry_condition_fn: retry only errors that a later attempt can cure, and only once.

    One retry layer per failure kind (docs/retries.md): an error whose own client
    already retried it (``retried_by_client``, e.g. every ``AcmeError``) is not retried
    again by the task — that would multiply the attempts. Task retries are for
    transient infrastructure: a store or target that is briefly unreachable.
    """
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classify, do not handle
        if getattr(exc, "retried_by_client", False):
            return False
        return bool(getattr(exc, "transient", False)) or isinstance(exc, (OSError, TimeoutError))
    return False


def ledger_for(inv: inventory.Inventory, issuer_name: str):
    """The rate-limit ledger of one issuer (ACME only), in the inventory's storage (shared by every worker).

    Budgets default to Let's Encrypt's published limits; an issuer's ``rate_limits``
    (e.g. ``{certificates_per_domain: 20}``) overrides counts per limit.
    """
    from dataclasses import replace

    from certfleet import ratelimit

    cfg = inv.issuers[issuer_name]
    if cfg.get("kind") != "acme":
        return None
    limits = ratelimit.Limits()
    for field_name, count in (cfg.get("rate_limits") or {}).items():
        if field_name == "emergency_fraction":
            limits = replace(limits, emergency_fraction=float(count))
        elif hasattr(limits, field_name):
            limits = replace(limits, **{field_name: replace(getattr(limits, field_name), count=int(count))})
        else:
            raise inventory.InventoryError([f"{inv.source}: issuers.{issuer_name}.rate_limits.{field_name}: unknown limit"])
    from certfleet.blocks import registry
    from certfleet.storage import Keys

    return ratelimit.Ledger(storage=registry.storage(inv), key=Keys.ledger(issuer_name), limits=limits)
