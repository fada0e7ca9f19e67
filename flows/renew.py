"""Renew: one issuer per certificate, only what is due (or forced)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from certfleet.flows._names import TIMEOUTS, run_name
from prefect.states import Completed, Failed

from certfleet.flows._futures import settle
from certfleet.tasks.renew import renew_certificate
from certfleet.tasks.report import publish_table, validate_inventory


@dataclass
class RenewReport:
    serials: dict[str, str] = field(default_factory=dict)   # certificate -> current serial
    issued: dict[str, str] = field(default_factory=dict)    # certificate -> new serial
    failures: dict[str, str] = field(default_factory=dict)  # certificate -> why


@flow(name="renew", flow_run_name=run_name("renew"), timeout_seconds=TIMEOUTS["renew"])
def renew(inventory: str = "inventory.yaml", certificates: list[str] | None = None, force: bool = False):
    """Issue new versions of the certificates that need one (all of them with ``force``).

    Args:
        inventory: path of the inventory YAML file.
        certificates: only these certificate names (default: all).
        force: issue even when the current version is not due.
    """
    log = get_run_logger()
    names = validate_inventory(inventory, certificates)
    # The tag lets a Prefect server cap renewals too: a task concurrency limit on
    # "certfleet-renew" bounds CA orders across workers (per certificate, the store's
    # lock serialises). No per-certificate tags: each distinct tag costs the engine a
    # concurrency lookup that grew a 20-certificate renewal from ~3 s to ~9 s
    # (bench/RESULTS.md, renew_ab).
    done, failed = settle({n: renew_certificate.submit(inventory, n, force) for n in names})
    report = RenewReport(failures=failed)
    for n, outcome in done.items():
        report.serials[n] = outcome.serial
        if outcome.issued:
            report.issued[n] = outcome.serial
            log.info("certificate '%s': issued %s (%s)", n, outcome.serial, outcome.message)
    rows = [{"certificate": n, "result": f"issued {o.serial}" if o.issued else "unchanged", "serial": o.serial,
             "why": o.message or o.reason} for n, o in sorted(done.items())]
    rows += [{"certificate": n, "result": "FAILED", "serial": "-", "why": why} for n, why in sorted(failed.items())]
    summary = f"issued {len(report.issued)} of {len(names)} certificates"
    publish_table("renewal-summary", rows, f"Renewal: {summary}" + (f", {len(failed)} failed" if failed else ""))
    if failed:
        return Failed(message=f"{summary}; failed: " + "; ".join(f"{n}: {e}" for n, e in failed.items()), data=report)
    return Completed(message=summary, data=report)
