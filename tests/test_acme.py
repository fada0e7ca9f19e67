"""AcmeClient and the ACME blocks against a real Pebble (session fixture ``pebble``).

Pebble keeps its defaults that make clients honest: 5% of good nonces rejected and
authorizations reused half the time. Issuances are counted in Pebble's own log.
"""

from __future__ import annotations

import os
import stat
import time
import uuid
from dataclasses import dataclass, field

import pytest
from acme import crypto_util
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certfleet.blocks.issuers.acme import AcmeIssuer
from certfleet_dev.challtestsrv import ChallTestSrvSolver
from certfleet.acme_client import (
    AcmeClient,
    AcmeError,
    RetryPolicy,
    generate_account_key,
)
from certfleet.contracts import DnsSolver, IssuanceRequest
from certfleet_dev.ports import free_port

pytestmark = pytest.mark.services


def _request(*domains: str) -> IssuanceRequest:
    """A CSR for ``domains`` with a throwaway EC key (the key never leaves the test)."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return IssuanceRequest(name=domains[0], domains=domains, csr_pem=crypto_util.make_csr(key_pem, list(domains)))


def _names() -> tuple[str, str]:
    """Fresh names per test, so Pebble's authz reuse never hides a validation."""
    base = f"{uuid.uuid4().hex[:10]}.test"
    return base, f"www.{base}"


def _chain(fullchain_pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(fullchain_pem)


def _serial(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


@dataclass
class RecordingSolver:
    """Wraps a real solver, records calls; ``corrupt`` publishes a wrong TXT value."""

    inner: DnsSolver
    corrupt: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)

    def present(self, domain: str, value: str) -> None:
        self.calls.append(("present", domain))
        self.inner.present(domain, "wrong-value" if self.corrupt else value)

    def cleanup(self, domain: str, value: str) -> None:
        self.calls.append(("cleanup", domain))
        self.inner.cleanup(domain, value)


@pytest.fixture
def solver(pebble) -> ChallTestSrvSolver:
    return ChallTestSrvSolver(url=pebble.challtestsrv_url)


@pytest.fixture
def client(pebble) -> AcmeClient:
    return AcmeClient(
        pebble.directory_url, generate_account_key(), email="ops@example.com", verify=str(pebble.ca_cert_path)
    )


def test_issue_two_names_counts_one_issuance(client, solver, issued_since):
    names = _names()
    issued = client.issue(_request(*names), solver)

    chain = _chain(issued.fullchain_pem)
    assert len(chain) >= 2, "leaf plus Pebble's intermediate"
    leaf = chain[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == set(names)
    assert leaf.issuer == chain[1].subject
    assert issued_since() == [_serial(leaf)]


def test_chain_matches_pebble_intermediate(pebble, client, solver):
    issued = client.issue(_request(*_names()), solver)
    intermediate = x509.load_pem_x509_certificate(pebble.intermediates_pem())
    leaf = _chain(issued.fullchain_pem)[0]
    leaf.verify_directly_issued_by(intermediate)


def test_same_key_reuses_account(pebble):
    key = generate_account_key()
    verify = str(pebble.ca_cert_path)
    first = AcmeClient(pebble.directory_url, key, email="ops@example.com", verify=verify).register_or_fetch()
    second = AcmeClient(pebble.directory_url, key, email="ops@example.com", verify=verify).register_or_fetch()
    other = AcmeClient(pebble.directory_url, generate_account_key(), verify=verify).register_or_fetch()
    assert first == second
    assert other != first


def test_revoke_shows_in_pebble(pebble, client, solver):
    issued = client.issue(_request(*_names()), solver)
    leaf_pem = issued.fullchain_pem.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    serial = _serial(_chain(issued.fullchain_pem)[0])
    assert pebble.cert_status(serial)["Status"] == "Valid"

    client.revoke(leaf_pem, reason=4)  # superseded
    assert pebble.cert_status(serial)["Status"] == "Revoked"
    client.revoke(leaf_pem, reason=4)  # already revoked: idempotent, no error


def test_fifteen_issuances_survive_nonce_rejection(client, solver, issued_since):
    started = time.monotonic()
    serials = []
    for _ in range(15):
        issued = client.issue(_request(*_names()), solver)
        serials.append(_serial(_chain(issued.fullchain_pem)[0]))
    assert issued_since() == serials
    assert time.monotonic() - started < 30


def test_invalid_contact_is_permanent_with_ca_detail(pebble):
    bad = AcmeClient(pebble.directory_url, generate_account_key(), email="not an email", verify=str(pebble.ca_cert_path))
    with pytest.raises(AcmeError) as info:
        bad.register_or_fetch()
    err = info.value
    assert err.transient is False
    assert err.problem_type in {"invalidContact", "malformed", "unsupportedContact"}
    assert err.detail and err.detail in str(err)


def test_ca_down_is_transient_after_bounded_retries():
    url = f"https://127.0.0.1:{free_port()}/dir"  # nothing listens there
    retry = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)
    down = AcmeClient(url, generate_account_key(), retry=retry)
    started = time.monotonic()
    with pytest.raises(AcmeError) as info:
        down.register_or_fetch()
    assert info.value.transient is True
    assert "cannot reach" in str(info.value)
    assert time.monotonic() - started < 5


def test_cleanup_runs_when_validation_fails(client, solver, issued_since):
    names = _names()
    recording = RecordingSolver(solver, corrupt=True)
    with pytest.raises(AcmeError) as info:
        client.issue(_request(*names), recording)
    assert info.value.transient is False
    assert "validation of" in str(info.value)
    assert info.value.detail, "the CA's reason is carried"
    presented = [d for op, d in recording.calls if op == "present"]
    cleaned = [d for op, d in recording.calls if op == "cleanup"]
    assert presented and sorted(cleaned) == sorted(presented)
    assert issued_since() == []


def test_cleanup_runs_when_solver_fails_midway(client, solver):
    class Flaky(RecordingSolver):
        def present(self, domain: str, value: str) -> None:
            super().present(domain, value)
            if len(self.calls) == 2:
                raise RuntimeError("dns api down")

    flaky = Flaky(solver)
    with pytest.raises(RuntimeError, match="dns api down"):
        client.issue(_request(*_names()), flaky)
    assert [op for op, _ in flaky.calls] == ["present", "present", "cleanup", "cleanup"]


def test_csr_names_must_match_request(client, solver):
    request = _request(*_names())
    wrong = IssuanceRequest(name="x", domains=("other.test",), csr_pem=request.csr_pem)
    with pytest.raises(AcmeError, match="differ from requested"):
        client.issue(wrong, solver)


def test_issuer_block_creates_key_once_and_issues(pebble, solver, tmp_path, issued_since):
    key_path = tmp_path / "acct" / "account.pem"
    issuer = AcmeIssuer(
        directory_url=pebble.directory_url,
        ca_bundle=str(pebble.ca_cert_path),
        account_key_path=str(key_path),
        solver=solver,
    )
    issued = issuer.issue(_request(*_names()))
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    first_key = key_path.read_bytes()
    assert b"PRIVATE KEY" in first_key

    again = AcmeIssuer(**{**issuer.model_dump(exclude={"block_type_slug", "solver"}), "solver": solver})
    again.issue(_request(*_names()))
    assert key_path.read_bytes() == first_key
    assert again._acme().account_url == issuer._acme().account_url
    assert len(issued_since()) == 2
    assert _chain(issued.fullchain_pem)


def test_issuer_block_prefixes_errors(pebble, tmp_path):
    issuer = AcmeIssuer(
        directory_url=pebble.directory_url,
        ca_bundle=str(pebble.ca_cert_path),
        account_key_path=str(tmp_path / "k.pem"),
        solver=ChallTestSrvSolver(url=f"http://127.0.0.1:{free_port()}"),
    )
    with pytest.raises(AcmeError) as info:
        issuer.issue(_request(*_names()))
    message = str(info.value)
    assert message.startswith(f"acme issuer '{pebble.directory_url}': challtestsrv solver:")
    assert "PRIVATE KEY" not in message


def test_errors_never_carry_key_material(pebble, client, solver):
    with pytest.raises(AcmeError) as info:
        client.issue(_request(*_names()), RecordingSolver(solver, corrupt=True))
    assert "PRIVATE KEY" not in str(info.value)
    assert "PRIVATE KEY" not in repr(info.value.__dict__)


def test_heavy_nonce_rejection_still_issues(tmp_path):
    """A Pebble rejecting 30% of good nonces: every request must retry badNonce itself."""
    from certfleet_dev.pebble import start_pebble

    with start_pebble(tmp_path, nonce_reject=30) as noisy:
        client = AcmeClient(noisy.directory_url, generate_account_key(), verify=str(noisy.ca_cert_path))
        solver = ChallTestSrvSolver(url=noisy.challtestsrv_url)
        for _ in range(3):
            client.issue(_request(*_names()), solver)
        assert len(noisy.issued_serials()) == 3
        assert client._net.nonce_retries > 0


class _ScriptedCA:
    """A plain-HTTP stand-in for a CA's directory that replays scripted replies in order.

    Pebble never answers 429/503, so Retry-After handling is exercised here instead.
    """

    def __init__(self, replies):
        import http.server
        import threading

        script = list(replies)
        self.hits: list[float] = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hits.append(time.monotonic())
                status, headers, body = script.pop(0) if len(script) > 1 else script[0]
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


_PROBLEM = {"Content-Type": "application/problem+json"}
_RATE_LIMITED = b'{"type": "urn:ietf:params:acme:error:rateLimited", "detail": "slow down"}'
_DIRECTORY = b'{"newNonce": "http://x/n", "newAccount": "http://x/a", "newOrder": "http://x/o"}'


def test_rate_limit_and_5xx_are_retried_honouring_retry_after():
    ca = _ScriptedCA(
        [
            (429, {**_PROBLEM, "Retry-After": "1"}, _RATE_LIMITED),
            (503, {"Content-Type": "text/html"}, b"<html>maintenance</html>"),
            (200, {"Content-Type": "application/json"}, _DIRECTORY),
        ]
    )
    try:
        client = AcmeClient(ca.url, generate_account_key(), retry=RetryPolicy(base_delay=0.05))
        assert client.directory()["newOrder"] == "http://x/o"
        assert len(ca.hits) == 3
        assert ca.hits[1] - ca.hits[0] >= 1.0, "Retry-After: 1 was honoured"
    finally:
        ca.close()


def test_long_retry_after_is_raised_not_slept():
    ca = _ScriptedCA([(429, {**_PROBLEM, "Retry-After": "3600"}, _RATE_LIMITED)])
    try:
        client = AcmeClient(ca.url, generate_account_key())
        started = time.monotonic()
        with pytest.raises(AcmeError) as info:
            client.directory()
        assert time.monotonic() - started < 2
        err = info.value
        assert (err.transient, err.problem_type, err.retry_after) == (True, "rateLimited", 3600)
        assert "slow down" in str(err)
    finally:
        ca.close()
