"""Renewal task: one issuer per certificate, under the store's lock.

The rate-limit ledger and the ARI choice (RFC 9773) live in the inventory's storage
(``registry.storage``), so every worker shares one of each.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.tasks import exponential_backoff

from certfleet.blocks import registry
from certfleet import ratelimit, renewal
from certfleet.tasks.common import ledger_for, load_inventory, not_permanent, store_for


@task(name="renew", cache_policy=NO_CACHE, persist_result=False, retries=3, tags=["certfleet-renew"],
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
      retry_condition_fn=not_permanent)
def renew_certificate(inventory_path: str, name: str, force: bool = False) -> renewal.RenewalOutcome:
    inv = load_inventory(inventory_path)
    spec = inv.certificate(name)
    issuer = registry.issuer(inv, spec.issuer)
    attempt = renewal.attempt_path(inv.store_path(), name)  # for `certfleet certificates`
    try:
        outcome = renewal.renew(spec, store_for(inv), issuer, issuer_name=spec.issuer, force=force,
                                ledger=ledger_for(inv, spec.issuer),
                                chosen_at=renewal.chosen_times(registry.storage(inv), name))
    except Exception as exc:
        renewal.record_attempt(attempt, result="failed", message=str(exc) or type(exc).__name__)
        if isinstance(exc, ratelimit.BudgetExceeded):
            _budget_exhausted(name, spec.issuer, exc)
            raise RuntimeError(f"certificate '{name}': {exc}; no order placed") from None
        raise
    renewal.record_attempt(attempt, result="issued" if outcome.issued else "not due", message=outcome.message,
                           serial=outcome.serial)
    return outcome


def _budget_exhausted(name: str, issuer: str, exc) -> None:
    emit_event(event="certfleet.budget.exhausted",
               resource={"prefect.resource.id": f"certfleet.certificate.{name}", "certfleet.certificate": name,
                         "certfleet.issuer": issuer},
               payload={"limit": exc.limit.name, "used": exc.used, "allowed": exc.allowed,
                        "frees_at": exc.frees_at.isoformat() if exc.frees_at else None})
