"""ACM target against a real moto server over HTTP; certificates are read back with a plain boto3 client.

Run alone with ``pytest -p tests.plugins.moto tests/test_target_acm.py``.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from certfleet.blocks.targets.acm import AcmTarget, acm_serial
from certfleet.blocks.targets.file import TargetError
from certfleet import keys, pki
from certfleet.contracts import DeployBundle

pytestmark = pytest.mark.services

MISSING_ARN = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"


def _bundle(ca, key_type: str = "ec-p256") -> DeployBundle:
    chain, key = ca.issue(["lb.example.test"], key_type)
    return DeployBundle("lb", pki.serial_hex(pki.load_certs(chain)[0]), chain, key)


def _assert_no_key(text: str, bundle: DeployBundle) -> None:
    lines = [line for line in bundle.key_pem.decode().splitlines() if line and not line.startswith("-----")]
    assert "PRIVATE KEY" not in text and not any(line in text for line in lines)


def _served_serial(aws, arn: str) -> str:
    """What a load balancer attached to ``arn`` would get, read without the block."""
    pem = aws.client("acm").get_certificate(CertificateArn=arn)["Certificate"]
    return pki.serial_hex(pki.load_certs(pem)[0])


def _tags(aws, arn: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in aws.client("acm").list_tags_for_certificate(CertificateArn=arn)["Tags"]}


def test_first_deploy_imports_and_names_the_new_arn(aws, local_ca):
    target = AcmTarget(tags={"team": "edge"}, credentials=aws.credentials())
    bundle = _bundle(local_ca)
    assert target.current() is None

    receipt = target.deploy(bundle)

    arn = target.certificate_arn
    assert arn and arn in receipt.detail and "pin certificate_arn" in receipt.detail
    assert _served_serial(aws, arn) == bundle.serial == target.current()
    assert _tags(aws, arn) == {"team": "edge", "certfleet:certificate": "lb", "certfleet:serial": bundle.serial}
    chain = aws.client("acm").get_certificate(CertificateArn=arn)["CertificateChain"]
    assert local_ca.inter_cert.subject in [c.subject for c in pki.load_certs(chain)]
    _assert_no_key(repr(receipt) + repr(target), bundle)


def test_reimport_keeps_the_arn_and_changes_the_serial(aws, local_ca):
    old, new = _bundle(local_ca), _bundle(local_ca, "rsa-2048")
    arn = aws.client("acm").import_certificate(Certificate=pki.to_pem(pki.load_certs(old.fullchain_pem)[:1]),
                                               PrivateKey=old.key_pem)["CertificateArn"]
    target = AcmTarget(certificate_arn=arn, credentials=aws.credentials())
    assert target.current() == old.serial

    receipt = target.deploy(new)

    assert receipt.target == arn and "re-imported" in receipt.detail
    assert _served_serial(aws, arn) == new.serial
    described = aws.client("acm").describe_certificate(CertificateArn=arn)["Certificate"]
    assert described["CertificateArn"] == arn and described["KeyAlgorithm"] == "RSA_2048"
    assert [c["CertificateArn"] for c in aws.client("acm").list_certificates()["CertificateSummaryList"]] == [arn]
    assert _tags(aws, arn)["certfleet:serial"] == new.serial


def test_rollback_to_previous_bundle_restores_serial(aws, local_ca):
    first, second = _bundle(local_ca), _bundle(local_ca)
    target = AcmTarget(credentials=aws.credentials())
    target.deploy(first)
    target.deploy(second)
    assert _served_serial(aws, target.certificate_arn) == second.serial

    assert target.rollback_to(first) == first.serial
    assert _served_serial(aws, target.certificate_arn) == first.serial
    assert _tags(aws, target.certificate_arn)["certfleet:serial"] == first.serial


def test_rollback_without_arn_is_refused(aws, local_ca):
    with pytest.raises(TargetError, match="no certificate_arn"):
        AcmTarget(credentials=aws.credentials()).rollback_to(_bundle(local_ca))


def test_key_type_acm_refuses_is_not_imported(aws, local_ca):
    key = ec.generate_private_key(ec.SECP521R1())
    chain = local_ca.sign_csr(keys.make_csr(key, ["lb.example.test"]))
    bundle = DeployBundle("lb", pki.serial_hex(pki.load_certs(chain)[0]), chain, keys.key_to_pem(key))
    target = AcmTarget(credentials=aws.credentials())
    assert "ec-secp521r1" not in target.accepted_key_types and "ec-p256" in AcmTarget.accepted_key_types

    with pytest.raises(TargetError, match="ACM does not accept ec-secp521r1 keys .*nothing imported"):
        target.deploy(bundle)
    assert aws.client("acm").list_certificates()["CertificateSummaryList"] == []


def test_missing_arn_names_target_and_code(aws, local_ca):
    target = AcmTarget(certificate_arn=MISSING_ARN, credentials=aws.credentials())
    bundle = _bundle(local_ca)
    with pytest.raises(TargetError, match=rf"^acm target '{MISSING_ARN}': read certificate: ResourceNotFoundException"):
        target.current()
    with pytest.raises(TargetError, match="ResourceNotFoundException") as err:
        target.deploy(bundle)
    _assert_no_key(str(err.value) + repr(err.value), bundle)


def test_access_denied_names_target_and_code(aws, local_ca, aws_denied):
    bundle = _bundle(local_ca)
    with pytest.raises(TargetError, match=r"^acm target 'new certificate': import certificate: AccessDenied") as err:
        AcmTarget(credentials=aws_denied).deploy(bundle)
    _assert_no_key(str(err.value), bundle)


@pytest.mark.parametrize("spelled, expected", [("0a:1b:2c", "a1b2c"), ("00:00:ff", "ff"), ("7F:01", "7f01")])
def test_acm_serial_spelling(spelled, expected):
    assert acm_serial(spelled) == expected
