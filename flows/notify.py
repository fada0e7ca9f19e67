"""Notify: a failed verification, told to Slack.

Deployed with a trigger on ``certfleet.verification.failed`` (deployments/prefect.yaml):
the automation fills the parameters from the event. Prefect's own SendNotification
action only takes Prefect's notification blocks; this flow sends certfleet's Slack block,
with its key-material guard, instead.
"""

from __future__ import annotations

from prefect import flow
from certfleet.flows._names import TIMEOUTS

from certfleet.blocks.notifiers.slack import verification_failures_message
from certfleet.tasks.notify import notify_slack


@flow(name="notify-verification-failed", timeout_seconds=TIMEOUTS["notify"])
def notify_verification_failed(certificate: str, endpoint: str, reason: str, slack_block: str = "certfleet-slack") -> bool:
    """Post one failed endpoint verification to Slack.

    Args:
        certificate: inventory name of the certificate.
        endpoint: the endpoint that failed, "sni@host:port".
        reason: why it failed, as the monitor saw it.
        slack_block: name of the saved SlackNotifier block; nothing is sent if none is saved.
    """
    msg = verification_failures_message([{"certificate": certificate, "endpoint": endpoint, "reason": reason}])
    return notify_slack(slack_block, msg.title, msg.lines, msg.table)


def _alert_name() -> str:
    from prefect.runtime import flow_run

    return "alert-" + str((flow_run.parameters or {}).get("subject", "certfleet"))[:60].replace(" ", "-")


@flow(name="notify-alert", flow_run_name=_alert_name, timeout_seconds=TIMEOUTS["notify"])
def notify_alert(subject: str, detail: str, slack_block: str = "certfleet-slack") -> bool:
    """Tell Slack that a certfleet run failed, crashed or runs too long, or that an event
    needs a person (an endpoint unreachable, a rate-limit budget exhausted).

    Started by the automations in deployments/prefect.yaml, with the subject and detail
    rendered from the event. With no Slack block saved, the run still happens, logs the
    alert at WARNING and completes: the alert is visible in the UI either way.

    Args:
        subject: what happened, e.g. "lifecycle run lifecycle-all ended Failed".
        detail: the state message or the event's reason.
        slack_block: name of the saved SlackNotifier block.
    """
    from prefect import get_run_logger

    get_run_logger().warning("certfleet alert: %s: %s", subject, detail)
    return notify_slack(slack_block, f"certfleet: {subject}", [detail or "(no detail)"])
