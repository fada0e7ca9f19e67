"""Notify: a failed verification, told to Slack.

Deployed with a trigger on ``certfleet.verification.failed`` (deployments/prefect.yaml):
the automation fills the parameters from the event. Prefect's own SendNotification
action only takes Prefect's notification blocks; this flow sends certfleet's Slack block,
with its key-material guard, instead.
"""

from __future__ import annotations

from prefect import flow

from certfleet.blocks.notifiers.slack import verification_failures_message
from certfleet.tasks.notify import notify_slack


@flow(name="notify-verification-failed")
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
