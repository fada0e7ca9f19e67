"""The webhook target against a real HTTPS receiver on loopback.

``Receiver`` is a small ``http.server`` thread behind TLS (its certificate from a LocalCA,
trusted through the block's ``ca_bundle``) standing in for an appliance's "install
certificate" API. It does what a careful receiver does — recompute the HMAC over the raw
body and refuse a bad signature with 401 — and records every body it accepted, so tests
assert what went over the wire. Its answers can be scripted (e.g. 503 then 200).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from certfleet.blocks.targets.webhook import SIGNATURE_HEADER, WebhookTarget, WebhookTargetError
from certfleet import pki
from certfleet.contracts import DeployBundle, Target
from certfleet_dev.ports import free_port
from certfleet.localca import LocalCA

pytestmark = pytest.mark.services

SECRET = "s3cret-shared-with-receiver"


class Receiver(ThreadingHTTPServer):
    """HTTPS server: POST /install (signature checked), GET /current -> {"serial": ...}."""

    def __init__(self, ca: LocalCA, tmp_path, secret: str = SECRET):
        super().__init__(("127.0.0.1", 0), _Handler)
        chain, key = ca.issue(["localhost"])
        (tmp_path / "receiver.pem").write_bytes(chain)
        (tmp_path / "receiver.key").write_bytes(key)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tmp_path / "receiver.pem", tmp_path / "receiver.key")
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.secret = secret.encode()
        self.bodies: list[dict] = []  # accepted deliveries
        self.raw: list[bytes] = []  # every POST body, accepted or not
        self.requests: list[tuple[str, dict, bytes]] = []  # (path, headers, body) of every POST
        self.script: list[int] = []  # statuses to answer before accepting (e.g. [503])
        self.echo_body = False  # a careless receiver that echoes the request in its error
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def base(self) -> str:
        return f"https://localhost:{self.server_address[1]}"


def verify_signature(secret: bytes, url: str, body: bytes, header: str, now: float | None = None,
                     tolerance: int = 300) -> bool:
    """What a careful receiver does (the snippet in docs/targets.md): recompute the HMAC over
    "t.url.body" with the URL it is served at, and refuse a timestamp outside the window."""
    import time

    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = hmac.new(secret, f"{t}.{url}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def log_message(self, *args) -> None:
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.raw.append(raw)
        self.server.requests.append((self.path, dict(self.headers), raw))
        if not verify_signature(self.server.secret, self.server.base + self.path, raw,
                                self.headers.get(SIGNATURE_HEADER, "")):
            return self._reply(401, b"bad signature")
        if self.server.script:
            status = self.server.script.pop(0)
            return self._reply(status, raw if self.server.echo_body else b"try later")
        self.server.bodies.append(json.loads(raw))
        self._reply(202, b'{"ok": true}')

    def do_GET(self):
        if not self.server.bodies:
            return self._reply(404, b"{}")
        self._reply(200, json.dumps({"serial": self.server.bodies[-1]["serial"].upper()}).encode())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCA:
    return LocalCA.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def receiver(ca, tmp_path):
    server = Receiver(ca, tmp_path)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def ca_bundle(ca, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.root_pem)
    return str(path)


def bundle(ca: LocalCA) -> DeployBundle:
    chain, key = ca.issue(["shop.test"])
    return DeployBundle("shop", pki.serial_hex(pki.load_certs(chain)[0]), chain, key)


def make_target(receiver: Receiver, trusted: str, **overrides) -> WebhookTarget:
    fields = dict(url=receiver.base + "/install", hmac_secret=SECRET, ca_bundle=trusted,
                  timeout=5, retry_backoff=0.01)
    return WebhookTarget(**{**fields, **overrides})


def test_posts_signed_certificate_without_the_key_by_default(receiver, ca_bundle, ca):
    target = make_target(receiver, ca_bundle)
    assert isinstance(target, Target)
    b = bundle(ca)
    receipt = target.deploy(b)
    assert receipt.serial == b.serial and receipt.detail == "posted (202)"
    [body] = receiver.bodies
    assert body["certificate"] == "shop" and body["serial"] == b.serial
    assert body["fullchain_pem"].encode() == b.fullchain_pem
    assert body["not_after"] == pki.describe(pki.load_certs(b.fullchain_pem)[0]).not_after.isoformat()
    assert "private_key_pem" not in body
    assert b"PRIVATE KEY" not in receiver.raw[0]
    assert SECRET not in repr(target)


def test_key_is_sent_only_when_configured(receiver, ca_bundle, ca):
    b = bundle(ca)
    make_target(receiver, ca_bundle, include_key=True).deploy(b)
    assert receiver.bodies[0]["private_key_pem"].encode() == b.key_pem


def test_5xx_is_retried_then_delivered(receiver, ca_bundle, ca):
    receiver.script = [503, 502]
    b = bundle(ca)
    assert make_target(receiver, ca_bundle).deploy(b).serial == b.serial
    assert len(receiver.raw) == 3 and len(receiver.bodies) == 1


def test_5xx_that_persists_is_a_clear_error(receiver, ca_bundle, ca):
    receiver.script = [500] * 5
    with pytest.raises(WebhookTargetError) as err:
        make_target(receiver, ca_bundle, attempts=2).deploy(bundle(ca))
    assert str(err.value) == (f"webhook target 'https://localhost:{receiver.server_address[1]}/install': "
                              "POST answered 500 Internal Server Error after 2 attempts: try later")


def test_4xx_is_not_retried_and_an_echoed_key_is_redacted(receiver, ca_bundle, ca):
    receiver.script, receiver.echo_body = [422], True
    b = bundle(ca)
    with pytest.raises(WebhookTargetError, match=r"POST answered 422 Unprocessable") as err:
        make_target(receiver, ca_bundle, include_key=True).deploy(b)
    assert len(receiver.raw) == 1
    assert "PRIVATE KEY" not in str(err.value)
    for line in b.key_pem.decode().splitlines()[1:-1]:
        assert line not in str(err.value)


def test_wrong_hmac_secret_is_refused_by_the_receiver(receiver, ca_bundle, ca):
    with pytest.raises(WebhookTargetError, match=r"POST answered 401 Unauthorized: bad signature") as err:
        make_target(receiver, ca_bundle, hmac_secret="not-the-secret").deploy(bundle(ca))
    assert "not-the-secret" not in str(err.value)
    assert receiver.bodies == []


def test_current_url_reports_the_held_serial(receiver, ca_bundle, ca):
    target = make_target(receiver, ca_bundle, current_url=receiver.base + "/current")
    assert target.current() is None  # 404: holds nothing yet
    b = bundle(ca)
    target.deploy(b)
    assert target.current() == b.serial  # receiver answers upper case; normalised
    assert make_target(receiver, ca_bundle).current() is None  # no current_url: always re-post


def test_untrusted_receiver_certificate_is_refused(receiver, ca, ca_bundle):
    with pytest.raises(WebhookTargetError, match=r"not trusted \(set ca_bundle\?\)"):
        make_target(receiver, ca_bundle, ca_bundle=None).deploy(bundle(ca))
    assert receiver.raw == []


def test_unreachable_receiver_is_a_clear_error(ca):
    port = free_port()
    target = WebhookTarget(url=f"http://127.0.0.1:{port}/install?token=abc", hmac_secret=SECRET,
                           attempts=2, retry_backoff=0.01)
    with pytest.raises(WebhookTargetError) as err:
        target.deploy(bundle(ca))
    assert str(err.value) == f"webhook target 'http://127.0.0.1:{port}/install': POST failed: connection refused"


def test_non_http_url_is_rejected():
    with pytest.raises(ValueError, match="not an http"):
        WebhookTarget(url="ftp://x/", hmac_secret=SECRET)


# --- signed timestamp + URL, no key in clear text (issue 11) -------------------------

def test_signature_covers_timestamp_and_url_so_a_captured_request_cannot_be_replayed(receiver, ca_bundle, ca):
    import time

    import httpx

    make_target(receiver, ca_bundle).deploy(bundle(ca))
    [(path, headers, raw)] = receiver.requests
    signature = headers[SIGNATURE_HEADER]
    secret = SECRET.encode()
    assert verify_signature(secret, receiver.base + path, raw, signature)
    t = int(dict(p.split("=", 1) for p in signature.split(","))["t"])
    assert abs(t - time.time()) < 600
    # Another URL, a later time, or a forged timestamp: the same bytes no longer verify.
    assert not verify_signature(secret, receiver.base + "/other-install", raw, signature)
    assert not verify_signature(secret, receiver.base + path, raw, signature, now=t + 301)
    forged = signature.replace(f"t={t}", f"t={t + 100}")
    assert not verify_signature(secret, receiver.base + path, raw, forged)
    # Replayed over the wire to another URL of the same receiver: refused.
    with httpx.Client(verify=ssl.create_default_context(cafile=ca_bundle)) as http:
        answer = http.post(receiver.base + "/other-install", content=raw,
                           headers={SIGNATURE_HEADER: signature, "Content-Type": "application/json"})
    assert answer.status_code == 401
    assert len(receiver.bodies) == 1


def test_include_key_over_plain_http_is_refused_and_nothing_is_sent(ca):
    from http.server import HTTPServer

    hits = []

    class Plain(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            hits.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = HTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/install"
    try:
        with pytest.raises(ValueError, match="include_key is true but url is not https"):
            WebhookTarget(url=url, hmac_secret=SECRET, include_key=True)
        # A block changed after it was built (or loaded without validation) is refused at deploy.
        target = WebhookTarget(url=url, hmac_secret=SECRET)
        object.__setattr__(target, "include_key", True)
        b = bundle(ca)
        with pytest.raises(WebhookTargetError, match=r"webhook target 'http://127\.0\.0\.1:\d+/install': include_key .*nothing sent") as err:
            target.deploy(b)
        assert b"PRIVATE KEY" not in str(err.value).encode()
        assert hits == []
        WebhookTarget(url=url, hmac_secret=SECRET).deploy(b)  # without the key, http is allowed
        assert len(hits) == 1 and b"PRIVATE KEY" not in hits[0]
    finally:
        server.shutdown()
        server.server_close()
