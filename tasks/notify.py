"""Notification task: post to Slack through a saved block, or do nothing if there is none.

The task takes the block's *name*, never the block or its token, so a run's parameters
in the UI show nothing secret. Without a name, or when no block of that name is saved,
it logs why and returns False: notifications are optional, the work they report is not.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from certfleet.blocks.notifiers.slack import SlackNotifier, SlackNotifierError


def _transient(task, task_run, state) -> bool:
    """retry_condition_fn: Slack unreachable is worth another try; a refusal is not."""
    try:
        state.result()
    except SlackNotifierError as exc:
        return "could not reach Slack" in str(exc)
    except Exception:  # noqa: BLE001 - classify, do not handle
        return False
    return False


@task(name="notify slack", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=10,
      retry_condition_fn=_transient, task_run_name="notify slack: {title}")
def notify_slack(block_name: str | None, title: str, lines: list[str], table: list[dict] | None = None) -> bool:
    """Post ``title`` + ``lines`` (+ ``table``) with the SlackNotifier block ``block_name``.

    Returns True when posted, False when no Slack is configured. Raises when Slack refuses
    the message or the message contains key material.
    """
    log = get_run_logger()
    if not block_name:
        log.info("no Slack block configured; not notifying: %s", title)
        return False
    try:
        notifier = SlackNotifier.load(block_name)
    except ValueError:
        log.warning("no SlackNotifier block named '%s' is saved; not notifying: %s", block_name, title)
        return False
    notifier.notify(title, lines, table)
    log.info("posted to Slack via block '%s': %s", block_name, title)
    return True
