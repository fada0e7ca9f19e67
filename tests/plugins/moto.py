"""moto fixtures: one in-process moto server for S3, ACM, Secrets Manager, IAM, Route 53.

``moto_server`` starts ``ThreadedMotoServer`` once per session on a free loopback port
and yields its URL. ``aws`` resets moto's state (POST /moto-api/reset) so every test
starts from an empty account, and hands out clients and credential blocks. Credentials
are passed explicitly to boto3, never put in ``os.environ``, so nothing leaks into other
tests or into code that must use its own credential chain.
"""

from __future__ import annotations

import functools
import json
import urllib.request
from dataclasses import dataclass

import pytest

from certfleet_dev.ports import free_port

REGION = "us-east-1"
FAKE_KEY_ID = "testing"
FAKE_SECRET = "testing"


def _post(url: str, body: bytes = b"") -> dict:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"{}")


@functools.cache
def _plain_client(endpoint_url: str, region: str, service: str, key_id: str, secret: str):
    """Built once per session and service: a boto3 client costs ~0.4 s of model parsing."""
    import boto3

    session = boto3.Session(aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=region)
    return session.client(service, endpoint_url=endpoint_url)


@dataclass(frozen=True)
class MotoAccount:
    """The fake AWS account of one test: plain boto3 clients and certfleet credential blocks."""

    endpoint_url: str
    region_name: str = REGION

    def client(self, service: str, key_id: str = FAKE_KEY_ID, secret: str = FAKE_SECRET):
        """A plain boto3 client, independent of certfleet, for arranging and asserting."""
        return _plain_client(self.endpoint_url, self.region_name, service, key_id, secret)

    def credentials(self, key_id: str = FAKE_KEY_ID, secret: str = FAKE_SECRET):
        from certfleet.blocks.aws import AwsCredentials

        return AwsCredentials(region_name=self.region_name, aws_access_key_id=key_id,
                              aws_secret_access_key=secret, endpoint_url=self.endpoint_url)

    def reset(self) -> None:
        _post(f"{self.endpoint_url}/moto-api/reset")


@pytest.fixture(scope="session")
def moto_server():
    """URL of a moto server on loopback, started once, stopped at the end of the session."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server) -> MotoAccount:
    """An empty fake AWS account: moto's state is reset before the test."""
    account = MotoAccount(moto_server)
    account.reset()
    return account


@pytest.fixture
def s3_bucket(aws) -> str:
    """Name of an empty bucket in the test's account."""
    name = "certfleet-test"
    aws.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def aws_denied(aws):
    """Credentials of an IAM user with no policy, with moto's IAM checks switched on.

    moto enforces IAM only when asked (POST /moto-api/reset-auth with a request count);
    it is switched off again at teardown. While the fixture is active every request is
    checked, including the ``aws.client(...)`` helpers with the fake default keys, which
    moto then rejects as unknown: arrange everything before requesting this fixture.
    """
    iam = aws.client("iam")
    iam.create_user(UserName="certfleet-denied")
    key = iam.create_access_key(UserName="certfleet-denied")["AccessKey"]
    before = _post(f"{aws.endpoint_url}/moto-api/reset-auth", b"0")["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
    try:
        yield aws.credentials(key["AccessKeyId"], key["SecretAccessKey"])
    finally:  # the setting is process-wide: every moto server in this process obeys it
        _post(f"{aws.endpoint_url}/moto-api/reset-auth", before.encode())
