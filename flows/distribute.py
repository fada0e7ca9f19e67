"""Distribute: the current serial of each certificate onto every one of its targets.

One mapped task per target; canary targets first (verified), the rest only if they
pass. One failing target never stops the others; the run names each that failed, and
a re-run redoes only those. Targets already holding the serial, with their endpoints
serving it, are found by one bulk check and get no rollout task run (they are reported
as already current); every target that needs a write gets its own task run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from certfleet.flows._names import TIMEOUTS, run_name
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from certfleet.flows._futures import settle
from certfleet.tasks.common import load_inventory, store_for
from certfleet.tasks.distribute import already_current, rollout_to_target
from certfleet.tasks.report import publish_table, validate_inventory


@dataclass
class DistributeReport:
    deployed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # "cert → target" -> why
    skipped: list[str] = field(default_factory=list)        # held back by a failed canary
    checked_in_bulk: int = 0  # of `unchanged`: found current by one bulk check, no task run


@flow(name="distribute", task_runner=ThreadPoolTaskRunner(max_workers=128),
      flow_run_name=run_name("distribute"), timeout_seconds=TIMEOUTS["distribute"])
def distribute(inventory: str = "inventory.yaml", certificates: list[str] | None = None,
               targets: list[str] | None = None, verify_deadline: float = 60.0):
    """Put each certificate's current serial on its targets (or only the named ones).

    Args:
        inventory: path of the inventory YAML file.
        certificates: only these certificate names (default: all).
        targets: only these target names (default: every target of each certificate).
        verify_deadline: seconds to wait for a target's endpoints to serve the new serial.
    """
    log = get_run_logger()
    names = validate_inventory(inventory, certificates)
    inv = load_inventory(inventory)
    store = store_for(inv)
    report = DistributeReport()
    waves: list[list[tuple[str, str, str]]] = [[], []]
    for n in names:
        cur = store.current(n)
        if cur is None:
            report.failures[f"{n} → *"] = f"certificate '{n}' has no issued version in the store; run renew first"
            continue
        spec = inv.certificate(n)
        for t in spec.targets:
            if targets and t not in targets:
                continue
            waves[0 if t in spec.canary_targets else 1].append((n, cur.serial, t))

    # Targets already holding the serial (and serving it) get no task run: a re-run with
    # nothing to do costs one bulk check, not 1,000 task runs.
    for wave in waves:
        by_cert: dict[tuple[str, str], list[str]] = {}
        for n, s, t in wave:
            by_cert.setdefault((n, s), []).append(t)
        current = {(n, s, t) for (n, s), ts in by_cert.items()
                   for t in already_current(inventory, n, s, ts)}
        for n, s, t in wave:
            if (n, s, t) in current:
                report.unchanged.append(f"{n}@{s} → {t}")
        report.checked_in_bulk += len(current)
        wave[:] = [w for w in wave if w not in current]

    for wave_no, wave in enumerate(waves):
        futures = {(n, s, t): rollout_to_target.submit(inventory, n, s, t, verify_deadline) for n, s, t in wave}
        done, failed = settle(futures)
        for (n, s, t), receipt in done.items():
            (report.deployed if receipt.changed else report.unchanged).append(f"{n}@{s} → {t}")
        for (n, s, t), why in failed.items():
            report.failures[f"{n} → {t}"] = why
        if wave_no == 0 and failed:
            held = {n for (n, _, _) in failed}
            log.error("canary failed for %s: holding back their other targets", ", ".join(sorted(held)))
            report.skipped = [f"{n} → {t}" for n, s, t in waves[1] if n in held]
            waves[1] = [w for w in waves[1] if w[0] not in held]

    rows = [{"target": k, "result": "deployed"} for k in report.deployed]
    rows += [{"target": k, "result": "already current"} for k in report.unchanged]
    rows += [{"target": k, "result": f"FAILED: {v}"} for k, v in report.failures.items()]
    rows += [{"target": k, "result": "held back (canary failed)"} for k in report.skipped]
    publish_table("distribution-report", rows, "Rollout per target")
    summary = f"deployed {len(report.deployed)}, already current {len(report.unchanged)}"
    if report.checked_in_bulk:
        summary += f" ({report.checked_in_bulk} found current by one bulk check, without a task run each)"
    if report.failures or report.skipped:
        detail = "; ".join(f"{k}: {v}" for k, v in report.failures.items())
        return Failed(message=f"{summary}; {len(report.failures)} failed: {detail}" + (f"; held back {len(report.skipped)}" if report.skipped else ""), data=report)
    return Completed(message=summary, data=report)
