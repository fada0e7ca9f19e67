"""S3 target against a real moto server over HTTP; objects are read back with a plain boto3 client.

Run alone with ``pytest -p tests.plugins.moto tests/test_target_s3.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import PrivateAttr

from certfleet.blocks.aws import AwsCredentials
from certfleet.blocks.targets.file import TargetError
from certfleet.blocks.targets.s3 import S3Target
from certfleet import pki
from certfleet.contracts import DeployBundle

pytestmark = pytest.mark.services

PREFIX = "certs/www/"


def _bundle(ca, name: str = "www") -> DeployBundle:
    chain, key = ca.issue([f"{name}.example.test"])
    return DeployBundle(name, pki.serial_hex(pki.load_certs(chain)[0]), chain, key)


def _key_lines(bundle: DeployBundle) -> list[str]:
    """The base64 lines of the key: none may appear in a message or a repr."""
    return [line for line in bundle.key_pem.decode().splitlines() if line and not line.startswith("-----")]


def _assert_no_key(text: str, bundle: DeployBundle) -> None:
    assert "PRIVATE KEY" not in text
    assert not any(line in text for line in _key_lines(bundle))


def _object(aws, bucket: str, name: str) -> tuple[bytes, dict]:
    obj = aws.client("s3").get_object(Bucket=bucket, Key=PREFIX + name)
    return obj["Body"].read(), obj


def _serial(pem: bytes) -> str:
    return pki.serial_hex(pki.order_chain(pki.load_certs(pem))[0])


def test_deploy_writes_key_and_chain_with_sse_and_metadata(aws, s3_bucket, local_ca):
    target = S3Target(bucket=s3_bucket, key_prefix=PREFIX, credentials=aws.credentials())
    bundle = _bundle(local_ca)
    assert target.current() is None

    receipt = target.deploy(bundle)

    fullchain, obj = _object(aws, s3_bucket, "fullchain.pem")
    assert _serial(fullchain) == bundle.serial and len(pki.load_certs(fullchain)) == 2
    assert obj["ServerSideEncryption"] == "AES256"
    assert obj["Metadata"]["serial"] == bundle.serial and obj["Metadata"]["certificate"] == "www"
    assert obj["Metadata"]["not-after"].endswith("Z")
    key, key_obj = _object(aws, s3_bucket, "privkey.pem")
    assert key == bundle.key_pem and key_obj["ServerSideEncryption"] == "AES256"
    assert target.current() == bundle.serial
    assert receipt.serial == bundle.serial and receipt.target == f"s3://{s3_bucket}/{PREFIX}"
    _assert_no_key(repr(receipt) + repr(target), bundle)


def test_key_is_written_before_the_chain(aws, s3_bucket, local_ca):
    puts: list[str] = []
    target = S3Target(bucket=s3_bucket, key_prefix=PREFIX, split_files=True,
                      credentials=_Hooked.of(aws, on_put=lambda key: puts.append(key.removeprefix(PREFIX))))
    target.deploy(_bundle(local_ca))
    assert puts == ["privkey.pem", "cert.pem", "chain.pem", "fullchain.pem"]


def test_split_files_without_key(aws, s3_bucket, local_ca):
    target = S3Target(bucket=s3_bucket, key_prefix=PREFIX, include_key=False, split_files=True,
                      credentials=aws.credentials())
    bundle = _bundle(local_ca)
    target.deploy(bundle)
    cert, _ = _object(aws, s3_bucket, "cert.pem")
    chain, _ = _object(aws, s3_bucket, "chain.pem")
    assert [pki.serial_hex(c) for c in pki.load_certs(cert)] == [bundle.serial]
    assert pki.load_certs(chain)[0].subject == local_ca.inter_cert.subject
    listed = aws.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert not any(o["Key"].endswith("privkey.pem") for o in listed)


def test_kms_encryption_names_the_key(aws, s3_bucket, local_ca):
    key_id = aws.client("kms").create_key()["KeyMetadata"]["KeyId"]
    target = S3Target(bucket=s3_bucket, key_prefix=PREFIX, server_side_encryption="aws:kms",
                      kms_key_id=key_id, credentials=aws.credentials())
    target.deploy(_bundle(local_ca))
    _, obj = _object(aws, s3_bucket, "privkey.pem")
    assert obj["ServerSideEncryption"] == "aws:kms"
    assert obj["SSEKMSKeyId"].endswith(key_id)


def test_kms_key_without_kms_is_refused():
    with pytest.raises(ValueError, match="kms_key_id"):
        S3Target(bucket="b", kms_key_id="abc")


def test_rollback_restores_previous_serial_and_key(aws, s3_bucket, local_ca):
    target = S3Target(bucket=s3_bucket, key_prefix=PREFIX, credentials=aws.credentials())
    first, second = _bundle(local_ca), _bundle(local_ca)
    target.deploy(first)
    target.deploy(second)
    target.deploy(second)  # a redeploy of the same serial must not overwrite the backup of `first`
    assert target.current() == second.serial

    assert target.rollback() == first.serial

    fullchain, obj = _object(aws, s3_bucket, "fullchain.pem")
    assert _serial(fullchain) == first.serial and obj["ServerSideEncryption"] == "AES256"
    assert _object(aws, s3_bucket, "privkey.pem")[0] == first.key_pem


def test_failed_chain_write_puts_previous_objects_back(aws, s3_bucket, local_ca):
    first, second = _bundle(local_ca), _bundle(local_ca)
    S3Target(bucket=s3_bucket, key_prefix=PREFIX, credentials=aws.credentials()).deploy(first)
    failing = S3Target(bucket=s3_bucket, key_prefix=PREFIX,
                       credentials=_Hooked.of(aws, fail_on="fullchain.pem"))

    with pytest.raises(TargetError, match="write fullchain.pem: InternalError") as err:
        failing.deploy(second)

    _assert_no_key(str(err.value), second)
    assert _serial(_object(aws, s3_bucket, "fullchain.pem")[0]) == first.serial
    assert _object(aws, s3_bucket, "privkey.pem")[0] == first.key_pem


def test_rollback_without_backup_is_a_clear_error(aws, s3_bucket, local_ca):
    target = S3Target(bucket=s3_bucket, key_prefix=PREFIX, credentials=aws.credentials())
    target.deploy(_bundle(local_ca))
    with pytest.raises(TargetError, match=rf"s3 target 's3://{s3_bucket}/{PREFIX}': no previous certificate"):
        target.rollback()


def test_missing_bucket_names_target_and_code(aws, local_ca):
    target = S3Target(bucket="no-such-bucket", key_prefix=PREFIX, credentials=aws.credentials())
    bundle = _bundle(local_ca)
    with pytest.raises(TargetError) as err:
        target.deploy(bundle)
    assert str(err.value).startswith(f"s3 target 's3://no-such-bucket/{PREFIX}': ")
    assert "NoSuchBucket" in str(err.value)
    _assert_no_key(str(err.value) + repr(err.value), bundle)


def test_access_denied_names_target_and_code(aws, s3_bucket, local_ca, aws_denied):
    target = S3Target(bucket=s3_bucket, key_prefix=PREFIX, credentials=aws_denied)
    bundle = _bundle(local_ca)
    with pytest.raises(TargetError, match=rf"^s3 target 's3://{s3_bucket}/{PREFIX}': read .*: AccessDenied"):
        target.current()
    with pytest.raises(TargetError, match="AccessDenied") as err:
        target.deploy(bundle)
    _assert_no_key(str(err.value), bundle)
    assert "SecretStr('**********')" in repr(target) and aws_denied.aws_secret_access_key.get_secret_value() not in repr(target)


class _Hooked(AwsCredentials):
    """Credentials whose S3 clients report each PutObject key, or fail one named object.

    The failure is injected in botocore's ``before-call`` hook: the request never leaves,
    and the client raises the ClientError a 500 from S3 would give.
    """

    _block_type_slug = "certfleet-test-hooked-aws-credentials"
    _on_put: Callable[[str], None] | None = PrivateAttr(None)
    _fail_on: str | None = PrivateAttr(None)

    @classmethod
    def of(cls, aws, on_put=None, fail_on: str | None = None) -> "_Hooked":
        creds = cls(**aws.credentials().model_dump(exclude={"block_type_slug"}))
        creds._on_put, creds._fail_on = on_put, fail_on
        return creds

    def get_client(self, service: str):
        client = super().get_client(service)
        client.meta.events.register("before-parameter-build.s3.PutObject", self._remember_key)
        client.meta.events.register("before-call.s3.PutObject", self._before_put)
        return client

    def _remember_key(self, params, context, **_):
        context["test_key"] = params["Key"]

    def _before_put(self, context, **_):
        key = context["test_key"]
        if self._on_put:
            self._on_put(key)
        if self._fail_on and key.endswith(self._fail_on):
            return _Response(500), {"Error": {"Code": "InternalError", "Message": "injected"},
                                    "ResponseMetadata": {"HTTPStatusCode": 500}}
        return None


class _Response:
    def __init__(self, status_code: int):
        self.status_code, self.headers, self.content = status_code, {}, b""
