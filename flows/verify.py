"""Verify: every endpoint of each certificate serves the issued serial, from the wire."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow
from certfleet.flows._names import TIMEOUTS, run_name
from prefect.states import Completed, Failed

from certfleet.flows._futures import settle
from certfleet.tasks.common import load_inventory, store_for
from certfleet.tasks.report import publish_table, validate_inventory
from certfleet.tasks.verify import verify_certificate


@dataclass
class VerifyReport:
    rows: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@flow(name="verify", flow_run_name=run_name("verify"), timeout_seconds=TIMEOUTS["verify"])
def verify(inventory: str = "inventory.yaml", certificates: list[str] | None = None, deadline: float = 60.0):
    """Probe every endpoint; fail naming each one that does not serve the issued serial.

    Args:
        inventory: path of the inventory YAML file.
        certificates: only these certificate names (default: all).
        deadline: seconds to keep re-probing endpoints that do not verify yet.
    """
    names = validate_inventory(inventory, certificates)
    inv = load_inventory(inventory)
    store = store_for(inv)
    report = VerifyReport()
    expected = {}
    for n in names:
        cur = store.current(n)
        if cur is None:
            report.failures.append(f"{n}: no issued version in the store")
        elif inv.certificate(n).endpoints:
            expected[n] = cur.serial
    done, failed = settle({n: verify_certificate.submit(inventory, n, s, deadline) for n, s in expected.items()})
    report.failures += [f"{n}: {why}" for n, why in failed.items()]
    for n, verdicts in done.items():
        for v in verdicts:
            report.rows.append({"certificate": n, "endpoint": str(v.endpoint), "expected": expected[n],
                                "served": v.probe.serial or "-", "status": v.check.reason, "detail": v.check.message})
            if not v.ok:
                report.failures.append(f"{n}: {v.check.message}")
    ok = sum(r["status"] == "OK" for r in report.rows)
    publish_table("fleet-verification", report.rows, f"{ok}/{len(report.rows)} endpoints serve the issued serial")
    summary = f"verified {ok}/{len(report.rows)} endpoints"
    if report.failures:
        return Failed(message=f"{summary}; {len(report.failures)} failed: " + "; ".join(report.failures), data=report)
    return Completed(message=summary, data=report)
