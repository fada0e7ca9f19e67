"""The Slack notifier against a local HTTP receiver standing in for Slack's API.

The receiver answers the first request 429 + Retry-After: 1 (Slack's rate limit), then
``{"ok": true}``. Tests assert what Slack would receive: the exact JSON body, the
Authorization header, and that nothing at all is sent for a message holding a key.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from certfleet.blocks.notifiers.slack import (
    SlackNotifier,
    SlackNotifierError,
    distribution_message,
    emergency_timeline_message,
    renewal_message,
)

TOKEN = "xoxb-test-0000-token"


class Receiver:
    """Records every request; answers from a queue of (status, headers, body), then ok."""

    def __init__(self):
        self.requests: list[dict] = []
        self.answers: list[tuple[int, dict, dict | str]] = []
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recv.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                      "body": body, "at": time.monotonic()})
                status, headers, payload = recv.answers.pop(0) if recv.answers else (200, {}, None)
                if payload is None:
                    payload = {"ok": True, "channel": "C0TEST", "ts": "1700000000.000100"} if "/api/" in self.path else "ok"
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def rate_limit_first(self) -> None:
        self.answers.append((429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"}))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack():
    r = Receiver()
    yield r
    r.close()


def bot(slack: Receiver, **kw) -> SlackNotifier:
    return SlackNotifier(bot_token=TOKEN, channel="C0TEST", base_url=f"{slack.url}/api/", **kw)


def test_chat_post_message_exact_payload_after_rate_limit(slack):
    slack.rate_limit_first()
    notifier = bot(slack)
    notifier.notify("Renewed shop", ["shop: issued 0A1B", "api: not due <yet> & fine"],
                    [{"certificate": "shop", "serial": "0A1B"}, {"certificate": "api", "serial": "77"}])

    assert len(slack.requests) == 2, "the 429 is retried once, not dropped and not repeated"
    first, second = slack.requests
    assert second["at"] - first["at"] >= 1.0, "Retry-After: 1 was honoured"
    assert first["body"] == second["body"]
    assert second["path"] == "/api/chat.postMessage"
    assert second["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert second["headers"]["content-type"].startswith("application/json")
    assert json.loads(second["body"]) == {
        "channel": "C0TEST",
        "text": "Renewed shop\nshop: issued 0A1B\napi: not due &lt;yet&gt; &amp; fine",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Renewed shop"}},
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": "• shop: issued 0A1B\n• api: not due &lt;yet&gt; &amp; fine"}},
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": "```\ncertificate  serial\nshop         0A1B\napi          77\n```"}},
        ],
    }


def test_incoming_webhook_payload_and_no_token(slack):
    slack.rate_limit_first()
    hook = f"{slack.url}/services/T000/B000/{uuid.uuid4().hex}"
    SlackNotifier(webhook_url=hook).notify("Drift fixed", ["shop → lb-1: deployed"])
    assert len(slack.requests) == 2
    req = slack.requests[-1]
    assert req["path"] == hook.removeprefix(slack.url)
    assert "authorization" not in req["headers"]
    assert json.loads(req["body"]) == {
        "text": "Drift fixed\nshop → lb-1: deployed",
        "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "Drift fixed"}},
                   {"type": "section", "text": {"type": "mrkdwn", "text": "• shop → lb-1: deployed"}}],
    }


@pytest.mark.parametrize("where", ["title", "line", "table"])
def test_private_key_is_refused_before_sending(slack, where):
    from certfleet import keys

    key = keys.key_to_pem(keys.generate_key()).decode()  # a real key, made now: none is committed
    title, lines, table = "t", ["fine"], [{"a": "b"}]
    if where == "title":
        title = key
    elif where == "line":
        lines = ["fine", f"oops: {key}"]
    else:
        table = [{"a": "b"}, {"a": {"nested": key}}]
    with pytest.raises(SlackNotifierError, match="refusing") as err:
        bot(slack).notify(title, lines, table)
    assert "MIIEvQ" not in str(err.value)
    assert slack.requests == []


def test_slack_error_is_named_without_the_token(slack):
    slack.answers.append((200, {}, {"ok": False, "error": "channel_not_found"}))
    with pytest.raises(SlackNotifierError, match="channel_not_found") as err:
        bot(slack).notify("t", ["x"])
    assert TOKEN not in str(err.value)


def test_one_mode_only():
    with pytest.raises(ValueError, match="either bot_token"):
        SlackNotifier(bot_token=TOKEN, channel="C1", webhook_url="https://hooks.example/x")
    with pytest.raises(ValueError, match="channel is required"):
        SlackNotifier(bot_token=TOKEN)


def test_report_helpers():
    renew = SimpleNamespace(serials={"shop": "0A", "api": "77"}, issued={"shop": "0A"}, failures={"db": "CA down"})
    msg = renewal_message(renew)
    assert msg.title == "certfleet: renewal failed for 1 certificate"
    assert msg.lines == ["shop: issued 0A", "db: FAILED — CA down", "not due: api"]
    assert {r["certificate"]: r["result"] for r in msg.table} == {"shop": "issued", "api": "not due", "db": "FAILED"}

    dist = SimpleNamespace(deployed=["shop@0A → lb-1"], unchanged=["shop@0A → lb-2"], failures={}, skipped=[])
    msg = distribution_message(dist)
    assert msg.title == "certfleet: deployed to 1 target"
    assert msg.table == [{"target": "shop@0A → lb-1", "result": "deployed"},
                         {"target": "shop@0A → lb-2", "result": "already current"}]

    t0 = datetime(2025, 1, 1, 0, 0, tzinfo=timezone.utc)
    msg = emergency_timeline_message(["shop"], [("new key", t0), ("verified", t0 + timedelta(seconds=42))], "rotated")
    assert msg.table == [{"time": "00:00:00Z", "elapsed": "+0.0s", "step": "new key"},
                         {"time": "00:00:42Z", "elapsed": "+42.0s", "step": "verified"}]


@pytest.mark.services
def test_verification_failed_flow_posts_with_a_saved_block(prefect_harness, slack):
    """The flow the automation runs: loads the block by name, posts; no block → no-op."""
    from certfleet.flows.notify import notify_verification_failed

    name = f"slack-{uuid.uuid4().hex[:8]}"
    bot(slack).save(name)
    posted = notify_verification_failed("shop", "www.shop.test@127.0.0.1:8443", "hostname mismatch", slack_block=name)
    assert posted is True
    body = json.loads(slack.requests[-1]["body"])
    assert body["channel"] == "C0TEST"
    assert body["blocks"][0]["text"]["text"] == "certfleet: 1 endpoint failed verification"
    assert body["blocks"][1]["text"]["text"] == "• shop @ www.shop.test@127.0.0.1:8443: hostname mismatch"

    count = len(slack.requests)
    assert notify_verification_failed("shop", "x", "y", slack_block=f"missing-{name}") is False
    assert len(slack.requests) == count
