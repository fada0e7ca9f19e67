"""One retry layer per failure kind: a CA that stays down gets a known number of requests.

The ACME client owns CA failures (badNonce, 5xx, connection errors, Retry-After): it
tries each protocol step ``RetryPolicy.attempts`` times. The renew task's retries are
for transient infrastructure only and never retry an ``AcmeError`` again — before this,
5 client tries inside 4 task attempts sent up to 20 requests to a CA that was down.

The "CA" here is a real HTTP server on a free loopback port that answers every request
with 503 and counts them: what a CA in an outage does.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from certfleet.acme_client import RetryPolicy


@pytest.fixture
def ca_down():
    """An HTTP server answering 503 to everything; ``count()`` is how many requests it saw."""
    seen: list[str] = []

    class Down(BaseHTTPRequestHandler):
        def _answer(self):
            seen.append(f"{self.command} {self.path}")
            body = b'{"type": "urn:ietf:params:acme:error:serverInternal", "detail": "down for maintenance"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_HEAD = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Down)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}/dir", "count": lambda: len(seen), "seen": seen}
    server.shutdown()
    server.server_close()


def test_a_ca_that_stays_down_gets_exactly_the_clients_attempts(prefect_harness, ca_down, tmp_path):
    from certfleet.flows.renew import renew

    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(json.dumps({
        "store": {"path": "store"},
        "issuers": {"down": {"kind": "acme", "directory_url": ca_down["url"],
                             "solver": {"kind": "challtestsrv", "url": "http://127.0.0.1:9"}}},
        "certificates": [{"name": "shop", "domains": ["shop.test"], "issuer": "down"}],
    }))
    state = renew(inventory=str(inventory), return_state=True)
    assert state.is_failed()
    assert "shop" in state.message and "down for maintenance" in state.message, state.message
    # One layer: the client's tries of the first step (the directory), no task retry on top.
    assert ca_down["count"]() == RetryPolicy().attempts == 5, ca_down["seen"]


def test_retry_after_is_parsed_in_one_helper_used_by_every_client():
    from datetime import datetime, timezone

    import certfleet.acme_client as acme_client
    import certfleet.ari as ari
    from certfleet.blocks.solvers import cloudflare
    from certfleet.httputil import retry_after_seconds

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0
    for garbled in (None, "", "soon", "inf", "nan"):
        assert retry_after_seconds(garbled) is None, garbled
    # The clients use this very function, not a copy of their own.
    assert acme_client.retry_after_seconds is ari.retry_after_seconds is cloudflare.retry_after_seconds is retry_after_seconds


def test_dns01_name_and_value_come_from_one_helper_for_every_solver():
    import josepy as jose
    from acme import challenges
    from cryptography.hazmat.primitives.asymmetric import ec

    from certfleet.blocks.solvers import cloudflare, rfc2136, route53
    from certfleet_dev import challtestsrv
    from certfleet.challenges import challenge_name, dns01_info

    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    chall = challenges.DNS01(token=b"x" * 32)
    info = dns01_info("*.Shop.Test.", chall.key_authorization(key))
    # Same value the acme package computes for the CA's side of the check.
    assert info == type(info)("_acme-challenge.shop.test", chall.validation(key))
    for module in (rfc2136, route53, cloudflare):
        assert module.challenge_name is challenge_name
    assert challtestsrv._challenge_host("*.shop.test") == "_acme-challenge.shop.test."
