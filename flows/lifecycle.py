"""The whole pipeline: renew what is due → distribute to every target → verify every
endpoint from the user's side of the wire. Each phase is its own flow (runnable alone
from the UI or an automation) and fails separately; the lifecycle composes them.

The run ends Failed when any endpoint does not serve the issued serial, naming each.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from certfleet.flows._names import TIMEOUTS, run_name
from prefect.states import Completed, Failed

from certfleet.flows.distribute import distribute
from certfleet.flows.renew import renew
from certfleet.flows.verify import verify
from certfleet.tasks.notify import notify_slack
from certfleet.tasks.report import publish_table


@flow(name="lifecycle", flow_run_name=run_name("lifecycle"), timeout_seconds=TIMEOUTS["lifecycle"])
def lifecycle(inventory: str = "inventory.yaml", certificates: list[str] | None = None,
              verify_deadline: float = 60.0, slack_block: str | None = None):
    """Keep every endpoint of every (or the named) certificate serving a current certificate.

    Args:
        inventory: path of the inventory YAML file.
        certificates: limit the run to these certificate names (default: all).
        verify_deadline: seconds to keep re-probing endpoints that do not verify yet.
        slack_block: name of a saved SlackNotifier block; posts when something was issued or failed.
    """
    log = get_run_logger()
    renewed = renew(inventory, certificates, return_state=True)
    # Distribution goes on even when one renewal failed: the others must still ship,
    # and a failed renewal leaves the current (still valid) version to distribute.
    distributed = distribute(inventory, certificates, None, verify_deadline, return_state=True)
    verified = verify(inventory, certificates, verify_deadline, return_state=True)
    phases = {"renew": renewed, "distribute": distributed, "verify": verified}
    publish_table("lifecycle-summary", summary_rows(renewed, distributed, verified),
                  "Lifecycle: what happened to each certificate, and why")
    failed = {name: st.message for name, st in phases.items() if not st.is_completed()}
    summary = "; ".join(f"{name}: {st.message}" for name, st in phases.items())
    if slack_block and (failed or not (renewed.message or "").startswith("issued 0 ")):
        notify_slack(slack_block, f"certfleet lifecycle: {'FAILED' if failed else 'ok'}",
                     [f"{name}: {st.message}" for name, st in phases.items()])
    if failed:
        for name, msg in failed.items():
            log.error("%s failed: %s", name, msg)
        return Failed(message=summary)
    log.info(summary)
    return Completed(message=summary)


def _data(state):
    try:
        data = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a phase without a result is shown as such
        return None
    return None if isinstance(data, BaseException) else data


def summary_rows(renewed, distributed, verified) -> list[dict]:
    """One row per certificate: renewal, rollout and verification, each with its reason."""
    rows: dict[str, dict] = {}

    def row(name: str) -> dict:
        return rows.setdefault(name, {"certificate": name, "renewal": "-", "rollout": "-", "verification": "-"})

    r = _data(renewed)
    if r is not None:
        for n, serial in r.serials.items():
            row(n)["renewal"] = f"issued {serial}" if n in r.issued else f"unchanged ({serial}, not due)"
        for n, why in r.failures.items():
            row(n)["renewal"] = f"FAILED: {why}"
    d = _data(distributed)
    if d is not None:
        for label, items in (("deployed", d.deployed), ("already current", d.unchanged), ("held back", d.skipped)):
            for item in items:
                n = item.split("@")[0].split(" → ")[0]
                cell = row(n)
                cell["rollout"] = (cell["rollout"] + "; " if cell["rollout"] != "-" else "") + f"{label}: {item.split(' → ')[-1]}"
        for key, why in d.failures.items():
            n = key.split(" → ")[0]
            cell = row(n)
            cell["rollout"] = (cell["rollout"] + "; " if cell["rollout"] != "-" else "") + f"FAILED {key.split(' → ')[-1]}: {why}"
    v = _data(verified)
    if v is not None:
        for vr in v.rows:
            cell = row(vr["certificate"])
            ok = vr["status"] == "OK"
            cell["verification"] = (cell["verification"] + "; " if cell["verification"] != "-" else "") + (
                f"{vr['endpoint']} OK" if ok else f"{vr['endpoint']} {vr['status']}: {vr['detail']}")
        for f in v.failures:
            n = f.split(":")[0]
            if n in rows and rows[n]["verification"] == "-":
                rows[n]["verification"] = f"FAILED: {f}"
    return [rows[n] for n in sorted(rows)]
