"""ACME Renewal Information (RFC 9773): certID, the window, the persisted choice, ``replaces``.

Pebble 2.4 offers no renewalInfo, so ARI itself is exercised against a small ACME
double over a real socket (directory, nonces, account, order, certificate, renewalInfo)
that records the JWS payloads it receives; real Pebble checks the fallback.
"""

from __future__ import annotations

import base64
import http.server
import json
import random
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfleet import ari, keys, policy, renewal
from certfleet.acme_client import AcmeClient, RetryPolicy, generate_account_key
from certfleet.contracts import IssuanceRequest, Issued, RenewalInfoProvider
from certfleet.inventory import CertificateSpec
from certfleet.store import LocalStore

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)

# RFC 9773 §4.1: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4,
# serial 00:87:65:43:21 (DER INTEGER content octets) -> this certID.
RFC_AKI = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
RFC_SERIAL = 0x87654321
RFC_CERT_ID = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def make_cert(serial: int, aki: bytes | None = RFC_AKI, days: int = 90) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ari.test")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(serial).not_valid_before(NOW - timedelta(days=1))
               .not_valid_after(NOW + timedelta(days=days)))
    if aki is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


# -- certID -------------------------------------------------------------------------


def test_cert_id_reproduces_the_rfc_example():
    pem = make_cert(RFC_SERIAL)
    assert ari.cert_id(pem) == RFC_CERT_ID
    assert ari.cert_id(x509.load_pem_x509_certificate(pem)) == RFC_CERT_ID


def test_cert_id_serial_encoding_and_missing_aki():
    # No high bit: no leading zero byte; unpadded base64url on both halves.
    assert ari.cert_id(make_cert(0x1234)).split(".")[1] == "EjQ"
    assert ari.serial_octets(0x80) == b"\x00\x80"
    with pytest.raises(ari.AriError, match="Authority Key Identifier"):
        ari.cert_id(make_cert(5, aki=None))


# -- the pure policy and the persisted choice ----------------------------------------


def _info(days_total: float, days_left: float):
    from certfleet.models import CertificateInfo

    return CertificateInfo("ab", "f", "CN=x", "I", ("x.test",), NOW - timedelta(days=days_total - days_left),
                           NOW + timedelta(days=days_left), "ec-p256", "k")


def test_policy_puts_the_ari_window_before_the_lifetime_rule():
    info = _info(90, 20)  # 1/3 rule alone: due
    assert policy.renewal_due(info, NOW).reason == "DUE"
    later = policy.AriWindow(NOW + timedelta(days=3), NOW + timedelta(days=4))
    assert policy.renewal_due(info, NOW, later).ok, "the CA's window is in the future: not yet"
    fresh = _info(90, 80)  # 1/3 rule alone: fine
    earlier = policy.AriWindow(NOW - timedelta(days=2), NOW - timedelta(days=1))
    assert policy.renewal_due(fresh, NOW, earlier).reason == "DUE", "the CA asks for renewal now"
    chosen = NOW + timedelta(days=3, hours=5)
    assert policy.renewal_time(info, later, chosen) == chosen


def test_chosen_time_is_kept_and_rechosen_only_when_the_window_moves(tmp_path):
    path = tmp_path / "shop" / "ari-chosen.json"
    w1 = policy.AriWindow(NOW + timedelta(days=1), NOW + timedelta(days=2))
    first = ari.ChosenTimes(path).choose("ab12", w1, random.Random(1))
    assert w1.start <= first <= w1.end
    assert json.loads(path.read_text()) == {"ab12": first.isoformat()}
    for seed in (2, 3, 4):  # other rolls, a fresh reader: the stored time stands
        assert ari.ChosenTimes(path).choose("ab12", w1, random.Random(seed)) == first
    wider = policy.AriWindow(w1.start - timedelta(days=1), w1.end)
    assert ari.ChosenTimes(path).choose("ab12", wider, random.Random(5)) == first
    moved = policy.AriWindow(NOW - timedelta(days=3), NOW - timedelta(days=2))
    second = ari.ChosenTimes(path).choose("ab12", moved, random.Random(6))
    assert moved.start <= second <= moved.end and second != first
    assert ari.ChosenTimes(path).get("ab12") == second
    path.write_text("{not json")
    assert w1.start <= ari.ChosenTimes(path).choose("ab12", w1) <= w1.end, "a garbled file is chosen afresh"


# -- a small ACME double with renewalInfo --------------------------------------------


@dataclass
class AcmeDouble:
    """Just enough ACME over HTTP for one order; records every newOrder payload."""

    windows: dict = field(default_factory=dict)  # certID -> (start, end) ISO strings
    ari: bool = True
    refuse_replaces: bool = False
    ari_failures: int = 0  # renewalInfo answers 503 this many times first
    cert_pem: bytes = b""
    orders: list = field(default_factory=list)
    ari_paths: list = field(default_factory=list)

    def __enter__(self) -> "AcmeDouble":
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, status, body=b"", ctype="application/json", headers=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Replay-Nonce", secrets.token_urlsafe(16))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self):  # noqa: N802 - newNonce
                self._reply(200)

            def do_GET(self):  # noqa: N802
                if self.path == "/dir":
                    d = {"newNonce": double.url("/nonce"), "newAccount": double.url("/acct"),
                         "newOrder": double.url("/order")}
                    if double.ari:
                        d["renewalInfo"] = double.url("/renewal-info/")  # trailing slash: must not double
                    return self._reply(200, json.dumps(d).encode())
                double.ari_paths.append(self.path)
                if double.ari_failures > 0:
                    double.ari_failures -= 1
                    return self._reply(503, b'{"type": "urn:ietf:params:acme:error:serverInternal"}',
                                       "application/problem+json", {"Retry-After": "0"})
                window = double.windows.get(self.path.rsplit("/", 1)[-1])
                if window is None:
                    return self._reply(404, b'{"type": "urn:ietf:params:acme:error:malformed", "detail": "unknown"}',
                                       "application/problem+json")
                body = {"suggestedWindow": {"start": window[0], "end": window[1]}}
                self._reply(200, json.dumps(body).encode(), headers={"Retry-After": "21600"})

            def do_POST(self):  # noqa: N802
                jws = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                raw = jws.get("payload", "")
                payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))) if raw else None
                order = {"status": "valid", "identifiers": [], "authorizations": [],
                         "finalize": double.url("/finalize"), "certificate": double.url("/cert")}
                if self.path == "/acct":
                    return self._reply(200, b'{"status": "valid"}', headers={"Location": double.url("/acct/1")})
                if self.path == "/order":
                    double.orders.append(payload)
                    if double.refuse_replaces and "replaces" in payload:
                        return self._reply(409, json.dumps({"type": "urn:ietf:params:acme:error:alreadyReplaced",
                                                            "detail": "already replaced"}).encode(),
                                           "application/problem+json")
                    order["identifiers"] = payload["identifiers"]
                    return self._reply(201, json.dumps(order).encode(), headers={"Location": double.url("/order/1")})
                if self.path == "/order/1":
                    return self._reply(200, json.dumps(order).encode())
                if self.path == "/cert":
                    return self._reply(200, double.cert_pem, "application/pem-certificate-chain")
                self._reply(404, b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def client(self) -> AcmeClient:
        return AcmeClient(self.url("/dir"), generate_account_key(), retry=RetryPolicy(base_delay=0.01))

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_fetch_window_parses_the_suggested_window():
    pem = make_cert(RFC_SERIAL)
    with AcmeDouble(windows={RFC_CERT_ID: ("2025-01-02T04:00:00Z", "2025-01-03T04:00:00Z")}) as ca:
        directory = httpx.get(ca.url("/dir")).json()
        window = ari.fetch_window(directory, pem, httpx.get)
        assert (window.start, window.end) == (datetime(2025, 1, 2, 4, tzinfo=timezone.utc),
                                              datetime(2025, 1, 3, 4, tzinfo=timezone.utc))
        assert window.retry_after == 21600
        assert ca.ari_paths == [f"/renewal-info/{RFC_CERT_ID}"]
        assert ari.fetch_window({"newOrder": "x"}, pem, httpx.get) is None, "no renewalInfo: no ARI"


def test_client_renewal_info_retries_a_transient_failure():
    pem = make_cert(RFC_SERIAL)
    with AcmeDouble(windows={RFC_CERT_ID: ("2025-01-02T04:00:00Z", "2025-01-03T04:00:00Z")}, ari_failures=1) as ca:
        client = ca.client()
        assert client.renewal_info(pem) == (datetime(2025, 1, 2, 4, tzinfo=timezone.utc),
                                            datetime(2025, 1, 3, 4, tzinfo=timezone.utc))
        assert len(ca.ari_paths) == 2
    with AcmeDouble(ari=False) as no_ari:
        assert no_ari.client().renewal_info(pem) is None
        assert no_ari.ari_paths == []


def _request(replaces: str | None) -> IssuanceRequest:
    csr = keys.make_csr(keys.generate_key("ec-p256"), ["ari.test"])
    return IssuanceRequest(name="ari", domains=("ari.test",), csr_pem=csr, replaces=replaces)


class NoSolver:
    """The double's orders come back valid: nothing is ever presented."""

    def present(self, domain, value):
        raise AssertionError("no challenge expected")

    def cleanup(self, domain, value):
        pass


def test_new_order_sends_replaces_and_retries_without_when_refused():
    with AcmeDouble(cert_pem=make_cert(7)) as ca:
        ca.client().issue(_request(RFC_CERT_ID), NoSolver())
        assert [o.get("replaces") for o in ca.orders] == [RFC_CERT_ID]
        assert ca.orders[0]["identifiers"] == [{"type": "dns", "value": "ari.test"}]
    with AcmeDouble(cert_pem=make_cert(7), refuse_replaces=True) as ca:
        issued = ca.client().issue(_request(RFC_CERT_ID), NoSolver())
        assert issued.fullchain_pem == ca.cert_pem
        assert [o.get("replaces") for o in ca.orders] == [RFC_CERT_ID, None], "once with, once without"
    with AcmeDouble(cert_pem=make_cert(7), ari=False) as ca:
        ca.client().issue(_request(RFC_CERT_ID), NoSolver())
        assert "replaces" not in ca.orders[0], "a CA without ARI never sees replaces"


# -- the renew path ----------------------------------------------------------------


@dataclass
class WindowedLocalCA:
    """The session's local CA as an issuer that also answers renewal_info with a set window."""

    ca: object
    window: tuple | None
    requests: list = field(default_factory=list)
    asked: list = field(default_factory=list)

    def issue(self, request: IssuanceRequest) -> Issued:
        self.requests.append(request)
        return Issued(self.ca.sign_csr(request.csr_pem), "windowed-local-ca")

    def renewal_info(self, cert_pem: bytes):
        self.asked.append(ari.cert_id(cert_pem))
        if isinstance(self.window, Exception):
            raise self.window
        return self.window


SPEC = CertificateSpec(name="shop", domains=["shop.test"], issuer="ca")


def _stored(tmp_path, local_ca):
    now = datetime.now(timezone.utc)
    chain, key = local_ca.issue(["shop.test"], not_before=now - timedelta(days=10), not_after=now + timedelta(days=80))
    store = LocalStore(tmp_path / "store")
    return store, store.put("shop", chain, key, issuer="ca")


def test_window_in_the_future_keeps_the_certificate_and_persists_the_choice(tmp_path, local_ca):
    store, cur = _stored(tmp_path, local_ca)  # 1/3 rule: not due either way
    now = datetime.now(timezone.utc)
    issuer = WindowedLocalCA(local_ca, (now + timedelta(days=20), now + timedelta(days=22)))
    assert isinstance(issuer, RenewalInfoProvider)
    out = renewal.renew(SPEC, store, issuer, issuer_name="ca")
    assert (out.issued, out.serial) == (False, cur.serial)
    chosen_file = tmp_path / "store" / "_ari" / "shop.json"
    chosen = json.loads(chosen_file.read_text())[cur.serial]
    assert f"renews at {datetime.fromisoformat(chosen):%Y-%m-%d %H:%M}Z" in out.message
    renewal.renew(SPEC, store, issuer, issuer_name="ca")
    assert json.loads(chosen_file.read_text())[cur.serial] == chosen, "not re-rolled on the next check"
    assert issuer.requests == [] and len(issuer.asked) == 2


def test_window_in_the_past_renews_with_replaces(tmp_path, local_ca):
    store, cur = _stored(tmp_path, local_ca)  # 1/3 rule alone would wait ~50 days
    now = datetime.now(timezone.utc)
    issuer = WindowedLocalCA(local_ca, (now - timedelta(days=2), now - timedelta(days=1)))
    out = renewal.renew(SPEC, store, issuer, issuer_name="ca")
    assert out.issued and out.reason == "DUE" and out.previous_serial == cur.serial
    assert store.current("shop").serial == out.serial != cur.serial
    replaced = ari.cert_id(store.load_fullchain("shop", cur.serial))
    assert [r.replaces for r in issuer.requests] == [replaced] == issuer.asked
    assert cur.serial in json.loads((tmp_path / "store" / "_ari" / "shop.json").read_text())


def test_ari_failure_falls_back_to_the_lifetime_rule(tmp_path, local_ca, caplog):
    store, _ = _stored(tmp_path, local_ca)
    issuer = WindowedLocalCA(local_ca, RuntimeError("CA down"))
    out = renewal.renew(SPEC, store, issuer, issuer_name="ca")
    assert (out.issued, out.reason) == (False, "OK")
    assert "CA down" in caplog.text and "1/3-lifetime rule" in caplog.text
    assert not (tmp_path / "store" / "_ari" / "shop.json").exists()


# -- real Pebble: no ARI, clean fallback ----------------------------------------------


@pytest.mark.services
def test_pebble_without_ari_falls_back_and_issues(pebble, tmp_path, local_ca, issued_since):
    from certfleet.blocks.issuers.acme import AcmeIssuer
    from certfleet_dev.challtestsrv import ChallTestSrvSolver

    acme = AcmeIssuer(directory_url=pebble.directory_url, ca_bundle=str(pebble.ca_cert_path),
                      account_key_path=str(tmp_path / "acct.pem"),
                      solver=ChallTestSrvSolver(url=pebble.challtestsrv_url))
    now = datetime.now(timezone.utc)
    chain, key = local_ca.issue(["shop.test"], not_before=now - timedelta(days=70), not_after=now + timedelta(days=20))
    store = LocalStore(tmp_path / "store")
    cur = store.put("shop", chain, key, issuer="pebble")
    assert acme.renewal_info(chain) is None

    class Recording:
        def __init__(self):
            self.requests = []

        def issue(self, request):
            self.requests.append(request)
            return acme.issue(request)

        def renewal_info(self, cert_pem):
            return acme.renewal_info(cert_pem)

    issuer = Recording()
    out = renewal.renew(SPEC, store, issuer, issuer_name="pebble")
    assert out.issued and out.reason == "DUE" and out.previous_serial == cur.serial
    assert issuer.requests[0].replaces == ari.cert_id(chain), "asked for, dropped by the client: no ARI"
    assert issued_since() == [out.serial]
    assert not (tmp_path / "store" / "_ari" / "shop.json").exists()
