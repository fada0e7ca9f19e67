"""The Secrets Manager store against a real moto server; secrets are read back with plain boto3."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request

import boto3
import pytest
from pydantic import SecretStr

from certfleet.blocks.aws import AwsCredentials
from certfleet.blocks.stores.secrets_manager import SecretsManagerStore
from certfleet import localca
from certfleet.store import CertificateStore, LockTimeout, StoreError
from certfleet.store_secrets_manager import SecretsManagerCertificateStore

pytestmark = pytest.mark.services

PREFIX = "certfleet/"
ENC_KEY = os.urandom(32)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return localca.LocalCA.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def sm(moto_server):
    """A plain boto3 client on an empty account."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", data=b"", method="POST")).read()
    return boto3.client("secretsmanager", endpoint_url=moto_server, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def block(moto_server, **kw) -> SecretsManagerStore:
    creds = AwsCredentials(region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key=SecretStr("testing"), endpoint_url=moto_server)
    return SecretsManagerStore(prefix=PREFIX, credentials=creds, **kw)


def current_value(sm, name: str = "shop") -> dict:
    """The AWSCURRENT value, as any AWS client reads it.

    VersionStage is explicit because moto 5.2 does not update its default version on
    UpdateSecretVersionStage (a GetSecretValue without it returns the stale version);
    AWS defaults to AWSCURRENT, which this names.
    """
    return json.loads(sm.get_secret_value(SecretId=PREFIX + name, VersionStage="AWSCURRENT")["SecretString"])


def test_encrypted_versions_current_is_awscurrent(sm, moto_server, ca):
    store = block(moto_server, encryption_keys=SecretStr(base64.b64encode(ENC_KEY).decode()))
    assert isinstance(store, CertificateStore)
    (c1, k1), (c2, k2) = ca.issue(["shop.test"]), ca.issue(["shop.test"])
    v1 = store.put("shop", c1, k1, issuer="local")
    v2 = store.put("shop", c2, k2, issuer="local")
    value = current_value(sm)  # what any AWS client reading the secret sees
    assert value["meta"]["info"]["serial"] == v2.serial and "key" not in value
    key_lines = [ln for ln in k2.decode().splitlines() if ln and not ln.startswith("-----")]
    assert "PRIVATE KEY" not in value["key_envelope"] and not any(ln in value["key_envelope"] for ln in key_lines)
    stages = sm.describe_secret(SecretId=PREFIX + "shop")["VersionIdsToStages"]
    assert sorted(map(sorted, stages.values())) == [["AWSCURRENT", f"serial-{v2.serial}"], ["AWSPREVIOUS", f"serial-{v1.serial}"]]
    assert [v.serial for v in store.versions("shop")] == [v1.serial, v2.serial]
    assert store.load_key("shop", v1.serial) == k1 and store.load_key("shop", v2.serial) == k2
    assert store.load_fullchain("shop", v2.serial).count(b"BEGIN CERTIFICATE") == 2
    assert store.names() == ["shop"]
    assert store.put("shop", c2, k2).serial == v2.serial  # idempotent
    assert len(sm.list_secret_version_ids(SecretId=PREFIX + "shop")["Versions"]) == 2
    with pytest.raises(StoreError, match=rf"secrets-manager store '{PREFIX}': certificate 'shop' serial {v2.serial}: .*no encryption key"):
        block(moto_server).load_key("shop", v2.serial)


def test_restore_staged_put_and_retention(sm, moto_server, ca):
    store = SecretsManagerCertificateStore(sm, PREFIX, keep_versions=2)
    v1, v2 = [store.put("shop", *ca.issue(["shop.test"])) for _ in range(2)]
    assert store.restore_previous("shop").serial == v1.serial
    assert current_value(sm)["meta"]["info"]["serial"] == v1.serial
    v3 = store.put("shop", *ca.issue(["shop.test"]), make_current=False)
    assert store.current("shop").serial == v1.serial
    assert [v.serial for v in store.versions("shop")] == [v1.serial, v3.serial]  # v2 lost its label
    with pytest.raises(StoreError, match=f"no version with serial {v2.serial}"):
        store.get("shop", v2.serial)
    store.set_current("shop", v3.serial)
    assert current_value(sm)["meta"]["info"]["serial"] == v3.serial
    assert store.load_key("shop", v1.serial).startswith(b"-----BEGIN")


def test_lock_is_exclusive_and_stale_locks_are_broken(sm, moto_server, caplog):
    a, b = SecretsManagerCertificateStore(sm, PREFIX), block(moto_server)
    with a.lock("shop"):
        with pytest.raises(LockTimeout, match=f"secrets-manager store '{PREFIX}': certificate 'shop' is locked"):
            with b.lock("shop", timeout=0.3):
                pass
    with b.lock("shop", timeout=1):  # released: free again
        pass
    short = SecretsManagerCertificateStore(sm, PREFIX, lock_ttl=0.2)
    with short.lock("shop"):
        time.sleep(0.3)  # overruns its ttl: a second run may take over
        successor = a.lock("shop", timeout=2)
        successor.__enter__()
    assert "taken over before release" in caplog.text
    with pytest.raises(LockTimeout):  # the overrunning holder did not release its successor's lock
        with b.lock("shop", timeout=0.2):
            pass
    successor.__exit__(None, None, None)
    with b.lock("shop", timeout=1):
        pass
    assert a.names() == []  # only the lock secret exists, and it is no certificate


def test_errors_name_the_store(sm, moto_server):
    with pytest.raises(StoreError, match="at most 18"):
        SecretsManagerCertificateStore(sm, PREFIX, keep_versions=50)
    assert block(moto_server).current("nothing") is None
    with pytest.raises(StoreError, match=f"secrets-manager store '{PREFIX}': certificate 'shop' has no version with serial ab"):
        block(moto_server).get("shop", "ab")
    sm.create_secret(Name=PREFIX + "alien", SecretString="hello")
    with pytest.raises(StoreError, match="is not a certfleet store version"):
        block(moto_server).current("alien")
