"""Discovery source: ``kubernetes.io/tls`` Secrets (what Ingresses and Gateways serve).

Lists Secrets in each of ``namespaces`` (or cluster-wide when empty) with the field
selector ``type=kubernetes.io/tls`` and the optional ``label_selector``, page by page
(``limit`` / ``continue``), and reports the leaf of each ``tls.crt`` as ``namespace/name``.
The API server does the filtering; the same filters are applied again here, which costs
nothing against a real server and keeps a server that ignores selectors (an old proxy,
the test emulator) from widening the scan.

Key material: a Secret list returns ``tls.key`` with ``tls.crt``, and the API has no way
to ask for one data field only. The key is never decoded, copied or returned: only
``tls.crt`` is read from each item, and each page is dropped once read. Error messages
carry the API server's Status message, never a response body.

Skipped without error: Secrets whose ``tls.crt`` is empty or not PEM, CA-only bundles,
and the ``<name>-certfleet-previous`` copies that certfleet's Kubernetes target keeps for
rollback (annotated ``certfleet.io/previous-of``; they are not served).

The client is the official ``kubernetes`` package configured as for a real cluster: a
kubeconfig file (+ context) or the in-cluster service account. RBAC needed: ``list`` on
``secrets`` in each namespace (a ClusterRole for all namespaces).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from prefect.blocks.core import Block
from pydantic import Field, field_validator, model_validator

from certfleet.blocks.k8s import api_client
from certfleet.blocks.targets.kubernetes import _reason, _status_message
from certfleet import pki
from certfleet.fleet import Discovered
from certfleet.models import CertificateInfo

TLS_TYPE = "kubernetes.io/tls"
PREVIOUS_OF = "certfleet.io/previous-of"  # set by the Kubernetes target on its rollback copies
PAGE_SIZE = 500
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"


class KubernetesDiscoveryError(RuntimeError):
    """An API call failed; the message starts with ``kubernetes discovery '<namespaces>':``."""


class KubernetesDiscovery(Block):
    _block_type_name = "certfleet kubernetes discovery"
    _block_type_slug = "certfleet-kubernetes-discovery"
    _description = "Finds the certificates in kubernetes.io/tls Secrets, in some or all namespaces."

    namespaces: list[str] = Field(default_factory=list, description="Namespaces to look in; empty = every namespace (needs cluster-wide list on secrets)")
    label_selector: str | None = Field(None, description="Only Secrets matching this label selector, e.g. 'team=web,env in (prod,staging)'")
    kubeconfig_path: str | None = Field(None, description="kubeconfig file; empty = $KUBECONFIG or ~/.kube/config. Ignored when in_cluster")
    context: str | None = Field(None, description="kubeconfig context; empty = the file's current-context")
    in_cluster: bool = Field(False, description="Use the pod's service account (flows running inside the cluster)")
    request_timeout: float = Field(30, gt=0, description="Seconds one API request may take")

    @field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, value: list[str]) -> list[str]:
        bad = [ns for ns in value if not _DNS_LABEL.match(ns)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a valid namespace name (lowercase DNS label)")
        return value

    @field_validator("label_selector")
    @classmethod
    def _selector(cls, value: str | None) -> str | None:
        if value is not None:
            label_matcher(value)  # raises ValueError naming the bad requirement
        return value or None

    @model_validator(mode="after")
    def _one_config_source(self) -> "KubernetesDiscovery":
        if self.in_cluster and (self.kubeconfig_path or self.context):
            raise ValueError("in_cluster excludes kubeconfig_path and context")
        return self

    def get_client(self) -> client.ApiClient:
        """An ApiClient configured as for any real cluster: kubeconfig (+ context) or in-cluster."""
        try:
            return api_client(self.in_cluster, self.kubeconfig_path, self.context)
        except (ConfigException, OSError) as exc:
            source = "in-cluster service account" if self.in_cluster else f"kubeconfig {self.kubeconfig_path or '(default)'}"
            raise KubernetesDiscoveryError(f"{self._label()}: cannot load {source}: {exc}") from None

    def scan(self) -> list[Discovered]:
        matches = label_matcher(self.label_selector or "")
        found = []
        with self.get_client() as api:
            for ns in self.namespaces or [None]:
                for item in self._list(api, ns):
                    meta = item.get("metadata") or {}
                    if item.get("type") != TLS_TYPE or PREVIOUS_OF in (meta.get("annotations") or {}):
                        continue
                    if not matches(meta.get("labels") or {}):
                        continue
                    info = _leaf((item.get("data") or {}).get("tls.crt"))
                    if info is not None:
                        found.append(Discovered("kubernetes", f"{meta.get('namespace')}/{meta.get('name')}", info))
        return found

    def _list(self, api: client.ApiClient, ns: str | None) -> Iterator[dict]:
        """Every Secret the server returns for ``ns`` (``None``: all), one page in memory at a time."""
        path = f"/api/v1/namespaces/{ns}/secrets" if ns else "/api/v1/secrets"
        token = None
        while True:
            query = [("fieldSelector", f"type={TLS_TYPE}"), ("limit", PAGE_SIZE)]
            query += [("labelSelector", self.label_selector)] if self.label_selector else []
            query += [("continue", token)] if token else []
            try:
                page = api.call_api(path, "GET", query_params=query, header_params={"Accept": "application/json"},
                                    response_type="object", auth_settings=["BearerToken"],
                                    _return_http_data_only=True, _request_timeout=self.request_timeout)
            except ApiException as exc:
                raise KubernetesDiscoveryError(f"{self._label(ns)}: list Secrets failed: "
                                               f"{exc.status} {exc.reason}{_status_message(exc)}") from None
            except urllib3.exceptions.HTTPError as exc:
                raise KubernetesDiscoveryError(f"{self._label(ns)}: cannot reach the API server "
                                               f"{api.configuration.host}: {_reason(exc)}") from None
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            del page
            if not token:
                return

    def _label(self, ns: str | None = None) -> str:
        where = ns or ",".join(self.namespaces) or "all namespaces"
        return f"kubernetes discovery '{where}'"


def _leaf(tls_crt: str | None) -> CertificateInfo | None:
    """Facts of the leaf in a base64 ``tls.crt``; ``None`` if empty, garbage or CA-only."""
    if not tls_crt:
        return None
    try:
        certs = pki.load_certs(base64.b64decode(tls_crt))
        leaf = pki.leaf(certs) if certs else None
    except (ValueError, pki.PemError):  # binascii.Error is a ValueError
        return None
    if leaf is None:
        return None
    info = pki.describe(leaf)
    return None if info.is_ca else info


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    """A predicate on a labels dict for a Kubernetes label selector, as the API server reads it.

    ``k=v``, ``k==v``, ``k!=v`` (true when k is absent), ``k in (a,b)``, ``k notin (a,b)``
    (true when absent), ``k`` (exists), ``!k`` (absent); requirements joined by commas.
    Raises ValueError naming a requirement it cannot read.
    """
    reqs: list[tuple[str, str, frozenset[str]]] = []  # (in | notin | exists | absent, key, values)
    for part in re.findall(r"(?:[^,(]|\([^)]*\))+", selector):
        req = part.strip()
        if m := re.fullmatch(rf"(?P<key>{_LABEL_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)", req):
            values = frozenset(v.strip() for v in m["values"].split(","))
            bad = [v for v in values if not re.fullmatch(_LABEL_VALUE, v)]
            if bad:
                raise ValueError(f"label selector {selector!r}: {bad[0]!r} is not a valid label value")
            reqs.append((m["op"], m["key"], values))
        elif m := re.fullmatch(rf"(?P<key>{_LABEL_KEY})\s*(?P<op>==|!=|=)\s*(?P<value>{_LABEL_VALUE})", req):
            reqs.append(("notin" if m["op"] == "!=" else "in", m["key"], frozenset([m["value"]])))
        elif m := re.fullmatch(rf"!\s*(?P<key>{_LABEL_KEY})", req):
            reqs.append(("absent", m["key"], frozenset()))
        elif re.fullmatch(_LABEL_KEY, req):
            reqs.append(("exists", req, frozenset()))
        else:
            raise ValueError(f"label selector {selector!r}: cannot read requirement {req!r}")

    def matches(labels: dict[str, str]) -> bool:
        for op, key, values in reqs:
            ok = {"in": labels.get(key) in values, "notin": labels.get(key) not in values,
                  "exists": key in labels, "absent": key not in labels}[op]
            if not ok:
                return False
        return True

    return matches
