"""Retention: the store keeps ``keep_versions`` versions, never dropping current or its predecessor."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from certfleet import localca
from certfleet.models import CertificateInfo
from certfleet.store import (
    DEFAULT_KEEP_VERSIONS,
    LocalStore,
    StoredVersion,
    StoreError,
    to_prune,
)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return localca.LocalCA.create(tmp_path_factory.mktemp("ca"))


def put_n(store, ca, n, **kw):
    return [store.put("shop", *ca.issue(["shop.test"]), **kw) for _ in range(n)]


def serials(store):
    return [v.serial for v in store.versions("shop")]


def test_oldest_versions_beyond_keep_are_pruned(tmp_path, ca):
    store = LocalStore(tmp_path, keep_versions=3)
    put = put_n(store, ca, 5)
    assert serials(store) == [v.serial for v in put[-3:]]
    assert store.current("shop").serial == put[-1].serial
    assert not put[0].path.exists()
    assert sorted(p.name for p in (tmp_path / "shop" / "versions").iterdir()) == sorted(serials(store))
    assert store.restore_previous("shop").serial == put[-2].serial


def test_current_and_its_predecessor_are_never_pruned(tmp_path, ca):
    store = LocalStore(tmp_path, keep_versions=2)
    v1, v2 = put_n(store, ca, 2)
    assert store.restore_previous("shop").serial == v1.serial  # current is now the oldest
    (v3,) = put_n(store, ca, 1, make_current=False)  # current v1, v3 just put: v2 is the only candidate
    assert serials(store) == [v1.serial, v3.serial]
    (v4,) = put_n(store, ca, 1)  # current v4, previous v3: v1 goes
    assert serials(store) == [v3.serial, v4.serial]


def test_staged_versions_do_not_push_out_current_or_rollback_target(tmp_path, ca):
    store = LocalStore(tmp_path, keep_versions=2)
    v1, v2 = put_n(store, ca, 2)
    v3, v4 = put_n(store, ca, 2, make_current=False)
    assert store.current("shop").serial == v2.serial
    assert serials(store) == [v1.serial, v2.serial, v4.serial]  # v3 was neither protected nor newest


def test_keep_all_and_minimum(tmp_path, ca):
    assert LocalStore(tmp_path).keep_versions == DEFAULT_KEEP_VERSIONS == 10
    store = LocalStore(tmp_path, keep_versions=None)
    put_n(store, ca, 4)
    assert len(store.versions("shop")) == 4
    with pytest.raises(StoreError, match="at least 2"):
        LocalStore(tmp_path, keep_versions=1)


def _v(serial: str, minutes: int) -> StoredVersion:
    t = datetime(2030, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=minutes)
    info = CertificateInfo(serial=serial, subject="CN=a", issuer="CN=ca", sans=("a",), not_before=t,
                           not_after=t + timedelta(days=90), key_type="ec-p256", fingerprint_sha256=serial,
                           public_key_sha256=serial)
    return StoredVersion(name="a", info=info, issuer="", stored_at=t, path=f"/v/{serial}")


def test_to_prune_is_a_pure_choice():
    vs = [_v(s, i) for i, s in enumerate("abcdef")]
    assert [v.serial for v in to_prune(vs, "f", 3)] == ["a", "b", "c"]
    assert [v.serial for v in to_prune(vs, "b", 3)] == ["c", "d", "e"]  # a (before b), b, and f (newest) left
    assert [v.serial for v in to_prune(vs, "f", 3, just_put="a")] == ["b", "c", "d"]
    assert to_prune(vs, "f", None) == [] and to_prune(vs, "f", 6) == []
