"""Target block: a ``kubernetes.io/tls`` Secret in one or more namespaces (Ingress, Gateway, pods).

Deploy, per namespace: read the Secret → if it already holds this serial, leave it alone →
copy what it holds to ``<name>-certfleet-previous`` (a second Secret: a key never goes into
an annotation) → create the Secret, or on 409 AlreadyExists JSON-merge-patch it, retrying
a patch that hits 409 Conflict (a concurrent writer) with backoff. Then annotate each
Deployment in ``restart_deployments`` with ``kubectl.kubernetes.io/restartedAt`` (what
``kubectl rollout restart`` does), so pods that read the files once pick up the new one.
If a later namespace or a restart fails, the namespaces already written are put back.

``current()`` reads the serial of ``tls.crt`` in every namespace. When namespaces disagree
(or one has no Secret) it returns ``None``: distribution then redeploys, and deploy skips
the namespaces that already hold the serial, so only the stale ones are written.

The client is the official ``kubernetes`` package configured exactly as for a real
cluster: a kubeconfig file (+ context) or the in-cluster service account. Tests point a
kubeconfig at an API emulator; nothing in this module knows.
"""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import datetime, timezone
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from prefect.blocks.core import Block
from pydantic import Field, field_validator, model_validator

from certfleet.blocks.k8s import api_client
from certfleet.blocks.logs import block_logger
from certfleet.blocks.targets.file import TargetError
from certfleet import pki
from certfleet.contracts import DeployBundle
from certfleet.models import Receipt

PREVIOUS_SUFFIX = "-certfleet-previous"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
MANAGED_BY = {"app.kubernetes.io/managed-by": "certfleet"}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_MERGE_PATCH = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}


class KubernetesTargetError(TargetError):
    """An API call failed; the message starts with ``kubernetes target '<ns>/<name>':``."""


class KubernetesSecretTarget(Block):
    _block_type_name = "certfleet kubernetes secret target"
    _block_type_slug = "certfleet-kubernetes-secret-target"
    _description = "Writes a kubernetes.io/tls Secret into one or more namespaces, keeps the previous one for rollback, restarts Deployments."

    secret_name: str = Field(description="Name of the TLS Secret (the one an Ingress/Gateway references), e.g. 'shop-tls'")
    namespaces: list[str] = Field(min_length=1, description="Namespaces that each get a copy of the Secret")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the Secret (app.kubernetes.io/managed-by=certfleet is always set)")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra annotations on the Secret (never key material)")
    kubeconfig_path: str | None = Field(None, description="kubeconfig file; empty = $KUBECONFIG or ~/.kube/config. Ignored when in_cluster")
    context: str | None = Field(None, description="kubeconfig context; empty = the file's current-context")
    in_cluster: bool = Field(False, description="Use the pod's service account (flows running inside the cluster)")
    restart_deployments: list[str] = Field(default_factory=list, description="Deployments as 'namespace/name' to restart (restartedAt annotation) after the Secret changes")
    request_timeout: float = Field(30, gt=0, description="Seconds one API request may take")
    conflict_retries: int = Field(4, ge=0, description="How many times a patch answered 409 Conflict (concurrent update) is retried")
    conflict_backoff: float = Field(0.2, ge=0, description="Seconds before the first conflict retry; doubles on each further retry")

    @field_validator("secret_name")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        """Names go into API paths: reject what the API server would reject, before any request."""
        if not _DNS_SUBDOMAIN.match(value) or len(value + PREVIOUS_SUFFIX) > 253:
            raise ValueError(f"{value!r} is not a valid Secret name (lowercase DNS subdomain, room for '{PREVIOUS_SUFFIX}')")
        return value

    @field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, value: list[str]) -> list[str]:
        bad = [ns for ns in value if not _DNS_LABEL.match(ns)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a valid namespace name (lowercase DNS label)")
        return value

    @field_validator("restart_deployments")
    @classmethod
    def _namespace_slash_name(cls, value: list[str]) -> list[str]:
        for item in value:
            ns, _, name = item.partition("/")
            if not _DNS_LABEL.match(ns) or not _DNS_SUBDOMAIN.match(name):
                raise ValueError(f"{item!r} is not 'namespace/name'")
        return value

    @model_validator(mode="after")
    def _one_config_source(self) -> "KubernetesSecretTarget":
        if self.in_cluster and (self.kubeconfig_path or self.context):
            raise ValueError("in_cluster excludes kubeconfig_path and context")
        return self

    def get_client(self) -> client.ApiClient:
        """An ApiClient configured as for any real cluster: kubeconfig (+ context) or in-cluster."""
        try:
            return api_client(self.in_cluster, self.kubeconfig_path, self.context)
        except (ConfigException, OSError) as exc:
            source = "in-cluster service account" if self.in_cluster else f"kubeconfig {self.kubeconfig_path or '(default)'}"
            raise KubernetesTargetError(f"kubernetes target '{self.secret_name}': cannot load {source}: {exc}") from None

    # --- the Target contract --------------------------------------------------------

    def current(self) -> str | None:
        """The serial every namespace holds, or ``None`` if any lacks it or they disagree."""
        with self.get_client() as api:
            serials = {_serial_of(self._read_secret(api, ns, self.secret_name)) for ns in self.namespaces}
        return serials.pop() if len(serials) == 1 else None

    def deploy(self, bundle: DeployBundle) -> Receipt:
        data = {"tls.crt": bundle.fullchain_pem, "tls.key": bundle.key_pem}
        meta = {"certfleet.io/certificate": bundle.certificate, "certfleet.io/serial": bundle.serial}
        written: list[tuple[str, dict | None]] = []  # (namespace, Secret it replaced) for undo
        with self.get_client() as api:
            self._check_deployments(api)
            try:
                for ns in self.namespaces:
                    existing = self._read_secret(api, ns, self.secret_name)
                    if _serial_of(existing) == bundle.serial:
                        self._logger().info("%s already holds %s", self._label(ns), bundle.serial)
                        continue
                    if existing is not None:
                        self._keep_previous(api, ns, existing)
                    self._upsert(api, ns, self.secret_name, data, meta, exists=existing is not None)
                    written.append((ns, existing))
                    self._logger().info("%s now holds %s", self._label(ns), bundle.serial)
                if written:
                    self._restart(api)
            except KubernetesTargetError as exc:
                self._undo(api, written)
                raise KubernetesTargetError(f"{exc}; namespaces already written were restored" if written else str(exc)) from None
        detail = f"written in {', '.join(ns for ns, _ in written)}" if written else "already current"
        return Receipt(target=self._label(), certificate=bundle.certificate, serial=bundle.serial,
                       changed=bool(written), detail=detail, at=datetime.now(timezone.utc))

    def rollback(self) -> str | None:
        """Copy ``<name>-certfleet-previous`` back over the Secret in every namespace, restart."""
        with self.get_client() as api:
            previous = {ns: self._read_secret(api, ns, self.secret_name + PREVIOUS_SUFFIX) for ns in self.namespaces}
            missing = [ns for ns, secret in previous.items() if not _tls_data(secret)]
            if missing:  # check all before writing any: a half rollback is worse than none
                raise KubernetesTargetError(f"{self._label(missing[0])}: no previous certificate to roll back to "
                                            f"(no {self.secret_name + PREVIOUS_SUFFIX} Secret)")
            self._check_deployments(api)
            for ns, secret in previous.items():
                meta = {"certfleet.io/serial": _serial_of(secret) or ""}
                self._upsert(api, ns, self.secret_name, _tls_data(secret), meta, exists=True)
            self._restart(api)
        return self.current()

    # --- private ----------------------------------------------------------------------

    def _read_secret(self, api: client.ApiClient, ns: str, name: str) -> dict | None:
        """The Secret as the API returns it (data base64), or ``None`` if there is none."""
        try:
            return self._call(api, "GET", f"/api/v1/namespaces/{ns}/secrets/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._api_error(ns, f"read Secret {name}", exc) from None

    def _keep_previous(self, api: client.ApiClient, ns: str, existing: dict) -> None:
        """The Secret being replaced goes to ``<name>-certfleet-previous``: rollback's source."""
        data = _tls_data(existing)
        if not data:
            return  # nothing certificate-like to keep (e.g. a placeholder Secret)
        meta = {"certfleet.io/previous-of": self.secret_name, "certfleet.io/serial": _serial_of(existing) or ""}
        self._upsert(api, ns, self.secret_name + PREVIOUS_SUFFIX, data, meta, exists=None)

    def _upsert(self, api: client.ApiClient, ns: str, name: str, data: dict[str, bytes], meta: dict[str, str],
                exists: bool | None) -> None:
        """Create, or JSON-merge-patch when it exists (``exists=None``: unknown, try create first)."""
        metadata = {"name": name, "namespace": ns, "labels": {**self.labels, **MANAGED_BY},
                    "annotations": {**self.annotations, **meta}}
        encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
        if not exists:
            body = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": metadata, "data": encoded}
            try:
                self._call(api, "POST", f"/api/v1/namespaces/{ns}/secrets", body)
                return
            except ApiException as exc:
                if exc.status != 409:  # 409 here = AlreadyExists: someone created it; patch instead
                    raise self._api_error(ns, f"create Secret {name}", exc) from None
        self._patch(api, ns, f"/api/v1/namespaces/{ns}/secrets/{name}", {"metadata": metadata, "data": encoded},
                    f"patch Secret {name}")

    def _patch(self, api: client.ApiClient, ns: str, path: str, body: dict, what: str) -> None:
        """JSON merge patch; a 409 Conflict (another writer got in first) is retried with backoff."""
        for attempt in range(self.conflict_retries + 1):
            try:
                self._call(api, "PATCH", path, body, headers=_MERGE_PATCH)
                return
            except ApiException as exc:
                if exc.status != 409 or attempt == self.conflict_retries:
                    detail = f" after {attempt + 1} attempts" if exc.status == 409 else ""
                    raise self._api_error(ns, what + detail, exc) from None
                self._logger().info("%s %s: 409 Conflict, retrying", self._label(ns), what)
                time.sleep(self.conflict_backoff * 2 ** attempt)

    def _check_deployments(self, api: client.ApiClient) -> None:
        """Every Deployment to restart must exist before any Secret is written: bad input, no write."""
        for ns, name in (item.split("/", 1) for item in self.restart_deployments):
            try:
                self._call(api, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
            except ApiException as exc:
                raise self._api_error(ns, f"restart_deployments: read Deployment {name}", exc) from None

    def _restart(self, api: client.ApiClient) -> None:
        """What ``kubectl rollout restart`` does: a new pod-template annotation rolls the pods."""
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: _now()}}}}}
        for ns, name in (item.split("/", 1) for item in self.restart_deployments):
            self._patch(api, ns, f"/apis/apps/v1/namespaces/{ns}/deployments/{name}", body, f"restart Deployment {name}")
            self._logger().info("%s restarted Deployment %s/%s", self._label(), ns, name)

    def _undo(self, api: client.ApiClient, written: list[tuple[str, dict | None]]) -> None:
        """Best effort: put back what each written namespace held (or delete what we created)."""
        for ns, existing in written:
            try:
                if existing is None:
                    self._call(api, "DELETE", f"/api/v1/namespaces/{ns}/secrets/{self.secret_name}")
                elif _tls_data(existing):
                    meta = {"certfleet.io/serial": _serial_of(existing) or ""}
                    self._upsert(api, ns, self.secret_name, _tls_data(existing), meta, exists=True)
            except (ApiException, KubernetesTargetError):
                self._logger().warning("%s could not be restored after a failed deploy", self._label(ns))

    def _call(self, api: client.ApiClient, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> Any:
        """One request through the official client; network failures become our error, API errors pass."""
        try:
            return api.call_api(path, method, header_params=dict(headers or {"Accept": "application/json"}),
                                body=body, response_type="object", auth_settings=["BearerToken"],
                                _return_http_data_only=True, _request_timeout=self.request_timeout)
        except urllib3.exceptions.HTTPError as exc:
            host = api.configuration.host
            raise KubernetesTargetError(f"{self._label()}: cannot reach the API server {host}: {_reason(exc)}") from None

    def _api_error(self, ns: str, what: str, exc: ApiException) -> KubernetesTargetError:
        return KubernetesTargetError(f"{self._label(ns)}: {what} failed: {exc.status} {exc.reason}{_status_message(exc)}")

    def _label(self, ns: str | None = None) -> str:
        where = ns if ns else ",".join(self.namespaces)
        return f"kubernetes target '{where}/{self.secret_name}'"

    def _logger(self):
        return block_logger("certfleet.targets.kubernetes")


def _tls_data(secret: dict | None) -> dict[str, bytes]:
    """tls.crt and tls.key of a Secret, decoded; empty when it lacks either."""
    data = (secret or {}).get("data") or {}
    if not data.get("tls.crt") or not data.get("tls.key"):
        return {}
    return {k: base64.b64decode(data[k]) for k in ("tls.crt", "tls.key")}


def _serial_of(secret: dict | None) -> str | None:
    crt = _tls_data(secret).get("tls.crt")
    if not crt:
        return None
    try:
        certs = pki.load_certs(crt)
        return pki.serial_hex(pki.leaf(certs)) if certs else None
    except pki.PemError:
        return None  # garbage in tls.crt: treat as "holds nothing we know", redeploy


def _status_message(exc: ApiException) -> str:
    """The Status message of the API server (e.g. the RBAC reason), short, never the request body."""
    try:
        message = json.loads(exc.body or "{}").get("message") or ""
    except (ValueError, AttributeError):
        message = ""
    return f": {message[:300]}" if message else ""


def _reason(exc: urllib3.exceptions.HTTPError) -> str:
    inner = getattr(exc, "reason", None) or exc
    if isinstance(inner, urllib3.exceptions.NewConnectionError) or "Connection refused" in str(inner):
        return "connection refused"
    return type(inner).__name__


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
