"""The inventory file: which certificates exist, who issues them, where they go.

YAML, validated with pydantic. Every error names the file, the path inside it and the
field, the way a person would point at it::

    inventory.yaml: certificates[2].domains[0]: 'exa mple.com' is not a valid DNS name

Secrets are never inline. A field that holds a secret takes a reference instead:
``{env: NAME}`` (an environment variable) or ``{block: NAME}`` (a Prefect Secret block).
Issuer and target sections are kept as plain mappings here (the core knows no Prefect);
``certfleet.blocks.registry`` validates each against its kind's block model, with the same error
format (:func:`format_errors`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from certfleet import names, pki
from certfleet.models import Endpoint, KeyType

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# Field names that hold secrets: a plain string there is refused (use a reference).
_SECRET_FIELD = re.compile(r"(secret|password|passphrase|token|hmac|private_key|api_key)", re.I)


class InventoryError(ValueError):
    """One or more problems in an inventory file; ``problems`` lists them one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def format_errors(source: str, exc: ValidationError, prefix: tuple = ()) -> list[str]:
    """pydantic errors as ``source: path.to[0].field: message`` lines."""
    lines = []
    for err in exc.errors():
        loc = _loc(prefix + tuple(p for p in err["loc"] if p not in ("function-after", "str")))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {loc}: {msg}")
    return lines


class SecretRef(BaseModel):
    """Where a secret lives: an environment variable or a Prefect Secret block."""

    model_config = ConfigDict(extra="forbid")
    env: str | None = Field(None, description="Name of an environment variable holding the secret")
    block: str | None = Field(None, description="Name of a Prefect Secret block holding the secret")

    @model_validator(mode="after")
    def _one(self) -> "SecretRef":
        if (self.env is None) == (self.block is None):
            raise ValueError("a secret reference needs exactly one of 'env' or 'block'")
        return self


class EndpointSpec(BaseModel):
    """A TLS endpoint: connect to host:port and send SNI (default: the first domain)."""

    model_config = ConfigDict(extra="forbid")
    host: str = Field(description="Address to connect to: a name, an IPv4 or an IPv6 address")
    port: int = Field(443, ge=1, le=65535, description="TCP port")
    sni: str | None = Field(None, description="Server name to send; default: the certificate's first domain")
    target: str | None = Field(None, description="The target that feeds this endpoint (verifies that target's deploy; enables its rollback)")

    @classmethod
    def parse(cls, value: Any) -> Any:
        """Accept ``host:port``, ``[v6]:port`` and ``sni@host:port`` shorthands."""
        if not isinstance(value, str):
            return value
        sni = None
        if "@" in value:
            sni, value = value.split("@", 1)
        m = re.match(r"^\[(?P<h6>[^\]]+)\](?::(?P<p6>\d+))?$|^(?P<h>[^:]+)(?::(?P<p>\d+))?$", value)
        if not m:
            if value.count(":") >= 2 and "[" not in value:
                host, _, port = value.rpartition(":")
                hint = f"[{host}]:{port}" if port.isdigit() else f"[{value}]:443"
                raise ValueError(f"'{value}' is not host:port; write an IPv6 address in brackets, e.g. '{hint}'")
            raise ValueError(f"'{value}' is not host:port")
        host = m.group("h6") or m.group("h")
        port = int(m.group("p6") or m.group("p") or 443)
        return {"host": host, "port": port, "sni": sni}


class CertificateSpec(BaseModel):
    """One certificate: its names, its key, its issuer, where it goes, where it is served."""

    model_config = ConfigDict(extra="forbid")
    _by_target: dict | None = PrivateAttr(None)
    name: str = Field(description="Unique name (lowercase letters, digits, . _ -)")
    domains: list[str] = Field(min_length=1, description="DNS names (SANs); the first is the subject CN")
    key_type: KeyType = Field(KeyType.EC_P256, description="ec-p256 (default), ec-p384, rsa-2048, rsa-3072, rsa-4096")
    issuer: str = Field(description="Name of an issuer in the 'issuers' section")
    targets: list[str] = Field(default_factory=list, description="Names of targets in the 'targets' section")
    endpoints: list[EndpointSpec] = Field(default_factory=list, description="TLS endpoints that must serve this certificate")
    canary_targets: list[str] = Field(default_factory=list, description="Targets deployed and verified first; the rest only if they pass")
    reuse_key: bool = Field(False, description="Keep the private key across renewals (default: a new key each time)")
    trust_bundle: str | None = Field(None, description="PEM roots to verify endpoints against (default: the inventory's)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"'{v}' is not a valid certificate name (lowercase letters, digits, '.', '_', '-')")
        return v

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        # Collect per-item errors through a nested validator so the index shows in the path.
        return v

    @field_validator("endpoints", mode="before")
    @classmethod
    def _endpoints(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [EndpointSpec.parse(item) for item in v]
        return v

    def endpoint_list(self, target: str | None = None) -> list[Endpoint]:
        """Endpoints of this certificate; with ``target``, only those that target feeds."""
        if self._by_target is None:  # built once: a fan-out asks once per target
            every: list[Endpoint] = []
            by_target: dict[str, list[Endpoint]] = {}
            for e in self.endpoints:
                ep = Endpoint(e.host, e.port, e.sni or self.domains[0])
                every.append(ep)
                if e.target is not None:
                    by_target.setdefault(e.target, []).append(ep)
            self._by_target = {"every": every, "target": by_target}
        if target is None:
            return list(self._by_target["every"])
        return list(self._by_target["target"].get(target, ()))


class StoreSpec(BaseModel):
    """Where issued certificates and keys live. Backend settings pass through to its block."""

    model_config = ConfigDict(extra="allow")
    kind: str = Field("local", description="'local' (a directory; the default), 's3' or 'secrets-manager'")
    path: str = Field("store", description="Directory of the local store, relative to the inventory file")
    keep_versions: int | None = Field(10, ge=2, description="Versions kept per certificate (never the current one or the one before it); null keeps all")
    encryption_key: SecretRef | None = Field(None, description="Encrypt private keys at rest: {env: NAME} or {block: NAME} holding base64 32-byte keys, comma separated (first encrypts)")

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in ("local", "s3", "secrets-manager"):
            raise ValueError(f"unknown store kind '{v}' (known: local, s3, secrets-manager)")
        return v


class Inventory(BaseModel):
    """The whole file. ``source`` and ``base_dir`` are filled in by :func:`load`."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(1, description="Schema version; 1")
    store: StoreSpec = Field(default_factory=StoreSpec)
    trust_bundle: str | None = Field(None, description="PEM roots that endpoints are verified against")
    issuers: dict[str, dict[str, Any]] = Field(description="Issuers by name; each has a 'kind' or a 'block'")
    targets: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Targets by name; each has a 'kind' or a 'block'")
    certificates: list[CertificateSpec] = Field(description="The certificates certfleet manages")
    discovery: list[dict[str, Any]] = Field(default_factory=list, description="Where else to look for live certificates (kind: tls, files, acm, kubernetes, s3)")

    source: str = Field("inventory.yaml", exclude=True)
    base_dir: str = Field(".", exclude=True)

    def certificate(self, name: str) -> CertificateSpec:
        for c in self.certificates:
            if c.name == name:
                return c
        raise KeyError(f"{self.source}: no certificate named '{name}' (known: {', '.join(c.name for c in self.certificates)})")

    def resolve_path(self, p: str | None) -> Path | None:
        if p is None:
            return None
        path = Path(p).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path

    def trust_bundle_for(self, cert: CertificateSpec) -> Path | None:
        return self.resolve_path(cert.trust_bundle or self.trust_bundle)

    def store_path(self) -> Path:
        return self.resolve_path(self.store.path)  # type: ignore[return-value]


def _semantic_problems(inv: Inventory) -> list[str]:
    """Cross-references and values pydantic cannot see on its own."""
    src, out = inv.source, []
    seen: dict[str, int] = {}
    for i, cert in enumerate(inv.certificates):
        where = f"{src}: certificates[{i}]"
        if cert.name in seen:
            out.append(f"{where}.name: '{cert.name}' is already used by certificates[{seen[cert.name]}]")
        seen.setdefault(cert.name, i)
        for j, d in enumerate(cert.domains):
            bad = names.name_problem(d)  # no certfleet issuer issues IP SANs (see certfleet.names)
            if bad is not None:
                out.append(f"{where}.domains[{j}]: {bad[1]}")
            elif not pki.is_valid_dns_name(d):
                out.append(f"{where}.domains[{j}]: '{d}' is not a valid DNS name")
        if cert.issuer in inv.issuers and isinstance(inv.issuers[cert.issuer], dict):
            fb = inv.issuers[cert.issuer].get("fallback")
            if fb is not None and fb not in inv.issuers:
                out.append(f"{src}: issuers.{cert.issuer}.fallback: unknown issuer '{fb}'")
        if cert.issuer not in inv.issuers:
            out.append(f"{where}.issuer: unknown issuer '{cert.issuer}' (known: {', '.join(sorted(inv.issuers)) or 'none'})")
        for j, t in enumerate(cert.targets):
            if t not in inv.targets:
                out.append(f"{where}.targets[{j}]: unknown target '{t}' (known: {', '.join(sorted(inv.targets)) or 'none'})")
        for j, t in enumerate(cert.canary_targets):
            if t not in cert.targets:
                out.append(f"{where}.canary_targets[{j}]: '{t}' is not one of this certificate's targets")
        for j, e in enumerate(cert.endpoints):
            if e.target is not None and e.target not in cert.targets:
                out.append(f"{where}.endpoints[{j}].target: '{e.target}' is not one of this certificate's targets")
            sni = e.sni or cert.domains[0]
            if pki.is_valid_dns_name(cert.domains[0]) and not pki.san_covers(tuple(d.lower() for d in cert.domains), sni):
                out.append(f"{where}.endpoints[{j}].sni: '{sni}' is not covered by the certificate's domains")
    for i, src_cfg in enumerate(inv.discovery):
        if not isinstance(src_cfg, dict) or "kind" not in src_cfg:
            out.append(f"{src}: discovery[{i}]: needs 'kind' (tls, files, acm, kubernetes, s3)")
        else:
            out += _inline_secrets(f"{src}: discovery[{i}]", src_cfg)
    out += _inline_secrets(f"{src}: store", inv.store.model_extra or {})
    for section in ("issuers", "targets"):
        for name, cfg in getattr(inv, section).items():
            where = f"{src}: {section}.{name}"
            if not isinstance(cfg, dict):
                out.append(f"{where}: must be a mapping with 'kind' (or 'block')")
                continue
            if "kind" not in cfg and "block" not in cfg:
                out.append(f"{where}: needs 'kind' (or 'block' naming a saved Prefect block)")
            out += _inline_secrets(where, cfg)
    return out


def _inline_secrets(where: str, cfg: Any, path: str = "") -> list[str]:
    out = []
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            p = f"{path}.{k}" if path else str(k)
            if _SECRET_FIELD.search(str(k)) and isinstance(v, (str, int)) and not str(k).endswith(("_name", "_file", "_path", "_algorithm")):
                out.append(f"{where}.{p}: secrets are never inline; use {{env: NAME}} or {{block: NAME}}")
            elif isinstance(v, (dict, list)):
                out += _inline_secrets(where, v, p)
    elif isinstance(cfg, list):
        for i, v in enumerate(cfg):
            out += _inline_secrets(where, v, f"{path}[{i}]")
    return out


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int):
        self.key, self.line, self.first = key, line, first
        super().__init__(f"duplicate key {key!r}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML lets the last win)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports unhashable keys
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse(text: str, source: str = "inventory.yaml", base_dir: str | Path = ".") -> Inventory:
    """Parse and validate inventory text. Raises InventoryError listing every problem."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise InventoryError([f"{source}: line {exc.line}: duplicate key '{exc.key}' (first at line {exc.first}); "
                              "YAML would silently keep only the last one"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise InventoryError([f"{source}: {at}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if not isinstance(data, dict):
        raise InventoryError([f"{source}: the top level must be a mapping with 'issuers' and 'certificates'"])
    try:
        inv = Inventory.model_validate({**data, "source": source, "base_dir": str(base_dir)})
    except ValidationError as exc:
        raise InventoryError(format_errors(source, exc)) from None
    problems = _semantic_problems(inv)
    if problems:
        raise InventoryError(problems)
    return inv


def load(path: str | Path) -> Inventory:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InventoryError([f"{path}: cannot read inventory ({exc.strerror})"]) from None
    return parse(text, source=str(path), base_dir=path.resolve().parent)
