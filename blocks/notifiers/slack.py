"""Notifier block: Slack, through a bot token + channel or an incoming webhook.

Bot token (``xoxb-...``) + ``channel``: ``chat.postMessage`` with Block Kit, via
``slack_sdk.WebClient``. Incoming webhook URL: the same message via
``slack_sdk.webhook.WebhookClient`` (the channel is fixed by the webhook). Exactly one of
the two must be configured.

Rate limits: Slack answers 429 with ``Retry-After``; slack_sdk's
``RateLimitErrorRetryHandler`` sleeps that long and retries (``max_rate_limit_retries``
times), so a burst of notifications slows down instead of getting lost.

Key material never leaves: ``notify`` refuses, before any request, a message in which
any text contains ``PRIVATE KEY``. The token and webhook URL are unwrapped in
``get_client`` only, and errors never include them.

The ``*_message`` helpers turn flow reports into a :class:`Message` (title, lines, table);
they read reports by attribute (duck typing), so this module does not import flows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from slack_sdk.webhook import WebhookClient

FORBIDDEN = "PRIVATE KEY"
SECTION_LIMIT = 3000     # characters in one section's text (Slack's limit)
HEADER_LIMIT = 150       # characters in a header block (Slack's limit)
MAX_BLOCKS = 50          # blocks in one message (Slack's limit)
TABLE_ROWS = 40          # rows shown before "… and N more"


class SlackNotifierError(RuntimeError):
    """A message was refused or Slack did not take it; starts with ``slack notifier``."""


@dataclass(frozen=True)
class Message:
    title: str
    lines: list[str]
    table: list[dict] | None = None


class SlackNotifier(Block):
    _block_type_name = "certfleet Slack notifier"
    _block_type_slug = "certfleet-slack-notifier"
    _description = "Posts certfleet reports to Slack (bot token + channel, or an incoming webhook)."

    bot_token: SecretStr | None = Field(None, description="Bot token (xoxb-...) with chat:write; use with channel")
    channel: str | None = Field(None, description="Channel ID or name the bot posts to, e.g. C0123456789 or #certs")
    webhook_url: SecretStr | None = Field(None, description="Incoming webhook URL (https://hooks.slack.com/services/...), instead of a bot token")
    base_url: str = Field("https://slack.com/api/", description="Slack Web API base URL; change only for a proxy or a test receiver")
    timeout: int = Field(30, gt=0, description="Seconds one HTTP request to Slack may take")
    max_rate_limit_retries: int = Field(5, ge=0, description="How many times a 429 answer is retried after its Retry-After delay")

    @model_validator(mode="after")
    def _one_mode(self) -> "SlackNotifier":
        bot = self.bot_token is not None
        if bot == (self.webhook_url is not None):
            raise ValueError("slack notifier: set either bot_token (with channel) or webhook_url, not both or neither")
        if bot and not self.channel:
            raise ValueError("slack notifier: channel is required with bot_token")
        return self

    def _label(self) -> str:
        return f"slack notifier ({'channel ' + str(self.channel) if self.bot_token else 'incoming webhook'})"

    def get_client(self) -> WebClient | WebhookClient:
        """The slack_sdk client for the configured mode; the only place secrets are unwrapped."""
        retry = [ConnectionErrorRetryHandler(max_retry_count=2),
                 RateLimitErrorRetryHandler(max_retry_count=self.max_rate_limit_retries)]
        if self.bot_token is not None:
            return WebClient(token=self.bot_token.get_secret_value(), base_url=self.base_url,
                             timeout=self.timeout, retry_handlers=retry)
        return WebhookClient(url=self.webhook_url.get_secret_value(), timeout=self.timeout,  # type: ignore[union-attr]
                             retry_handlers=retry)

    def notify(self, title: str, lines: Sequence[str], table: list[dict] | None = None) -> None:
        """Post one message: a header, the lines as bullets, the table as aligned text."""
        text, blocks = render(title, lines, table)
        client = self.get_client()
        try:
            if isinstance(client, WebClient):
                client.chat_postMessage(channel=self.channel, text=text, blocks=blocks)
                return
            response = client.send(text=text, blocks=blocks)
        except SlackApiError as exc:
            raise SlackNotifierError(f"{self._label()}: Slack refused the message: {exc.response.get('error', exc.response.status_code)}") from None
        except (SlackClientError, OSError) as exc:
            raise SlackNotifierError(f"{self._label()}: could not reach Slack: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise SlackNotifierError(f"{self._label()}: Slack answered {response.status_code}: {response.body[:200]}")

    def send(self, message: Message) -> None:
        self.notify(message.title, message.lines, message.table)


# -- rendering ---------------------------------------------------------------------


def refuse_key_material(*parts: Any) -> None:
    """Raise before sending if any text, however nested, contains ``PRIVATE KEY``."""
    if FORBIDDEN in json.dumps(parts, default=str, ensure_ascii=False):
        raise SlackNotifierError(f"slack notifier: refusing to send a message containing '{FORBIDDEN}' "
                                 "(key material never goes to Slack); nothing was sent")


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _chunks(lines: Iterable[str], limit: int) -> list[str]:
    """Bullet lines packed into section texts of at most ``limit`` characters."""
    out, cur = [], ""
    for line in lines:
        item = f"• {_escape(line)}"
        if len(item) > limit:
            item = item[: limit - 1] + "…"
        if cur and len(cur) + 1 + len(item) > limit:
            out.append(cur)
            cur = ""
        cur = f"{cur}\n{item}" if cur else item
    if cur:
        out.append(cur)
    return out


def table_text(rows: list[dict], limit: int = SECTION_LIMIT) -> str:
    """Rows as aligned columns inside a code block, cut to fit one section."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    shown = rows[:TABLE_ROWS]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in shown)) for c in columns}
    out = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    out += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns).rstrip() for r in shown]
    if len(rows) > len(shown):
        out.append(f"… and {len(rows) - len(shown)} more")
    body = _escape("\n".join(out))
    if len(body) > limit - 8:
        body = body[: limit - 9] + "…"
    return f"```\n{body}\n```"


def render(title: str, lines: Sequence[str], table: list[dict] | None = None) -> tuple[str, list[dict]]:
    """(fallback text, Block Kit blocks) for one message; refuses key material."""
    refuse_key_material(title, list(lines), table)
    header = title if len(title) <= HEADER_LIMIT else title[: HEADER_LIMIT - 1] + "…"
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": header}}]
    for chunk in _chunks(lines, SECTION_LIMIT):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
    if table:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": table_text(table)}})
    if len(blocks) > MAX_BLOCKS:
        dropped = len(blocks) - MAX_BLOCKS + 1
        blocks = blocks[: MAX_BLOCKS - 1] + [{"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"… {dropped} more sections not shown; see the flow run's artifacts"}]}]
    text = _escape("\n".join([title, *lines]))
    if len(text) > SECTION_LIMIT:
        text = text[: SECTION_LIMIT - 1] + "…"
    return text, blocks


# -- report helpers (pure) ----------------------------------------------------------


def renewal_message(report: Any) -> Message:
    """From a RenewReport (``serials``, ``issued``, ``failures``)."""
    issued, failures, serials = dict(report.issued), dict(report.failures), dict(report.serials)
    if failures:
        title = f"certfleet: renewal failed for {len(failures)} certificate{'s' * (len(failures) != 1)}"
    else:
        title = f"certfleet: renewed {len(issued)} certificate{'s' * (len(issued) != 1)}"
    lines = [f"{n}: issued {s}" for n, s in sorted(issued.items())]
    lines += [f"{n}: FAILED — {why}" for n, why in sorted(failures.items())]
    unchanged = sorted(set(serials) - set(issued))
    if unchanged:
        lines.append(f"not due: {', '.join(unchanged)}")
    table = [{"certificate": n, "result": "issued" if n in issued else "not due", "serial": s}
             for n, s in sorted(serials.items())]
    table += [{"certificate": n, "result": "FAILED", "serial": "-"} for n in sorted(failures)]
    return Message(title, lines, table)


def distribution_message(report: Any) -> Message:
    """From a DistributeReport (``deployed``, ``unchanged``, ``failures``, ``skipped``)."""
    failures, skipped = dict(report.failures), list(getattr(report, "skipped", []))
    title = (f"certfleet: distribution failed on {len(failures)} target{'s' * (len(failures) != 1)}" if failures
             else f"certfleet: deployed to {len(report.deployed)} target{'s' * (len(report.deployed) != 1)}")
    lines = [f"deployed {len(report.deployed)}, already current {len(report.unchanged)}"
             + (f", failed {len(failures)}" if failures else "") + (f", held back {len(skipped)}" if skipped else "")]
    lines += [f"{where}: FAILED — {why}" for where, why in failures.items()]
    lines += [f"{where}: held back (canary failed)" for where in skipped]
    table = [{"target": k, "result": "deployed"} for k in report.deployed]
    table += [{"target": k, "result": "already current"} for k in report.unchanged]
    table += [{"target": k, "result": "FAILED"} for k in failures]
    table += [{"target": k, "result": "held back"} for k in skipped]
    return Message(title, lines, table)


def verification_failures_message(failures: list[dict]) -> Message:
    """From rows with ``certificate``, ``endpoint`` and ``reason`` (or ``detail``)."""
    n = len(failures)
    title = f"certfleet: {n} endpoint{'s' * (n != 1)} failed verification"
    lines = [f"{f['certificate']} @ {f['endpoint']}: {f.get('reason') or f.get('detail') or 'failed'}" for f in failures]
    return Message(title, lines, None)


def emergency_timeline_message(certificates: Sequence[str], steps: Sequence[tuple[str, datetime | str]],
                               outcome: str | None = None) -> Message:
    """An emergency rotation as a timeline: one row per (step, time)."""
    names = ", ".join(certificates) or "(none)"
    title = f"certfleet: emergency rotation of {names}"
    lines = [outcome] if outcome else []
    t0 = next((t for _, t in steps if isinstance(t, datetime)), None)
    table = []
    for step, t in steps:
        if isinstance(t, datetime):
            utc = t.astimezone(timezone.utc) if t.tzinfo else t
            table.append({"time": f"{utc:%H:%M:%S}Z", "elapsed": f"+{(t - t0).total_seconds():.1f}s", "step": step})
        else:
            table.append({"time": str(t), "elapsed": "", "step": step})
    return Message(title, lines, table)
