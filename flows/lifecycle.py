"""The whole pipeline: discover → renew (one issuer per certificate) → distribute (one
task per target) → verify (every endpoint, from the user's side) → report.

The run ends Failed when any endpoint does not serve the issued serial, naming each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed

from tasks.discover import discover_certificate
from tasks.distribute import deploy_to_target
from tasks.renew import renew_certificate
from tasks.report import publish_table, validate_inventory
from tasks.verify import verify_certificate
from tasks.common import load_inventory


@dataclass
class LifecycleReport:
    issued: dict[str, str] = field(default_factory=dict)        # certificate -> new serial
    deployed: list[str] = field(default_factory=list)            # "cert@serial → target"
    failures: list[str] = field(default_factory=list)            # one sentence each
    rows: list[dict] = field(default_factory=list)


@flow(name="lifecycle", log_prints=False)
def lifecycle(inventory: str = "inventory.yaml", certificates: list[str] | None = None,
              verify_deadline: float = 60.0):
    """Keep every endpoint of every (or the named) certificate serving a current certificate.

    Args:
        inventory: path of the inventory YAML file.
        certificates: limit the run to these certificate names (default: all).
        verify_deadline: seconds to keep re-probing endpoints that do not verify yet.
    """
    log = get_run_logger()
    names = validate_inventory(inventory, certificates)
    inv = load_inventory(inventory)
    report = LifecycleReport()

    found = {d.certificate: d for d in discover_certificate.map(inventory, names).result()}
    due = [n for n in names if not found[n].decision.ok]
    for n in due:
        log.info("certificate '%s' needs issuing: %s", n, found[n].decision.message)
    serials = {n: found[n].stored_serial for n in names}
    renew_futures = {n: renew_certificate.submit(inventory, n) for n in due}
    for n, fut in renew_futures.items():
        state = fut.wait() or fut.state
        if fut.state.is_completed():
            outcome = fut.result()
            serials[n] = outcome.serial
            if outcome.issued:
                report.issued[n] = outcome.serial
        else:
            report.failures.append(f"renew {n}: {_error(fut)}")

    pairs = [(n, serials[n], t) for n in names if serials[n] for t in inv.certificate(n).targets]
    deploys = [deploy_to_target.submit(inventory, n, s, t) for n, s, t in pairs]
    failed_certs = set()
    for (n, s, t), fut in zip(pairs, deploys):
        fut.wait()
        if fut.state.is_completed():
            if fut.result().changed:
                report.deployed.append(f"{n}@{s} → {t}")
        else:
            failed_certs.add(n)
            report.failures.append(f"deploy {n}@{s} → {t}: {_error(fut)}")

    checks = [(n, serials[n]) for n in names if serials[n] and inv.certificate(n).endpoints]
    verify_futures = [verify_certificate.submit(inventory, n, s, verify_deadline) for n, s in checks]
    for (n, s), fut in zip(checks, verify_futures):
        fut.wait()
        if not fut.state.is_completed():
            report.failures.append(f"verify {n}: {_error(fut)}")
            continue
        for v in fut.result():
            report.rows.append({"certificate": n, "endpoint": str(v.endpoint), "expected": s,
                                "served": v.probe.serial or "-", "status": v.check.reason,
                                "detail": v.check.message})
            if not v.ok:
                report.failures.append(f"{n}: {v.check.message}")

    publish_table("fleet-lifecycle", report.rows,
                  f"issued {len(report.issued)}, deployed {len(report.deployed)}, failures {len(report.failures)}")
    summary = f"issued {len(report.issued)}, deployed {len(report.deployed)}, verified {sum(r['status'] == 'OK' for r in report.rows)}/{len(report.rows)} endpoints"
    if report.failures:
        for f in report.failures:
            log.error(f)
        return Failed(message=f"{summary}; {len(report.failures)} failed: " + "; ".join(report.failures), data=report)
    log.info(summary)
    return Completed(message=summary, data=report)


def _error(fut) -> str:
    try:
        fut.result()
    except Exception as exc:  # noqa: BLE001 - reported, not handled
        return str(exc) or type(exc).__name__
    return f"ended {fut.state.type.value}"
