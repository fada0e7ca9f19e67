"""The Kubernetes Secret target, driven through the official ``kubernetes`` client.

WHAT IS FAKED, AND WHY. No real API server can run on these machines (DESIGN.md), so:

1. Most tests use kmock's ``KubernetesEmulator`` (the ``kmock`` pytest fixture): a stateful
   in-memory API server on a loopback port. The block is configured exactly as for a real
   cluster — through a kubeconfig file the test writes, pointing at the emulator — and the
   test reads the results back with the official client, as ``kubectl get`` would.
   kmock serves create / get / JSON-merge patch / delete and answers 409 to a duplicate
   create; it does not emulate PUT or resourceVersion.
2. Because of that, the "409 Conflict during patch, then success" path uses its own tiny
   test double: ``ConflictingSecretServer`` below, a ``http.server`` thread that speaks just
   the three Secret endpoints the block calls (GET one Secret, POST a Secret, PATCH one
   Secret) and answers the first N PATCHes with a Kubernetes 409 Status. The block still
   goes through kubeconfig + the official client; only the server is scripted.

kmock's fixture is async (its server runs on the test's event loop), while the block is
sync like every Target: each block call runs in a worker thread (``asyncio.to_thread``)
so the emulator can answer it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kubernetes import client, config

from certfleet.blocks.targets.kubernetes import (
    RESTARTED_AT,
    KubernetesSecretTarget,
    KubernetesTargetError,
)
from certfleet import pki
from certfleet.contracts import DeployBundle, RollbackCapable, Target
from certfleet_dev.ports import free_port
from certfleet.localca import LocalCA

pytestmark = pytest.mark.services

SECRET = "shop-tls"


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCA:
    return LocalCA.create(tmp_path_factory.mktemp("ca"))


def bundle(ca: LocalCA) -> DeployBundle:
    chain, key = ca.issue(["shop.test"])
    return DeployBundle("shop", pki.serial_hex(pki.load_certs(chain)[0]), chain, key)


def write_kubeconfig(tmp_path: Path, server: str) -> Path:
    """A kubeconfig like any user's: one cluster, one token user, one current context."""
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": server.rstrip("/")}}],
        "users": [{"name": "certfleet", "user": {"token": "test-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "certfleet"}}],
    }))
    return path


@pytest.fixture
def kubeconfig(kmock, tmp_path) -> Path:
    return write_kubeconfig(tmp_path, str(kmock.url))


def make_target(kubeconfig: Path, **overrides) -> KubernetesSecretTarget:
    fields = dict(secret_name=SECRET, namespaces=["shop", "shop-canary"], kubeconfig_path=str(kubeconfig),
                  labels={"team": "web"}, annotations={"owner": "platform"}, request_timeout=5)
    return KubernetesSecretTarget(**{**fields, **overrides})


def core(kubeconfig: Path) -> client.CoreV1Api:
    """The official client, for reading back what the block wrote."""
    return client.CoreV1Api(config.new_client_from_config(str(kubeconfig), persist_config=False))


def read_secret(kubeconfig: Path, ns: str, name: str = SECRET) -> client.V1Secret:
    return core(kubeconfig).read_namespaced_secret(name, ns)


def serial_of(secret: client.V1Secret) -> str:
    return pki.serial_hex(pki.load_certs(base64.b64decode(secret.data["tls.crt"]))[0])


def writes(kmock) -> list[tuple[str, str]]:
    """(method, path) of every state-changing request the emulator received."""
    return [(str(r.method.value).upper(), r.url.path) for r in kmock
            if str(r.method.value).upper() in {"POST", "PATCH", "PUT", "DELETE"}]


def create_deployment(kubeconfig: Path, ns: str, name: str) -> None:
    apps = client.AppsV1Api(config.new_client_from_config(str(kubeconfig), persist_config=False))
    apps.create_namespaced_deployment(ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
    })


def template_annotations(kubeconfig: Path, ns: str, name: str) -> dict:
    apps = client.AppsV1Api(config.new_client_from_config(str(kubeconfig), persist_config=False))
    return apps.read_namespaced_deployment(name, ns).spec.template.metadata.annotations or {}


run = asyncio.to_thread


# --- against the kmock emulator ---------------------------------------------------------


@pytest.mark.asyncio
async def test_deploy_creates_a_tls_secret_in_every_namespace(kubeconfig, ca):
    target = make_target(kubeconfig)
    assert isinstance(target, Target) and isinstance(target, RollbackCapable)
    assert await run(target.current) is None
    b = bundle(ca)
    receipt = await run(target.deploy, b)
    assert receipt.changed and receipt.serial == b.serial
    for ns in ("shop", "shop-canary"):
        secret = await run(read_secret, kubeconfig, ns)
        assert secret.type == "kubernetes.io/tls"
        assert serial_of(secret) == b.serial
        assert base64.b64decode(secret.data["tls.key"]) == b.key_pem
        assert secret.metadata.labels == {"team": "web", "app.kubernetes.io/managed-by": "certfleet"}
        assert secret.metadata.annotations["owner"] == "platform"
        assert secret.metadata.annotations["certfleet.io/serial"] == b.serial
        assert "PRIVATE KEY" not in json.dumps(secret.metadata.annotations)
    assert await run(target.current) == b.serial


@pytest.mark.asyncio
async def test_second_deploy_patches_and_keeps_the_previous_secret(kmock, kubeconfig, ca):
    target = make_target(kubeconfig)
    first, second = bundle(ca), bundle(ca)
    await run(target.deploy, first)
    await run(target.deploy, second)
    for ns in ("shop", "shop-canary"):
        assert serial_of(await run(read_secret, kubeconfig, ns)) == second.serial
        assert serial_of(await run(read_secret, kubeconfig, ns, SECRET + "-certfleet-previous")) == first.serial
        assert ("PATCH", f"/api/v1/namespaces/{ns}/secrets/{SECRET}") in writes(kmock)
    patch = next(r for r in kmock if str(r.method.value).upper() == "PATCH")
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    # Idempotent: the same serial again writes nothing (and keeps `previous` = first).
    before = len(writes(kmock))
    receipt = await run(target.deploy, second)
    assert not receipt.changed and len(writes(kmock)) == before


@pytest.mark.asyncio
async def test_deployments_are_restarted_after_the_secret_changes(kubeconfig, ca):
    await run(create_deployment, kubeconfig, "shop", "web")
    target = make_target(kubeconfig, restart_deployments=["shop/web"])
    await run(target.deploy, bundle(ca))
    annotations = await run(template_annotations, kubeconfig, "shop", "web")
    assert annotations[RESTARTED_AT].endswith("Z")  # RFC 3339, as `kubectl rollout restart` writes


@pytest.mark.asyncio
async def test_rollback_restores_the_previous_serial_everywhere(kubeconfig, ca):
    target = make_target(kubeconfig)
    with pytest.raises(KubernetesTargetError, match="no previous certificate"):
        await run(target.rollback)
    first, second = bundle(ca), bundle(ca)
    await run(target.deploy, first)
    await run(target.deploy, second)
    assert await run(target.rollback) == first.serial
    for ns in ("shop", "shop-canary"):
        secret = await run(read_secret, kubeconfig, ns)
        assert serial_of(secret) == first.serial
        assert base64.b64decode(secret.data["tls.key"]) == first.key_pem


@pytest.mark.asyncio
async def test_namespaces_that_disagree_report_none_and_only_stale_ones_are_written(kmock, kubeconfig, ca):
    b = bundle(ca)
    await run(make_target(kubeconfig, namespaces=["shop"]).deploy, b)
    both = make_target(kubeconfig)
    assert await run(both.current) is None  # shop-canary has nothing yet: redeploy
    before = len(writes(kmock))
    receipt = await run(both.deploy, b)
    assert receipt.detail == "written in shop-canary"
    assert all("/namespaces/shop-canary/" in path for _, path in writes(kmock)[before:])
    assert await run(both.current) == b.serial


@pytest.mark.asyncio
async def test_missing_deployment_is_refused_before_any_write(kmock, kubeconfig, ca):
    target = make_target(kubeconfig, restart_deployments=["shop/nope"])
    with pytest.raises(KubernetesTargetError) as err:
        await run(target.deploy, bundle(ca))
    assert str(err.value).startswith(
        f"kubernetes target 'shop/{SECRET}': restart_deployments: read Deployment nope failed: 404 Not Found")
    assert writes(kmock) == []


def test_unreachable_api_server_is_a_clear_error(tmp_path):
    port = free_port()
    target = make_target(write_kubeconfig(tmp_path, f"http://127.0.0.1:{port}"))
    with pytest.raises(KubernetesTargetError) as err:
        target.current()
    assert str(err.value) == (f"kubernetes target 'shop,shop-canary/{SECRET}': cannot reach the API server "
                              f"http://127.0.0.1:{port}: connection refused")


def test_bad_names_are_rejected_by_the_block():
    with pytest.raises(ValueError, match="not a valid namespace name"):
        KubernetesSecretTarget(secret_name=SECRET, namespaces=["Shop"])
    with pytest.raises(ValueError, match="is not 'namespace/name'"):
        KubernetesSecretTarget(secret_name=SECRET, namespaces=["shop"], restart_deployments=["web"])


# --- the conflict test double -------------------------------------------------------------


class ConflictingSecretServer(ThreadingHTTPServer):
    """Fake API server for ONE Secret: GET returns it, POST creates any Secret (201), PATCH of
    the Secret answers 409 Conflict ``conflicts`` times, then applies the patch. kmock cannot
    produce a 409 on patch (no resourceVersion), so this is the only place it is scripted."""

    def __init__(self, existing: dict, conflicts: int):
        super().__init__(("127.0.0.1", 0), _ConflictHandler)
        self.existing, self.conflicts, self.requests = existing, conflicts, []
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ConflictHandler(BaseHTTPRequestHandler):
    server: ConflictingSecretServer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self):
        self._record()
        self._reply(200, self.server.existing)

    def do_POST(self):
        self._reply(201, self._record())

    def do_PATCH(self):
        body = self._record()
        if self.server.conflicts > 0:
            self.server.conflicts -= 1
            self._reply(409, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                              "message": f'Operation cannot be fulfilled on secrets "{SECRET}": the object has been modified'})
            return
        merged = {**self.server.existing, "data": body["data"]}
        self._reply(200, merged)

    def _record(self) -> dict:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.command, self.path, self.headers.get("Content-Type")))
        return json.loads(raw) if raw else {}

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def existing_secret(ca) -> dict:
    old = bundle(ca)
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": SECRET, "namespace": "shop"},
            "data": {"tls.crt": base64.b64encode(old.fullchain_pem).decode(),
                     "tls.key": base64.b64encode(old.key_pem).decode()}}


@pytest.fixture
def conflicting_server():
    servers = []

    def start(existing: dict, conflicts: int) -> ConflictingSecretServer:
        servers.append(ConflictingSecretServer(existing, conflicts))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_patch_conflict_is_retried_until_it_succeeds(conflicting_server, tmp_path, ca):
    server = conflicting_server(existing_secret(ca), conflicts=2)
    target = make_target(write_kubeconfig(tmp_path, server.url), namespaces=["shop"], conflict_backoff=0.01)
    b = bundle(ca)
    assert target.deploy(b).changed
    main = f"/api/v1/namespaces/shop/secrets/{SECRET}"
    assert [(method, path) for method, path, _ in server.requests] == [
        ("GET", main),
        ("POST", "/api/v1/namespaces/shop/secrets"),  # the -certfleet-previous copy
        ("PATCH", main),  # 409
        ("PATCH", main),  # 409
        ("PATCH", main),  # applied
    ]
    assert {ctype for method, _, ctype in server.requests if method == "PATCH"} == {"application/merge-patch+json"}


def test_patch_conflicts_that_never_end_are_a_clear_error(conflicting_server, tmp_path, ca):
    server = conflicting_server(existing_secret(ca), conflicts=100)
    target = make_target(write_kubeconfig(tmp_path, server.url), namespaces=["shop"],
                         conflict_retries=2, conflict_backoff=0.01)
    with pytest.raises(KubernetesTargetError) as err:
        target.deploy(bundle(ca))
    assert str(err.value).startswith(
        f"kubernetes target 'shop/{SECRET}': patch Secret {SECRET} after 3 attempts failed: 409 Conflict: "
        f'Operation cannot be fulfilled on secrets "{SECRET}"')
    assert [m for m, _, _ in server.requests].count("PATCH") == 3


def test_missing_kubeconfig_and_absent_service_account_are_clear_errors(tmp_path, monkeypatch):
    target = make_target(tmp_path / "no-such-kubeconfig")
    with pytest.raises(KubernetesTargetError, match=r"^kubernetes target 'shop-tls': cannot load kubeconfig .*no-such-kubeconfig"):
        target.current()
    # Outside a pod the service-account environment is absent: say so, do not guess a server.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    in_cluster = KubernetesSecretTarget(secret_name=SECRET, namespaces=["shop"], in_cluster=True)
    with pytest.raises(KubernetesTargetError, match=r"cannot load in-cluster service account"):
        in_cluster.current()
