"""http-01 through the webroot solver: a real Pebble validates against a real nginx.

Pebble's validator fetches ``http://<domain>:<httpPort>/.well-known/acme-challenge/<token>``.
Its DNS is pebble-challtestsrv, which answers every A query with 127.0.0.1 (its
``-defaultIPv4``) and every AAAA with ::1, so the test domain reaches the nginx below;
nginx listens on both loopbacks when IPv6 is there. httpPort is fixed when Pebble
starts, so this module runs its own Pebble with httpPort = nginx's port.
"""

from __future__ import annotations

import stat
import uuid
from dataclasses import dataclass, field

import httpx
import pytest
from acme import crypto_util
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certfleet.blocks.issuers.acme import AcmeIssuer
from certfleet.blocks.solvers.webroot import WebrootError, WebrootSolver
from certfleet.acme_client import AcmeClient, AcmeError, generate_account_key
from certfleet.challenges import HttpSolver
from certfleet.contracts import DnsSolver, IssuanceRequest
from certfleet_dev.nginx import Vhost, ipv6_loopback_available, start_nginx
from certfleet_dev.pebble import start_pebble
from certfleet_dev.ports import free_port

pytestmark = pytest.mark.services


@dataclass
class WebrootVhost(Vhost):
    """A plain-HTTP vhost serving ``webroot`` as static files (the certbot --webroot setup)."""

    webroot: str = ""

    def render(self) -> str:
        listens = [f"        listen {self.listen}:{self.port} default_server;"]
        if ipv6_loopback_available():
            listens.append(f"        listen [::1]:{self.port} default_server;")
        return "\n".join([
            f"    # vhost {self.name}",
            "    server {",
            *listens,
            "        server_name _;",
            f"        root {self.webroot};",
            "        location /.well-known/acme-challenge/ { default_type text/plain; }",
            "    }",
        ])


@pytest.fixture(scope="module")
def webroot(tmp_path_factory):
    return tmp_path_factory.mktemp("webroot")


@pytest.fixture(scope="module")
def http_stack(tmp_path_factory, webroot):
    """nginx serving ``webroot`` on a loopback port, and a Pebble validating http-01 there."""
    port = free_port()
    vhost = WebrootVhost("webroot", [], port, None, None, webroot=str(webroot))
    with start_nginx(tmp_path_factory.mktemp("nginx"), [vhost]) as nginx:
        with start_pebble(tmp_path_factory.mktemp("pebble-http"), http_port=port) as pebble:
            yield pebble, nginx, port


@dataclass
class Recording:
    """Wraps the webroot solver and notes which files existed while validation ran."""

    inner: WebrootSolver
    calls: list[tuple[str, str]] = field(default_factory=list)

    def present_http(self, domain: str, token: str, key_authorization: str) -> None:
        self.calls.append(("present", domain))
        self.inner.present_http(domain, token, key_authorization)

    def cleanup_http(self, domain: str, token: str, key_authorization: str) -> None:
        self.calls.append(("cleanup", domain))
        self.inner.cleanup_http(domain, token, key_authorization)


def _request(*domains: str) -> IssuanceRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return IssuanceRequest(name=domains[0], domains=domains, csr_pem=crypto_util.make_csr(key_pem, list(domains)))


def _names() -> tuple[str, str]:
    base = f"{uuid.uuid4().hex[:10]}.test"
    return base, f"www.{base}"


def _challenge_files(webroot) -> list:
    directory = webroot / ".well-known" / "acme-challenge"
    return sorted(directory.iterdir()) if directory.exists() else []


def test_solver_meets_the_http_contract(webroot):
    solver = WebrootSolver(webroot=str(webroot))
    assert isinstance(solver, HttpSolver)
    assert not isinstance(solver, DnsSolver)
    assert all(f.description for f in WebrootSolver.model_fields.values())


def test_present_is_served_by_nginx_and_cleanup_removes_it(http_stack, webroot):
    _, _, port = http_stack
    solver = WebrootSolver(webroot=str(webroot))
    token = "tok_" + uuid.uuid4().hex
    solver.present_http("a.test", token, f"{token}.thumbprint")
    path = webroot / ".well-known" / "acme-challenge" / token
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    url = f"http://127.0.0.1:{port}/.well-known/acme-challenge/{token}"
    assert httpx.get(url, verify=False).text == f"{token}.thumbprint"

    solver.cleanup_http("a.test", token, f"{token}.thumbprint")
    assert not path.exists()
    assert httpx.get(url, verify=False).status_code == 404
    solver.cleanup_http("a.test", token, f"{token}.thumbprint")  # already gone: fine


def test_pebble_validates_http01_and_files_are_removed(http_stack, webroot):
    pebble, _, _ = http_stack
    client = AcmeClient(pebble.directory_url, generate_account_key(), verify=str(pebble.ca_cert_path))
    names = _names()
    solver = Recording(WebrootSolver(webroot=str(webroot)))
    issued = client.issue(_request(*names), solver)

    leaf = x509.load_pem_x509_certificates(issued.fullchain_pem)[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == set(names)
    assert sorted(d for op, d in solver.calls if op == "present") == sorted(names)
    assert sorted(d for op, d in solver.calls if op == "cleanup") == sorted(names)
    assert _challenge_files(webroot) == []
    assert format(leaf.serial_number, "x") in pebble.issued_serials()


def test_issuer_block_accepts_the_webroot_solver(http_stack, webroot, tmp_path):
    pebble, _, _ = http_stack
    issuer = AcmeIssuer(
        directory_url=pebble.directory_url,
        ca_bundle=str(pebble.ca_cert_path),
        account_key_path=str(tmp_path / "account.pem"),
        solver=WebrootSolver(webroot=str(webroot)),
    )
    assert isinstance(issuer.solver, WebrootSolver)
    issuer.issue(_request(*_names()))
    assert _challenge_files(webroot) == []


def test_wrong_content_fails_validation_with_the_cas_reason(http_stack, webroot):
    pebble, _, _ = http_stack

    class Wrong(Recording):
        def present_http(self, domain, token, key_authorization):
            super().present_http(domain, token, "not-the-key-authorization")

    client = AcmeClient(pebble.directory_url, generate_account_key(), verify=str(pebble.ca_cert_path))
    solver = Wrong(WebrootSolver(webroot=str(webroot)))
    domain = f"{uuid.uuid4().hex[:10]}.test"
    with pytest.raises(AcmeError) as info:
        client.issue(_request(domain), solver)
    assert info.value.transient is False
    assert "validation of" in str(info.value) and info.value.detail
    # what rate-limit bookkeeping needs: which identifier failed, and that an order was placed
    assert info.value.identifier == domain
    assert info.value.order_url and info.value.order_url.startswith("https://127.0.0.1:")
    assert _challenge_files(webroot) == []


def test_wildcard_is_refused_for_an_http_only_solver(http_stack, webroot):
    pebble, _, _ = http_stack
    client = AcmeClient(pebble.directory_url, generate_account_key(), verify=str(pebble.ca_cert_path))
    base = f"{uuid.uuid4().hex[:10]}.test"
    with pytest.raises(AcmeError, match=r"no http-01 challenge for \*\."):
        client.issue(_request(base, f"*.{base}"), WebrootSolver(webroot=str(webroot)))
    assert _challenge_files(webroot) == []


def test_a_token_that_escapes_the_webroot_is_refused(webroot):
    solver = WebrootSolver(webroot=str(webroot))
    with pytest.raises(WebrootError, match=r"^webroot solver '.*': refusing token"):
        solver.present_http("a.test", "../../etc/passwd", "x")


def test_unwritable_webroot_names_the_solver(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    solver = WebrootSolver(webroot=str(blocker))
    with pytest.raises(WebrootError, match=rf"^webroot solver '{blocker}': cannot write"):
        solver.present_http("a.test", "tok", "tok.x")


def test_a_solver_of_no_known_kind_is_refused_before_any_order(pebble):
    client = AcmeClient(pebble.directory_url, generate_account_key(), verify=str(pebble.ca_cert_path))
    with pytest.raises(AcmeError, match="neither present/cleanup"):
        client.issue(_request("x.test"), object())
    assert client.account_url is None, "nothing was sent to the CA"
