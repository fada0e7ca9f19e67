"""Cloudflare solver against a local HTTP server that checks every request exactly.

Like lego's servermock: each test scripts the requests it expects — method, path,
query, ``Authorization: Bearer`` header, JSON body — and the replies Cloudflare would
send (bodies shaped like the real v4 API). A request that differs is answered 418 and
recorded, and the test fails on it; so does an expected request that never came.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from certfleet.blocks.solvers.cloudflare import (
    CloudflareError,
    CloudflareSolver,
    ZoneNotFoundError,
)
from certfleet.contracts import DnsSolver

TOKEN = "cf-token-" + uuid.uuid4().hex
ZONE = "023e105f4ecef8ad9ca31a8372d0c353"


def ok(result: Any, **extra: Any) -> dict:
    return {"success": True, "errors": [], "messages": [], "result": result, **extra}


def fail(code: int, message: str) -> dict:
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}


def zone(zone_id: str = ZONE, name: str = "shop.test") -> dict:
    return {"id": zone_id, "name": name, "status": "active", "paused": False, "type": "full",
            "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"]}


def record(record_id: str, name: str, content: str) -> dict:
    return {"id": record_id, "zone_id": ZONE, "zone_name": "shop.test", "name": name, "type": "TXT",
            "content": content, "proxiable": False, "proxied": False, "ttl": 120,
            "created_on": "2026-01-01T05:20:00.12345Z", "modified_on": "2026-01-01T05:20:00.12345Z"}


def page(results: list) -> dict:
    return ok(results, result_info={"page": 1, "per_page": 100, "count": len(results), "total_count": len(results)})


@dataclass
class Expect:
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    body: dict | None = None
    status: int = 200
    reply: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)


class CloudflareMock:
    """Serves scripted replies in order and records every way a request differs from the script."""

    def __init__(self) -> None:
        self.script: list[Expect] = []
        self.problems: list[str] = []
        self.times: list[float] = []
        mock = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                mock.times.append(time.monotonic())
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, headers, reply = mock.answer(self.command, self.path, dict(self.headers), raw)
                data = json.dumps(reply).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/client/v4"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def expect(self, *items: Expect) -> None:
        self.script.extend(items)

    def answer(self, method: str, raw_path: str, headers: dict[str, str], raw: bytes):
        seen = f"{method} {raw_path}"
        if not self.script:
            self.problems.append(f"unexpected request {seen}")
            return 418, {}, fail(0, "unexpected")
        want = self.script.pop(0)
        url = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = json.loads(raw) if raw else None
        checks = [
            (method == want.method, f"method {method} != {want.method}"),
            (url.path == "/client/v4" + want.path, f"path {url.path} != /client/v4{want.path}"),
            (query == want.query, f"query {query} != {want.query}"),
            (headers.get("Authorization") == f"Bearer {TOKEN}", "Authorization is not 'Bearer <token>'"),
            (body == want.body, f"body {body} != {want.body}"),
        ]
        wrong = [why for good, why in checks if not good]
        if wrong:
            self.problems.append(f"{seen}: " + "; ".join(wrong))
            return 418, {}, fail(0, "request differs from the script")
        return want.status, want.headers, want.reply

    def verify(self) -> None:
        assert self.problems == []
        assert self.script == [], f"expected requests never came: {self.script}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cf():
    mock = CloudflareMock()
    yield mock
    mock.close()


def solver(cf: CloudflareMock, **kw) -> CloudflareSolver:
    return CloudflareSolver(api_token=TOKEN, api_base=cf.url, retry_delay=0.01, **kw)


def test_solver_meets_the_contract(cf):
    s = solver(cf)
    assert isinstance(s, DnsSolver)
    assert all(f.description for f in CloudflareSolver.model_fields.values())
    assert TOKEN not in repr(s) and TOKEN not in str(s.model_dump())


def test_present_looks_up_the_zone_by_name_then_creates_the_record(cf):
    cf.expect(
        Expect("GET", "/zones", {"name": "www.shop.test"}, reply=page([])),
        Expect("GET", "/zones", {"name": "shop.test"}, reply=page([zone()])),
        Expect("POST", f"/zones/{ZONE}/dns_records",
               body={"type": "TXT", "name": "_acme-challenge.www.shop.test", "content": '"v1"', "ttl": 120},
               reply=ok(record("rec1", "_acme-challenge.www.shop.test", '"v1"'))),
        Expect("POST", f"/zones/{ZONE}/dns_records",  # second value at the same name: no new lookup
               body={"type": "TXT", "name": "_acme-challenge.www.shop.test", "content": '"v2"', "ttl": 120},
               reply=ok(record("rec2", "_acme-challenge.www.shop.test", '"v2"'))),
    )
    s = solver(cf)
    s.present("www.shop.test", "v1")
    s.present("*.www.shop.test", "v2")
    cf.verify()


def test_cleanup_deletes_only_the_record_with_that_content(cf):
    name = "_acme-challenge.shop.test"
    cf.expect(
        Expect("GET", f"/zones/{ZONE}", reply=ok(zone())),
        Expect("GET", f"/zones/{ZONE}/dns_records", {"type": "TXT", "name": name, "per_page": "100"},
               reply=page([record("other", name, '"someone-else"'), record("mine", name, '"v1"')])),
        Expect("DELETE", f"/zones/{ZONE}/dns_records/mine", reply=ok({"id": "mine"})),
        Expect("GET", f"/zones/{ZONE}/dns_records", {"type": "TXT", "name": name, "per_page": "100"},
               reply=page([record("other", name, '"someone-else"')])),
    )
    s = solver(cf, zone_id=ZONE)
    s.cleanup("shop.test", "v1")
    s.cleanup("shop.test", "v1")  # already gone: nothing deleted, no error
    cf.verify()


def test_present_of_an_existing_identical_record_is_success(cf):
    cf.expect(
        Expect("GET", f"/zones/{ZONE}", reply=ok(zone())),
        Expect("POST", f"/zones/{ZONE}/dns_records",
               body={"type": "TXT", "name": "_acme-challenge.shop.test", "content": '"v"', "ttl": 60},
               status=400, reply=fail(81058, "An identical record already exists.")),
    )
    solver(cf, zone_id=ZONE, ttl=60).present("shop.test", "v")
    cf.verify()


def test_rate_limit_and_5xx_are_retried_honouring_retry_after(cf):
    body = {"type": "TXT", "name": "_acme-challenge.shop.test", "content": '"v"', "ttl": 120}
    post = f"/zones/{ZONE}/dns_records"
    cf.expect(
        Expect("GET", f"/zones/{ZONE}", reply=ok(zone())),
        Expect("POST", post, body=body, status=429, headers={"Retry-After": "1"},
               reply=fail(971, "Please wait and consider throttling your request speed")),
        Expect("POST", post, body=body, status=502, reply=fail(0, "Bad gateway")),
        Expect("POST", post, body=body, reply=ok(record("rec", "_acme-challenge.shop.test", '"v"'))),
    )
    solver(cf, zone_id=ZONE).present("shop.test", "v")
    cf.verify()
    assert cf.times[2] - cf.times[1] >= 1.0, "Retry-After: 1 was honoured"
    assert cf.times[3] - cf.times[2] < 0.5, "no Retry-After: short backoff"


def test_errors_quote_cloudflare_and_never_the_token(cf):
    cf.expect(
        Expect("GET", f"/zones/{ZONE}", reply=ok(zone())),
        Expect("POST", f"/zones/{ZONE}/dns_records",
               body={"type": "TXT", "name": "_acme-challenge.shop.test", "content": '"v"', "ttl": 120},
               status=403, reply=fail(10000, "Authentication error")),
    )
    with pytest.raises(CloudflareError) as info:
        solver(cf, zone_id=ZONE).present("shop.test", "v")
    message = str(info.value)
    assert message == (f"cloudflare solver '{ZONE}': add TXT _acme-challenge.shop.test: "
                       "HTTP 403: Authentication error (10000)")
    assert TOKEN not in message and TOKEN not in repr(info.value.__dict__)
    cf.verify()


def test_persistent_5xx_gives_up_after_max_attempts(cf):
    cf.expect(*[Expect("GET", f"/zones/{ZONE}", status=503, reply=fail(0, "Service unavailable"))] * 3)
    with pytest.raises(CloudflareError, match=rf"^cloudflare solver '{ZONE}': read zone: HTTP 503: Service unavailable"):
        solver(cf, zone_id=ZONE, max_attempts=3).present("shop.test", "v")
    cf.verify()


def test_unknown_zone_is_refused(cf):
    cf.expect(
        Expect("GET", "/zones", {"name": "a.other.test"}, reply=page([])),
        Expect("GET", "/zones", {"name": "other.test"}, reply=page([])),
        Expect("GET", "/zones", {"name": "a.other.test"}, reply=page([])),
        Expect("GET", "/zones", {"name": "other.test"}, reply=page([])),
        Expect("GET", f"/zones/{ZONE}", reply=ok(zone())),
    )
    auto = solver(cf)
    assert auto.controls("a.other.test") is False
    with pytest.raises(ZoneNotFoundError, match=r"^cloudflare solver 'auto': no zone visible to the token holds 'a.other.test'"):
        auto.present("a.other.test", "v")
    pinned = solver(cf, zone_id=ZONE)
    assert pinned.controls("www.shop.test") and not pinned.controls("notshop.test")
    cf.verify()


def test_unreachable_api_is_a_clear_error():
    dead = CloudflareSolver(api_token=TOKEN, api_base="http://127.0.0.1:9/client/v4", zone_id=ZONE,
                            retry_delay=0.01, max_attempts=2)
    with pytest.raises(CloudflareError, match=rf"^cloudflare solver '{ZONE}': read zone: cannot reach") as info:
        dead.present("shop.test", "v")
    assert TOKEN not in str(info.value)
