"""Emergency-rotation tasks: issue a replacement (primary CA, else the fallback), revoke."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from certfleet.blocks import registry
from certfleet import emergency, pki, renewal
from certfleet.contracts import Revoker
from certfleet.tasks.common import ledger_for, load_inventory, store_for


@dataclass(frozen=True)
class Rotation:
    certificate: str
    old_serial: str | None
    new_serial: str
    issuer: str
    fallback_used: bool
    note: str = ""


@task(name="rotate", cache_policy=NO_CACHE, persist_result=False, task_run_name="rotate {name}")
def rotate_certificate(inventory_path: str, name: str) -> Rotation:
    """A new key and a new certificate, now. The flow holds the certificate's lock.

    No cache, no renewal-window check: an emergency bypasses both. When the primary
    issuer fails and the inventory names a ``fallback`` for it, the fallback issues,
    and the run says so loudly.
    """
    log = get_run_logger()
    inv = load_inventory(inventory_path)
    spec = inv.certificate(name)
    store = store_for(inv)
    cur = store.current(name)
    old = cur.serial if cur else None
    try:
        v = renewal.issue_version(spec, store, registry.issuer(inv, spec.issuer), issuer_name=spec.issuer,
                                  why="EMERGENCY", new_key=True, ledger=ledger_for(inv, spec.issuer), emergency=True)
        return Rotation(name, old, v.serial, spec.issuer, False)
    except Exception as exc:  # noqa: BLE001 - decide on fallback below
        fallback = inv.issuers[spec.issuer].get("fallback")
        if not fallback:
            raise
        log.error("FALLBACK: certificate '%s': primary issuer '%s' failed (%s); issuing from '%s'",
                  name, spec.issuer, exc, fallback)
        v = renewal.issue_version(spec, store, registry.issuer(inv, fallback), issuer_name=fallback,
                                  why="EMERGENCY (fallback issuer)", new_key=True, ledger=ledger_for(inv, fallback),
                                  emergency=True)
        return Rotation(name, old, v.serial, fallback, True, f"primary issuer '{spec.issuer}' failed: {exc}")


@task(name="revoke", cache_policy=NO_CACHE, persist_result=False, task_run_name="revoke {name}@{serial}")
def revoke_certificate(inventory_path: str, name: str, serial: str, reason: str) -> str:
    """Revoke one stored version at the CA that issued it (RFC 5280 reason)."""
    inv = load_inventory(inventory_path)
    store = store_for(inv)
    version = store.get(name, serial)
    issuer_name = version.issuer if version.issuer in inv.issuers else inv.certificate(name).issuer
    issuer = registry.issuer(inv, issuer_name)
    if not isinstance(issuer, Revoker):
        raise RuntimeError(f"certificate '{name}': issuer '{issuer_name}' cannot revoke")
    leaf = pki.to_pem(pki.order_chain(pki.load_certs(store.load_fullchain(name, serial)))[:1])
    issuer.revoke(leaf, emergency.reason_code(reason))
    return f"revoked {name}@{serial} at '{issuer_name}' ({reason})"
