"""Discovery sources against real services: ACM and S3 on a moto server, Kubernetes on kmock.

Each test arranges certificates with plain clients (boto3, the official ``kubernetes``
client), runs the block's ``scan()`` exactly as the monitor flow does, and checks that the
serials found are the ones created — no more (keys, CA bundles, backups, unlabelled or
non-TLS Secrets), no fewer (ECDSA certificates ACM lists only when asked).

kmock ignores label and field selectors; the block filters again client-side, and the
Kubernetes test checks both that the right Secrets come back and that the server was
asked to filter (as a real API server would). kmock's server runs on the test's event
loop, so the sync block runs in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from kubernetes import client, config

from certfleet.blocks.aws import AwsCredentials
from certfleet.blocks.discovery.acm import AcmDiscovery
from certfleet.blocks.discovery.kubernetes import KubernetesDiscovery, KubernetesDiscoveryError
from certfleet.blocks.discovery.s3 import S3Discovery, S3DiscoveryError
from certfleet import pki
from certfleet_dev.ports import free_port
from certfleet.localca import LocalCA

pytestmark = pytest.mark.services


def issue(ca: LocalCA, domains: list[str], key_type: str = "ec-p256") -> tuple[bytes, bytes, str]:
    """(fullchain PEM, key PEM, serial) of a new leaf from the session CA."""
    chain, key = ca.issue(domains, key_type=key_type)
    return chain, key, pki.serial_hex(pki.load_certs(chain)[0])


def no_key_material(found) -> bool:
    return "PRIVATE KEY" not in repr(found)


# --- ACM ---------------------------------------------------------------------------------


def test_acm_finds_every_imported_certificate_with_its_serial(aws, local_ca):
    acm = aws.client("acm")
    imported = {}
    for domains, key_type in ((["shop.test", "www.shop.test"], "ec-p256"), (["api.test"], "rsa-2048")):
        chain, key, serial = issue(local_ca, domains, key_type)
        certs = pki.load_certs(chain)
        arn = acm.import_certificate(Certificate=pki.to_pem(certs[:1]), PrivateKey=key,
                                     CertificateChain=pki.to_pem(certs[1:]))["CertificateArn"]
        imported[arn] = serial

    found = AcmDiscovery(credentials=aws.credentials()).scan()
    # The ECDSA one too (on AWS, ListCertificates hides it unless every key type is asked for).
    assert {d.location: d.info.serial for d in found} == imported
    assert {d.source for d in found} == {"acm"}
    assert no_key_material(found)
    assert AcmDiscovery(credentials=aws.credentials(), include_imported=False).scan() == []
    assert AcmDiscovery(credentials=aws.credentials(), statuses=["EXPIRED"]).scan() == []


def test_acm_unreachable_endpoint_is_a_clear_error():
    creds = AwsCredentials(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y",
                           endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RuntimeError, match=r"^acm discovery 'us-east-1': list certificates: EndpointConnectionError"):
        AcmDiscovery(credentials=creds).scan()


# --- S3 ----------------------------------------------------------------------------------


def test_s3_finds_leaf_certificates_and_skips_keys_bundles_and_backups(aws, s3_bucket, local_ca):
    s3 = aws.client("s3")
    www_chain, www_key, www_serial = issue(local_ca, ["www.shop.test"])
    api_chain, _, api_serial = issue(local_ca, ["api.shop.test"])
    old_chain, _, _ = issue(local_ca, ["www.shop.test"])
    outside_chain, _, _ = issue(local_ca, ["other.test"])
    objects = {
        "certs/www/fullchain.pem": www_chain,                          # found
        "certs/www/privkey.pem": www_key,                              # a key: skipped
        "certs/www/previous/fullchain.pem": old_chain,                 # the S3 target's backup: skipped
        "certs/api.CRT": pki.to_pem(pki.load_certs(api_chain)[:1]),    # found (suffix is case-insensitive)
        "certs/ca-bundle.pem": local_ca.root_pem + local_ca.intermediate_pem,  # CA only: skipped
        "certs/garbage.pem": b"not a certificate\n",                   # non-PEM: skipped
        "certs/www/fullchain.txt": www_chain,                          # other suffix: not read
        "certs/huge.pem": www_chain + b"#" * 20_000,                   # over the size cap: not read
        "elsewhere/outside.pem": outside_chain,                        # outside the prefix
    }
    for key, body in objects.items():
        s3.put_object(Bucket=s3_bucket, Key=key, Body=body)

    source = S3Discovery(bucket=s3_bucket, prefixes=["certs/", "certs/www/"], max_object_bytes=16_384,
                         credentials=aws.credentials())
    found = source.scan()
    assert {d.location: d.info.serial for d in found} == {
        f"s3://{s3_bucket}/certs/www/fullchain.pem": www_serial,
        f"s3://{s3_bucket}/certs/api.CRT": api_serial,
    }
    assert {d.source for d in found} == {"s3"}
    assert no_key_material(found)


def test_s3_missing_bucket_is_a_clear_error(aws):
    with pytest.raises(S3DiscoveryError, match=r"^s3 discovery 's3://no-such-bucket/certs/': list objects: NoSuchBucket"):
        S3Discovery(bucket="no-such-bucket", prefixes=["certs/"], credentials=aws.credentials()).scan()


# --- Kubernetes (kmock) ------------------------------------------------------------------


def write_kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": server.rstrip("/")}}],
        "users": [{"name": "certfleet", "user": {"token": "test-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "certfleet"}}],
    }))
    return path


def create_secret(kubeconfig: Path, ns: str, name: str, data: dict[str, bytes], *, type_: str = "kubernetes.io/tls",
                  labels: dict | None = None, annotations: dict | None = None) -> None:
    core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig), persist_config=False))
    core.create_namespaced_secret(ns, {
        "apiVersion": "v1", "kind": "Secret", "type": type_,
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}, "annotations": annotations or {}},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    })


@pytest.mark.asyncio
async def test_kubernetes_finds_labelled_tls_secrets_in_all_namespaces(kmock, tmp_path, local_ca):
    kubeconfig = write_kubeconfig(tmp_path, str(kmock.url))
    serials = {}
    for ns, name, labels in (("shop", "shop-tls", {"team": "web"}), ("api", "api-tls", {"team": "web"}),
                             ("shop", "legacy-tls", {})):
        chain, key, serials[f"{ns}/{name}"] = issue(local_ca, [f"{name}.test"])
        await asyncio.to_thread(create_secret, kubeconfig, ns, name, {"tls.crt": chain, "tls.key": key}, labels=labels)
    chain, key, _ = issue(local_ca, ["opaque.test"])
    await asyncio.to_thread(create_secret, kubeconfig, "shop", "not-tls", {"tls.crt": chain, "tls.key": key},
                            type_="Opaque", labels={"team": "web"})
    chain, key, _ = issue(local_ca, ["shop-tls.test"])
    await asyncio.to_thread(create_secret, kubeconfig, "shop", "shop-tls-certfleet-previous",
                            {"tls.crt": chain, "tls.key": key}, labels={"team": "web"},
                            annotations={"certfleet.io/previous-of": "shop-tls"})

    source = KubernetesDiscovery(kubeconfig_path=str(kubeconfig), label_selector="team=web", request_timeout=5)
    found = await asyncio.to_thread(source.scan)
    assert {d.location: d.info.serial for d in found} == {k: serials[k] for k in ("shop/shop-tls", "api/api-tls")}
    assert {d.source for d in found} == {"kubernetes"}
    assert no_key_material(found)
    lists = [r for r in kmock if str(r.method.value).upper() == "GET" and r.url.path == "/api/v1/secrets"]
    assert lists and lists[-1].url.query["fieldSelector"] == "type=kubernetes.io/tls"
    assert lists[-1].url.query["labelSelector"] == "team=web"

    one_ns = KubernetesDiscovery(kubeconfig_path=str(kubeconfig), namespaces=["shop"], request_timeout=5)
    found = await asyncio.to_thread(one_ns.scan)
    assert {d.location: d.info.serial for d in found} == {k: serials[k] for k in ("shop/shop-tls", "shop/legacy-tls")}


def test_kubernetes_unreachable_api_server_and_bad_selector_are_clear_errors(tmp_path):
    port = free_port()
    source = KubernetesDiscovery(kubeconfig_path=str(write_kubeconfig(tmp_path, f"http://127.0.0.1:{port}")),
                                 namespaces=["shop"], request_timeout=5)
    with pytest.raises(KubernetesDiscoveryError) as err:
        source.scan()
    assert str(err.value) == (f"kubernetes discovery 'shop': cannot reach the API server "
                              f"http://127.0.0.1:{port}: connection refused")
    with pytest.raises(ValueError, match="cannot read requirement 'team web'"):
        KubernetesDiscovery(label_selector="team web")
