"""Unit tests of the Prefect-free core: x509 helpers, the store, the renewal policy."""

from datetime import datetime, timedelta, timezone

import pytest

from certfleet import keys, localca, pki, policy
from certfleet.models import CertificateInfo
from certfleet.store import LocalStore, StoreError


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return localca.LocalCA.create(tmp_path_factory.mktemp("ca"))


def test_bundle_in_any_order_is_ordered_leaf_first(ca):
    chain, _ = ca.issue(["shop.test"])
    certs = pki.load_certs(chain)
    shuffled = [certs[1], pki.load_certs(ca.root_pem)[0], certs[0]]
    ordered = pki.order_chain(shuffled)
    assert ordered[0].subject.rfc4514_string() == "CN=shop.test"
    assert [c.subject for c in ordered[1:]] == [ca.inter_cert.subject, ca.root_cert.subject]


def test_leaf_is_the_leaf_order_chain_finds(ca):
    chain, _ = ca.issue(["shop.test"])
    certs = pki.load_certs(chain)
    root = pki.load_certs(ca.root_pem)[0]
    for bundle in ([certs[1], root, certs[0]], [certs[0]], [root, certs[0], certs[0]]):
        assert pki.serial_hex(pki.leaf(bundle)) == pki.serial_hex(pki.order_chain(bundle)[0]) == pki.serial_hex(certs[0])
    other = pki.load_certs(ca.issue(["other.test"])[0])[0]
    with pytest.raises(pki.PemError, match="2 leaf certificates"):
        pki.leaf([certs[0], other, certs[1]])  # two end-entity certificates: no single answer
    with pytest.raises(pki.PemError, match="no certificate"):
        pki.leaf([])


def test_malformed_pem_is_a_clear_error():
    with pytest.raises(pki.PemError, match="not a valid certificate"):
        pki.load_certs(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(pki.PemError, match="no PEM"):
        pki.split_bundle(b"hello")


def test_key_matches(ca):
    chain, key = ca.issue(["shop.test"])
    _, other = ca.issue(["shop.test"])
    leaf = pki.load_certs(chain)[0]
    assert pki.key_matches(leaf, pki.load_private_key(key))
    assert not pki.key_matches(leaf, pki.load_private_key(other))


@pytest.mark.parametrize(
    "sans,host,ok",
    [
        (("*.shop.test",), "a.shop.test", True),
        (("*.shop.test",), "shop.test", False),
        (("*.shop.test",), "a.b.shop.test", False),
        (("shop.test",), "SHOP.test.", True),
        (("127.0.0.1",), "127.0.0.1", True),
    ],
)
def test_san_coverage_with_wildcards(sans, host, ok):
    assert pki.san_covers(sans, host) is ok


def test_verify_chain_reasons(ca):
    chain, _ = ca.issue(["shop.test"])
    leaf, inter = pki.load_certs(chain)
    roots = pki.load_certs(ca.root_pem)
    assert pki.verify_chain(leaf, [inter], roots, "shop.test").reason == "OK"
    assert pki.verify_chain(leaf, [], roots, "shop.test").reason == "INCOMPLETE_CHAIN"
    assert pki.verify_chain(leaf, [inter], roots, "other.test").reason == "HOSTNAME_MISMATCH"
    later = datetime.now(timezone.utc) + timedelta(days=365)
    assert pki.verify_chain(leaf, [inter], roots, "shop.test", at=later).reason == "EXPIRED"
    other_ca = localca.LocalCA.create(ca.directory / "other")
    assert pki.verify_chain(leaf, [inter], pki.load_certs(other_ca.root_pem), "shop.test").reason in {"INCOMPLETE_CHAIN", "UNTRUSTED_CHAIN"}
    ss, _ = localca.self_signed(["shop.test"])
    assert pki.verify_chain(pki.load_certs(ss)[0], [], roots, "shop.test").reason == "SELF_SIGNED"


@pytest.mark.parametrize("kt", ["ec-p256", "ec-p384", "rsa-2048"])
def test_key_types(kt, ca):
    key = keys.generate_key(kt)
    assert pki.key_type_of(key) == kt
    chain = ca.sign_csr(keys.make_csr(key, ["a.test", "b.test"]))
    assert pki.describe(pki.load_certs(chain)[0]).sans == ("a.test", "b.test")


def test_store_versions_current_and_restore(tmp_path, ca):
    store = LocalStore(tmp_path / "store")
    c1, k1 = ca.issue(["shop.test"])
    c2, k2 = ca.issue(["shop.test"])
    v1 = store.put("shop", c1, k1, issuer="local")
    v2 = store.put("shop", c2, k2, issuer="local")
    assert store.current("shop").serial == v2.serial
    assert [v.serial for v in store.versions("shop")] == [v1.serial, v2.serial]
    key_file = v2.path / "key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert store.restore_previous("shop").serial == v1.serial
    assert store.current("shop").serial == v1.serial


def test_store_refuses_key_that_does_not_match(tmp_path, ca):
    store = LocalStore(tmp_path / "store")
    c1, k1 = ca.issue(["shop.test"])
    good = store.put("shop", c1, k1)
    c2, _ = ca.issue(["shop.test"])
    with pytest.raises(StoreError, match="does not match"):
        store.put("shop", c2, k1)
    assert store.current("shop").serial == good.serial
    assert len(store.versions("shop")) == 1


def test_store_lock_is_exclusive(tmp_path):
    from certfleet.store import LockTimeout

    store = LocalStore(tmp_path)
    with store.lock("shop"):
        with pytest.raises(LockTimeout):
            with LocalStore(tmp_path).lock("shop", timeout=0.2):
                pass


def _info(days_total: float, days_left: float, now: datetime) -> CertificateInfo:
    na = now + timedelta(days=days_left)
    return CertificateInfo("ab", "f", "CN=x", "CN=ca", ("x.test",), na - timedelta(days=days_total), na, "ec-p256", "p")


def test_renewal_window_thirds_and_halves():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert policy.renewal_due(_info(90, 31, now), now).ok
    assert policy.renewal_due(_info(90, 29, now), now).reason == "DUE"
    assert policy.renewal_due(_info(6, 3.1, now), now).ok  # short-lived: half
    assert policy.renewal_due(_info(6, 2.9, now), now).reason == "DUE"
    assert policy.renewal_due(_info(90, 0.5, now), now).reason == "NEARLY_EXPIRED"
    assert policy.renewal_due(_info(90, -1, now), now).reason == "EXPIRED"


def test_ari_window_chosen_time_is_kept():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    info = _info(90, 60, now)
    window = policy.AriWindow(now + timedelta(days=1), now + timedelta(days=2))
    chosen = now + timedelta(days=1, hours=5)
    assert policy.renewal_time(info, window, chosen) == chosen
    assert window.start <= policy.renewal_time(info, window, None) <= window.end
    # ARI says "now": the window opened in the past
    past = policy.AriWindow(now - timedelta(hours=2), now - timedelta(hours=1))
    assert policy.renewal_due(info, now, past).reason == "DUE"
