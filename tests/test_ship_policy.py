"""One "safe to ship?" chain (certfleet.policy.safe_to_ship) for import, renewal's store
check and distribution preflight. Every refusal: exit 2 (CLI) or PreflightError, one
line naming the file and the reason, no traceback, no key text, nothing written.
"""

from __future__ import annotations

import hashlib
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from certfleet import distribution, keys, pki, policy
from certfleet.blocks.targets.file import FileTarget
from certfleet.cli import main
from certfleet.store import LocalStore


def _inventory(tmp_path: Path, local_ca, domains: str = "[shop.test, www.shop.test]", trust: bool = True) -> Path:
    (tmp_path / "roots.pem").write_bytes(local_ca.root_pem)
    inv = tmp_path / "inventory.yaml"
    inv.write_text(textwrap.dedent(f"""\
        store: {{path: store}}
        {"trust_bundle: roots.pem" if trust else ""}
        issuers:
          internal: {{kind: local-ca, directory: {local_ca.directory}}}
        certificates:
          - {{name: shop, domains: {domains}, issuer: internal}}
        """))
    return inv


def _write(tmp_path: Path, name: str, chain: bytes, key: bytes) -> tuple[Path, Path]:
    d = tmp_path / "in"
    d.mkdir(exist_ok=True)
    c, k = d / f"{name}.pem", d / f"{name}.key"
    c.write_bytes(chain)
    k.write_bytes(key)
    k.chmod(0o600)
    return c, k


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def _refused_import(tmp_path, capsys, cert: Path, key: Path, reason: str) -> str:
    inv = tmp_path / "inventory.yaml"
    before = _tree(tmp_path / "store")
    rc = main(["import", "-i", str(inv), "--name", "shop", "--cert", str(cert), "--key", str(key)])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == 2, captured
    assert len(lines) == 1, lines  # one line: no traceback
    assert reason in lines[0] and "nothing written" in lines[0], lines[0]
    assert "Traceback" not in captured.err and "PRIVATE KEY" not in captured.err + captured.out
    assert _tree(tmp_path / "store") == before
    assert LocalStore(tmp_path / "store").versions("shop") == []
    return lines[0]


def test_import_refuses_a_not_yet_valid_certificate(tmp_path, local_ca, capsys):
    _inventory(tmp_path, local_ca)
    now = datetime.now(timezone.utc)
    chain, key = local_ca.issue(["shop.test", "www.shop.test"], not_before=now + timedelta(days=1),
                                not_after=now + timedelta(days=91))
    cert, keyf = _write(tmp_path, "shop", chain, key)
    line = _refused_import(tmp_path, capsys, cert, keyf, "NOT_YET_VALID")
    assert str(cert) in line


def test_import_refuses_a_chain_missing_its_intermediate(tmp_path, local_ca, capsys):
    _inventory(tmp_path, local_ca)
    chain, key = local_ca.issue(["shop.test", "www.shop.test"], with_intermediate=False)
    cert, keyf = _write(tmp_path, "shop", chain, key)
    line = _refused_import(tmp_path, capsys, cert, keyf, "INCOMPLETE_CHAIN")
    assert str(cert) in line


def test_import_refuses_a_1024_bit_rsa_key(tmp_path, local_ca, capsys):
    _inventory(tmp_path, local_ca)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    chain = local_ca._sign(weak.public_key(), ["shop.test", "www.shop.test"], None, None, True)
    cert, keyf = _write(tmp_path, "shop", chain, keys.key_to_pem(weak))
    line = _refused_import(tmp_path, capsys, cert, keyf, "WEAK_KEY")
    assert "rsa-1024" in line and str(cert) in line


def test_import_refuses_a_key_that_does_not_match(tmp_path, local_ca, capsys):
    _inventory(tmp_path, local_ca)
    chain, _ = local_ca.issue(["shop.test", "www.shop.test"])
    _, other_key = local_ca.issue(["shop.test", "www.shop.test"])
    cert, keyf = _write(tmp_path, "shop", chain, other_key)
    line = _refused_import(tmp_path, capsys, cert, keyf, "KEY_MISMATCH")
    assert str(keyf) in line


def test_import_refuses_a_wildcard_under_a_public_suffix(tmp_path, local_ca, capsys):
    _inventory(tmp_path, local_ca, domains="[shop.test]")
    chain, key = local_ca.issue(["shop.test", "*.test"])
    cert, keyf = _write(tmp_path, "shop", chain, key)
    _refused_import(tmp_path, capsys, cert, keyf, "WILDCARD_PUBLIC_SUFFIX")


def test_import_without_trust_bundle_validates_to_the_system_store(tmp_path, local_ca, capsys):
    _inventory(tmp_path, local_ca, trust=False)
    chain, key = local_ca.issue(["shop.test", "www.shop.test"])
    cert, keyf = _write(tmp_path, "shop", chain, key)
    line = _refused_import(tmp_path, capsys, cert, keyf, "this machine's trust store")
    assert "UNTRUSTED_CHAIN" in line or "INCOMPLETE_CHAIN" in line


def test_import_accepts_a_good_pair(tmp_path, local_ca, capsys):
    _inventory(tmp_path, local_ca)
    chain, key = local_ca.issue(["shop.test", "www.shop.test"])
    cert, keyf = _write(tmp_path, "shop", chain, key)
    rc = main(["import", "-i", str(tmp_path / "inventory.yaml"), "--name", "shop", "--cert", str(cert), "--key", str(keyf)])
    assert rc == 0, capsys.readouterr().err
    assert LocalStore(tmp_path / "store").current("shop").serial == pki.serial_hex(pki.load_certs(chain)[0])


@pytest.mark.parametrize("domain, reason", [
    ("shop.test.", "ends with a dot"),
    ("192.0.2.10", "is an IP address"),
    ("*.co.uk", "wildcard directly under the public suffix 'co.uk'"),
    ("*.com", "wildcard directly under the public suffix 'com'"),
])
def test_validate_refuses_bad_names(tmp_path, local_ca, capsys, domain, reason):
    inv = _inventory(tmp_path, local_ca, domains=f"['{domain}']")
    rc = main(["validate", "-i", str(inv)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, lines
    assert "certificates[0].domains[0]" in lines[0] and reason in lines[0]


# -- preflight: the same chain, before any target byte is written ----------------------

def _deploy(tmp_path, local_ca, chain: bytes, key: bytes, roots):
    store = LocalStore(tmp_path / "store")
    version = store.put("shop", chain, key)
    live = tmp_path / "live"
    live.mkdir(exist_ok=True)
    good_chain, good_key = local_ca.issue(["shop.test"])
    (live / "shop.pem").write_bytes(good_chain)
    (live / "shop.key").write_bytes(good_key)
    before = _tree(live)
    target = FileTarget(fullchain_path=str(live / "shop.pem"), key_path=str(live / "shop.key"))
    with pytest.raises(distribution.PreflightError) as err:
        distribution.deploy("shop", version.serial, "web-1", target, store, hostnames=("shop.test",), roots=roots)
    assert _tree(live) == before  # the target's files are untouched
    assert "PRIVATE KEY" not in str(err.value) and "\n" not in str(err.value)
    return err.value


def test_preflight_with_trust_bundle_refuses_an_expired_certificate(tmp_path, local_ca):
    now = datetime.now(timezone.utc)
    chain, key = local_ca.issue(["shop.test"], not_before=now - timedelta(days=90), not_after=now - timedelta(days=1))
    err = _deploy(tmp_path, local_ca, chain, key, [local_ca.root_cert])
    assert err.reason == "EXPIRED" and "target 'web-1'" in str(err)


def test_preflight_with_trust_bundle_refuses_an_incomplete_chain(tmp_path, local_ca):
    chain, key = local_ca.issue(["shop.test"], with_intermediate=False)
    err = _deploy(tmp_path, local_ca, chain, key, [local_ca.root_cert])
    assert err.reason == "INCOMPLETE_CHAIN"


def test_preflight_without_trust_bundle_validates_to_the_system_store(tmp_path, local_ca):
    # Before: with no trust_bundle, preflight checked dates only and shipped this chain.
    chain, key = local_ca.issue(["shop.test"])
    err = _deploy(tmp_path, local_ca, chain, key, None)
    assert err.reason in ("UNTRUSTED_CHAIN", "INCOMPLETE_CHAIN") and "trust store" in str(err)


def test_one_chain_serves_import_renewal_and_preflight():
    import inspect

    from certfleet import renewal
    from certfleet.cli import adopt

    assert "safe_to_ship" in inspect.getsource(adopt._check_adoption)
    assert "safe_to_ship" in inspect.getsource(renewal.issue_version)
    assert "safe_to_ship" in inspect.getsource(distribution._preflight)
    names = [c.__name__ for c in policy.SHIP_CHECKS]
    for needed in ("_key_matches", "_key_strength", "_validity_window", "_chain_valid", "_covers", "_names_valid"):
        assert needed in names


def test_renewal_store_check_refuses_what_the_chain_refuses(tmp_path, local_ca):
    """Renewal stores nothing the chain refuses: here a CA answer that is not yet valid."""
    from cryptography import x509

    from certfleet import renewal
    from certfleet.contracts import Issued
    from certfleet.inventory import CertificateSpec

    class FutureCA:  # a real local CA that dates its certificates tomorrow
        def issue(self, request):
            now = datetime.now(timezone.utc)
            csr = x509.load_pem_x509_csr(request.csr_pem)
            chain = local_ca._sign(csr.public_key(), list(request.domains), now + timedelta(days=1),
                                   now + timedelta(days=91), True)
            return Issued(fullchain_pem=chain, issuer_name="future")

    spec = CertificateSpec(name="shop", domains=["shop.test"], issuer="future")
    store = LocalStore(tmp_path / "store")
    with pytest.raises(renewal.RenewalError) as err:
        with store.lock("shop"):
            renewal.issue_version(spec, store, FutureCA(), issuer_name="future", why="test")
    assert "NOT_YET_VALID" in str(err.value) and "nothing stored" in str(err.value)
    assert store.versions("shop") == [] and store.current("shop") is None
