"""The S3 store against a real moto server over HTTP; objects are read back with plain boto3."""

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
from certfleet.blocks.stores.s3 import S3Store
from certfleet import localca
from certfleet_dev.ports import free_port
from certfleet.store import CertificateStore, LockTimeout, StoreError
from certfleet.store_s3 import S3CertificateStore

pytestmark = pytest.mark.services

BUCKET, PREFIX = "certfleet-store", "teams/web/"
ENC_KEY = os.urandom(32)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return localca.LocalCA.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def s3(moto_server):
    """A plain boto3 client on an empty account with one bucket."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", data=b"", method="POST")).read()
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    return client


def block(moto_server, **kw) -> S3Store:
    creds = AwsCredentials(region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key=SecretStr("testing"), endpoint_url=moto_server)
    return S3Store(bucket=BUCKET, prefix=PREFIX, credentials=creds, **kw)


def keys_under(s3, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def test_encrypted_versions_with_sse_on_every_object(s3, moto_server, ca):
    store = block(moto_server, encryption_keys=SecretStr(base64.b64encode(ENC_KEY).decode()))
    assert isinstance(store, CertificateStore)
    chain, key = ca.issue(["shop.test"])
    v = store.put("shop", chain, key, issuer="local")
    base = f"{PREFIX}shop/versions/{v.serial}/"
    assert keys_under(s3, PREFIX) == sorted([f"{PREFIX}shop/current", base + "fullchain.pem", base + "key.pem.enc", base + "meta.json"])
    for k in keys_under(s3, PREFIX):
        assert s3.head_object(Bucket=BUCKET, Key=k)["ServerSideEncryption"] == "AES256", k
    sealed = s3.get_object(Bucket=BUCKET, Key=base + "key.pem.enc")["Body"].read()
    key_lines = [ln for ln in key.splitlines() if ln and not ln.startswith(b"-----")]
    assert b"PRIVATE KEY" not in sealed and not any(ln in sealed for ln in key_lines)
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}shop/current")["Body"].read() == v.serial.encode()
    assert store.current("shop").serial == v.serial and store.names() == ["shop"]
    assert store.load_key("shop", v.serial) == key
    assert store.load_fullchain("shop", v.serial).count(b"BEGIN CERTIFICATE") == 2
    assert store.put("shop", chain, key).serial == v.serial  # idempotent: nothing rewritten
    with pytest.raises(StoreError, match=rf"s3 store 's3://{BUCKET}/{PREFIX}': certificate 'shop' serial {v.serial}: cannot decrypt"):
        block(moto_server, encryption_keys=SecretStr(base64.b64encode(os.urandom(32)).decode())).load_key("shop", v.serial)


def test_plain_key_object_and_kms_encryption(s3, moto_server, ca):
    kms = boto3.client("kms", endpoint_url=moto_server, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    kms_key = kms.create_key()["KeyMetadata"]["Arn"]
    store = block(moto_server, server_side_encryption="aws:kms", kms_key_id=kms_key)
    chain, key = ca.issue(["shop.test"])
    v = store.put("shop", chain, key)
    head = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}shop/versions/{v.serial}/key.pem")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == kms_key
    assert store.load_key("shop", v.serial) == key


def test_versions_kept_pruned_and_restored(s3, moto_server, ca):
    store = S3CertificateStore(s3, BUCKET, PREFIX, keep_versions=2)
    v1, v2, v3 = [store.put("shop", *ca.issue(["shop.test"])) for _ in range(3)]
    assert [v.serial for v in store.versions("shop")] == [v2.serial, v3.serial]
    assert keys_under(s3, f"{PREFIX}shop/versions/{v1.serial}/") == []
    assert store.restore_previous("shop").serial == v2.serial
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}shop/current")["Body"].read() == v2.serial.encode()
    with pytest.raises(StoreError, match=f"certificate 'shop' has no version with serial {v1.serial}"):
        store.set_current("shop", v1.serial)


def test_lock_is_exclusive_and_released(s3, moto_server):
    a, b = S3CertificateStore(s3, BUCKET, PREFIX), block(moto_server)
    with a.lock("shop"):
        body = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}shop/lock")["Body"].read())
        assert body["expires"] > time.time() + 1000
        assert s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}shop/lock")["ServerSideEncryption"] == "AES256"
        with pytest.raises(LockTimeout, match=f"s3 store 's3://{BUCKET}/{PREFIX}': certificate 'shop' is locked"):
            with b.lock("shop", timeout=0.3):
                pass
        with b.lock("blog", timeout=0.3):  # other certificates are not blocked
            pass
    assert keys_under(s3, f"{PREFIX}shop/lock") == []
    with b.lock("shop", timeout=1):
        pass


def test_stale_lock_is_broken_and_an_overrunning_holder_cannot_release_its_successor(s3, caplog):
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}shop/lock", Body=json.dumps({"owner": "crashed", "expires": time.time() - 1}))
    short = S3CertificateStore(s3, BUCKET, PREFIX, lock_ttl=0.2)
    with short.lock("shop", timeout=2):  # breaks the crashed run's lock
        time.sleep(0.3)  # overruns its own ttl, so a second run takes over
        cm = S3CertificateStore(s3, BUCKET, PREFIX).lock("shop", timeout=2)
        cm.__enter__()
    assert "taken over before release" in caplog.text
    assert keys_under(s3, f"{PREFIX}shop/lock") == [f"{PREFIX}shop/lock"]  # the successor's lock survived
    with pytest.raises(LockTimeout):
        with S3CertificateStore(s3, BUCKET, PREFIX).lock("shop", timeout=0.2):
            pass
    cm.__exit__(None, None, None)
    assert keys_under(s3, f"{PREFIX}shop/lock") == []


def test_aws_errors_name_the_store(s3, moto_server, ca):
    missing = S3CertificateStore(s3, "no-such-bucket", "x/")
    with pytest.raises(StoreError, match=r"s3 store 's3://no-such-bucket/x/': read x/shop/current: NoSuchBucket"):
        missing.current("shop")
    with pytest.raises(StoreError, match="has no version with serial abc") as not_there:
        block(moto_server).get("shop", "abc")
    assert not getattr(not_there.value, "transient", False)
    with pytest.raises(StoreError, match="invalid serial '../x'"):
        block(moto_server).get("shop", "../x")


def test_unreachable_endpoint_is_a_transient_error():
    from botocore.config import Config

    dead = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{free_port()}", region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    with pytest.raises(StoreError, match=r"s3 store 's3://b/': read shop/current: EndpointConnectionError") as exc:
        S3CertificateStore(dead, "b").current("shop")
    assert exc.value.transient is True
