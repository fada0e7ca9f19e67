"""Secrets Manager target against a real moto server over HTTP; values are read back with a plain boto3 client.

Run alone with ``pytest -p tests.plugins.moto tests/test_target_secrets_manager.py``.
"""

from __future__ import annotations

import json

import pytest

from certfleet.blocks.targets.file import TargetError
from certfleet.blocks.targets.secrets_manager import SecretsManagerTarget
from certfleet import pki
from certfleet.contracts import DeployBundle

pytestmark = pytest.mark.services

NAME = "tls/www"
MISSING_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tls/none-AbCdEf"


def _bundle(ca) -> DeployBundle:
    chain, key = ca.issue(["www.example.test"])
    return DeployBundle("www", pki.serial_hex(pki.load_certs(chain)[0]), chain, key)


def _assert_no_key(text: str, bundle: DeployBundle) -> None:
    lines = [line for line in bundle.key_pem.decode().splitlines() if line and not line.startswith("-----")]
    assert "PRIVATE KEY" not in text and not any(line in text for line in lines)


def _value(aws, stage: str = "AWSCURRENT") -> str:
    return aws.client("secretsmanager").get_secret_value(SecretId=NAME, VersionStage=stage)["SecretString"]


def test_first_deploy_creates_json_secret(aws, local_ca):
    target = SecretsManagerTarget(secret_id=NAME, credentials=aws.credentials())
    bundle = _bundle(local_ca)
    assert target.current() is None

    receipt = target.deploy(bundle)

    value = json.loads(_value(aws))
    assert set(value) == {"certificate", "private_key", "chain", "serial"}
    assert value["serial"] == bundle.serial
    assert [pki.serial_hex(c) for c in pki.load_certs(value["certificate"])] == [bundle.serial]
    assert pki.load_certs(value["chain"])[0].subject == local_ca.inter_cert.subject
    assert value["private_key"].encode() == bundle.key_pem
    assert target.current() == bundle.serial and "created secret" in receipt.detail
    _assert_no_key(repr(receipt) + repr(target), bundle)


def test_redeploy_adds_version_and_rollback_moves_awscurrent_back(aws, local_ca):
    target = SecretsManagerTarget(secret_id=NAME, extra_stage_label="certfleet", credentials=aws.credentials())
    first, second = _bundle(local_ca), _bundle(local_ca)
    target.deploy(first)
    receipt = target.deploy(second)
    assert "new version" in receipt.detail
    assert json.loads(_value(aws))["serial"] == second.serial
    assert json.loads(_value(aws, "AWSPREVIOUS"))["serial"] == first.serial
    assert json.loads(_value(aws, "certfleet"))["serial"] == second.serial

    assert target.rollback() == first.serial

    assert json.loads(_value(aws))["serial"] == first.serial
    assert json.loads(_value(aws, "AWSPREVIOUS"))["serial"] == second.serial
    assert json.loads(_value(aws, "certfleet"))["serial"] == first.serial


def test_pem_format_is_chain_then_key(aws, local_ca):
    target = SecretsManagerTarget(secret_id=NAME, format="pem", credentials=aws.credentials())
    bundle = _bundle(local_ca)
    target.deploy(bundle)
    value = _value(aws).encode()
    assert value.startswith(b"-----BEGIN CERTIFICATE-----") and value.endswith(bundle.key_pem)
    assert pki.serial_hex(pki.order_chain(pki.load_certs(value))[0]) == bundle.serial == target.current()


def test_rollback_without_previous_version_is_a_clear_error(aws, local_ca):
    target = SecretsManagerTarget(secret_id=NAME, credentials=aws.credentials())
    target.deploy(_bundle(local_ca))
    with pytest.raises(TargetError, match=f"^secrets-manager target '{NAME}': no AWSPREVIOUS version"):
        target.rollback()


def test_missing_secret_names_target_and_code(aws, local_ca):
    with pytest.raises(TargetError, match=f"^secrets-manager target '{NAME}': roll back: ResourceNotFoundException"):
        SecretsManagerTarget(secret_id=NAME, credentials=aws.credentials()).rollback()
    by_arn = SecretsManagerTarget(secret_id=MISSING_ARN, credentials=aws.credentials())
    bundle = _bundle(local_ca)
    with pytest.raises(TargetError, match=f"^secrets-manager target '{MISSING_ARN}': write new version: ResourceNotFoundException") as err:
        by_arn.deploy(bundle)
    _assert_no_key(str(err.value) + repr(err.value), bundle)


def test_access_denied_names_target_and_code(aws, local_ca, aws_denied):
    target = SecretsManagerTarget(secret_id=NAME, credentials=aws_denied)
    bundle = _bundle(local_ca)
    with pytest.raises(TargetError, match=f"^secrets-manager target '{NAME}': read AWSCURRENT: AccessDenied"):
        target.current()
    with pytest.raises(TargetError, match="AccessDenied") as err:
        target.deploy(bundle)
    _assert_no_key(str(err.value), bundle)
