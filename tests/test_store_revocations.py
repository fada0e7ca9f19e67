"""Revocation records, the same contract on every store backend.

The local directory store, the S3 store and the Secrets Manager store (both on a real
moto server) record ``serial -> {reason, at}``; a restore or ``set_current`` of a
revoked serial is refused, so a rollback never brings a revoked certificate back.
"""

from __future__ import annotations

import threading
import urllib.request

import boto3
import pytest

from certfleet import localca
from certfleet.store import CertificateStore, LocalStore, RevokedError
from certfleet.store_s3 import S3CertificateStore
from certfleet.store_secrets_manager import SecretsManagerCertificateStore


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return localca.LocalCA.create(tmp_path_factory.mktemp("ca"))


def _client(moto_server, service):
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", data=b"", method="POST")).read()
    return boto3.client(service, endpoint_url=moto_server, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(params=["local", "s3", "secrets-manager"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    moto_server = request.getfixturevalue("moto_server")
    if request.param == "s3":
        client = _client(moto_server, "s3")
        client.create_bucket(Bucket="certfleet-store")
        return S3CertificateStore(client, "certfleet-store", "teams/web/")
    return SecretsManagerCertificateStore(_client(moto_server, "secretsmanager"), "certfleet/")


@pytest.mark.services
def test_revoked_serial_is_recorded_and_never_made_current_again(store, ca):
    assert isinstance(store, CertificateStore)
    (c1, k1), (c2, k2) = ca.issue(["shop.test"]), ca.issue(["shop.test"])
    v1 = store.put("shop", c1, k1)
    v2 = store.put("shop", c2, k2)
    assert store.revocations("shop") == {}

    store.record_revocation("shop", v1.serial, "keyCompromise")
    store.record_revocation("shop", v1.serial, "superseded")  # idempotent: the first record stays
    revoked = store.revocations("shop")
    assert list(revoked) == [v1.serial]
    assert revoked[v1.serial]["reason"] == "keyCompromise" and revoked[v1.serial]["at"].startswith("20")

    # The version before the current one is revoked: restoring it is refused, and says why.
    with pytest.raises(RevokedError, match=rf"certificate 'shop' serial {v1.serial} was revoked \(keyCompromise"):
        store.restore_previous("shop")
    with pytest.raises(RevokedError, match=v1.serial):
        store.set_current("shop", v1.serial)
    assert store.current("shop").serial == v2.serial  # nothing moved
    store.set_current("shop", v2.serial)  # a serial that is not revoked still can


@pytest.mark.services
def test_concurrent_records_all_land(store, ca):
    serials = [f"{i:02x}" * 8 for i in range(8)]
    barrier = threading.Barrier(len(serials))
    errors = []

    def record(serial):
        barrier.wait()
        try:
            store.record_revocation("shop", serial, "keyCompromise")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(s,)) for s in serials]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(store.revocations("shop")) == sorted(serials)
