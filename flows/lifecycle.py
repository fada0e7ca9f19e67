"""The whole pipeline: renew what is due → distribute to every target → verify every
endpoint from the user's side of the wire. Each phase is its own flow (runnable alone
from the UI or an automation) and fails separately; the lifecycle composes them.

The run ends Failed when any endpoint does not serve the issued serial, naming each.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed

from certfleet.flows.distribute import distribute
from certfleet.flows.renew import renew
from certfleet.flows.verify import verify
from certfleet.tasks.notify import notify_slack


@flow(name="lifecycle")
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
