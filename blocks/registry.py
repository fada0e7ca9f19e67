"""From inventory sections to block instances: one table of kinds, one error format.

An issuer or target in the inventory is either inline configuration with a ``kind``
(validated against that kind's block model) or ``block: <slug>/<name>``, a block saved
on the Prefect server (``Block.load``). Secret references (``{env: NAME}`` or
``{block: NAME}``) are resolved here, at the last moment, into SecretStr fields.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import ValidationError

from certfleet.blocks.solvers import DEV_INSTALL_HINT, DEV_SOLVERS
from certfleet.inventory import Inventory, InventoryError, format_errors


@cache  # imported once: a 1,000-target fan-out would queue on the import lock
def _issuer_kinds() -> dict[str, type[Block]]:
    from certfleet.blocks.issuers.acme import AcmeIssuer
    from certfleet.blocks.issuers.local_ca import LocalCAIssuer

    return {"acme": AcmeIssuer, "local-ca": LocalCAIssuer}


@cache  # imported once: a 1,000-target fan-out would queue on the import lock
def _solver_kinds() -> dict[str, type[Block]]:
    from certfleet.blocks.solvers import dev_solver_kinds
    from certfleet.blocks.solvers.cloudflare import CloudflareSolver
    from certfleet.blocks.solvers.rfc2136 import Rfc2136Solver
    from certfleet.blocks.solvers.route53 import Route53Solver
    from certfleet.blocks.solvers.webroot import WebrootSolver

    return {"rfc2136": Rfc2136Solver, "route53": Route53Solver,
            "cloudflare": CloudflareSolver, "webroot": WebrootSolver, **dev_solver_kinds()}


@cache  # imported once: a 1,000-target fan-out would queue on the import lock
def _target_kinds() -> dict[str, type[Block]]:
    from certfleet.blocks.targets.acm import AcmTarget
    from certfleet.blocks.targets.file import FileTarget
    from certfleet.blocks.targets.kubernetes import KubernetesSecretTarget
    from certfleet.blocks.targets.s3 import S3Target
    from certfleet.blocks.targets.secrets_manager import SecretsManagerTarget
    from certfleet.blocks.targets.ssh import SshTarget
    from certfleet.blocks.targets.webhook import WebhookTarget

    return {"file": FileTarget, "kubernetes": KubernetesSecretTarget, "ssh": SshTarget, "webhook": WebhookTarget,
            "s3": S3Target, "acm": AcmTarget, "secrets-manager": SecretsManagerTarget}


@cache  # imported once: a 1,000-target fan-out would queue on the import lock
def _discovery_kinds() -> dict[str, type[Block]]:
    from certfleet.blocks.discovery.acm import AcmDiscovery
    from certfleet.blocks.discovery.files import FilesDiscovery
    from certfleet.blocks.discovery.kubernetes import KubernetesDiscovery
    from certfleet.blocks.discovery.s3 import S3Discovery
    from certfleet.blocks.discovery.tls import TlsDiscovery

    return {"files": FilesDiscovery, "tls": TlsDiscovery, "acm": AcmDiscovery,
            "kubernetes": KubernetesDiscovery, "s3": S3Discovery}


# Fields whose relative paths are resolved against the inventory file's directory.
_PATH_FIELDS = ("_path", "directory", "ca_bundle", "paths", "webroot")
# ...except paths that live on another machine.
_REMOTE_PATHS = {"ssh": {"fullchain_path", "key_path"}}


def _resolve(value: Any, key: str, base: Path, where: str) -> Any:
    if isinstance(value, dict) and set(value) <= {"env", "block"} and len(value) == 1:
        return _secret(value, where)
    if isinstance(value, list) and key.endswith(_PATH_FIELDS):
        return [_resolve(v, key, base, where) for v in value]
    if isinstance(value, str) and key.endswith(_PATH_FIELDS) and not key.endswith("_url"):
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else base / p)
    return value


def _secret(ref: dict, where: str) -> str:
    if "env" in ref:
        value = os.environ.get(ref["env"])
        if value is None:
            raise InventoryError([f"{where}: environment variable {ref['env']} is not set"])
        return value
    from prefect.blocks.system import Secret

    try:
        return Secret.load(ref["block"]).get()
    except Exception as exc:  # a missing block, or no server
        raise InventoryError([f"{where}: cannot load Secret block '{ref['block']}' ({type(exc).__name__})"]) from None


def _build(kinds: dict[str, type[Block]], section: str, name: str, cfg: dict, inv: Inventory,
           what: str | None = None) -> Block:
    where = f"{inv.source}: {section}.{name}"
    if "block" in cfg:
        try:
            return Block.load(cfg["block"])
        except Exception as exc:
            raise InventoryError([f"{where}.block: cannot load block '{cfg['block']}' ({exc})"]) from None
    kind = cfg.get("kind")
    if kind not in kinds and what == "solver" and kind in DEV_SOLVERS:
        raise InventoryError([f"{where}.kind: solver kind '{kind}' is a test tool (Pebble's fake DNS), offered only "
                              f"with the development tools: {DEV_INSTALL_HINT}; in production use one of "
                              f"{', '.join(sorted(kinds))}"])
    if kind not in kinds:
        raise InventoryError([f"{where}.kind: unknown {what or section.rstrip('s')} kind '{kind}' (known: {', '.join(sorted(kinds))})"])
    base = Path(inv.base_dir)
    fields: dict[str, Any] = {}
    for key, value in cfg.items():
        if key == "kind":
            continue
        if key == "credentials" and isinstance(value, dict):
            fields[key] = {k: _resolve(v, k, base, f"{where}.credentials.{k}") for k, v in value.items()}
            continue
        if key == "solver" and isinstance(value, dict):
            fields[key] = _build(_solver_kinds(), section, f"{name}.solver", value, inv, what="solver")
            continue
        if key in _REMOTE_PATHS.get(kind, ()):
            fields[key] = value
            continue
        fields[key] = _resolve(value, key, base, f"{where}.{key}")
    try:
        return kinds[kind].model_validate(fields)
    except ValidationError as exc:
        raise InventoryError(format_errors(inv.source, exc, (section, name))) from None


def issuer(inv: Inventory, name: str) -> Block:
    """The issuer block ``name`` of the inventory."""
    cfg = dict(inv.issuers[name])
    cfg.pop("fallback", None)  # a flow-level choice (emergency rotation), not issuer configuration
    cfg.pop("rate_limits", None)  # the ledger's (certfleet.tasks.common.ledger_for), not the issuer block's
    if cfg.get("kind") == "acme" and "account_key_path" not in cfg:
        # One ACME account per directory, kept beside the store: created once, reused.
        cfg["account_key_path"] = str(inv.store_path() / "_accounts" / f"{name}.key")
    return _build(_issuer_kinds(), "issuers", name, cfg, inv)


def target(inv: Inventory, name: str) -> Block:
    return _build(_target_kinds(), "targets", name, inv.targets[name], inv)


def store(inv: Inventory):
    """The inventory's store: the local directory (default), or an S3 / Secrets Manager block."""
    from certfleet.store import LocalStore, StoreError, parse_encryption_keys

    spec = inv.store
    where = f"{inv.source}: store.encryption_key"
    ref = spec.encryption_key.model_dump(exclude_none=True) if spec.encryption_key else None
    if spec.kind == "local":
        try:
            keys = parse_encryption_keys(_secret(ref, where), where) if ref else None
        except StoreError as exc:
            raise InventoryError([str(exc)]) from None
        return LocalStore(inv.store_path(), keep_versions=spec.keep_versions, encryption_keys=keys)
    from certfleet.blocks.stores.s3 import S3Store
    from certfleet.blocks.stores.secrets_manager import SecretsManagerStore

    cfg = {k: v for k, v in spec.model_dump(exclude={"path", "encryption_key"}).items() if v is not None}
    if ref:
        cfg["encryption_keys"] = ref
    return _build({"s3": S3Store, "secrets-manager": SecretsManagerStore}, "store", spec.kind, cfg, inv)


def storage(inv: Inventory):
    """The inventory's ``Storage`` (``certfleet.storage``): where the state every worker
    shares lives beside the certificates — rate-limit ledgers, ARI chosen times.

    A local store is a ``LocalStorage`` on its directory. A store block offers its own
    through ``get_storage()``; until the S3 / Secrets Manager adapters do, that state
    stays in the inventory's local store path, and a warning says so (one worker only).
    """
    from certfleet.storage import LocalStorage

    if inv.store.kind == "local":
        return LocalStorage(inv.store_path())
    block = store(inv)
    get_storage = getattr(block, "get_storage", None)
    if get_storage is None:
        import logging

        logging.getLogger(__name__).warning(
            "%s: store.kind %s offers no shared storage yet: rate-limit ledger and ARI times stay in %s "
            "(not shared between workers)", inv.source, inv.store.kind, inv.store_path())
        return LocalStorage(inv.store_path())
    return get_storage()


def discovery_source(inv: Inventory, index: int) -> Block:
    return _build(_discovery_kinds(), "discovery", str(index), inv.discovery[index], inv)


def check_all(inv: Inventory) -> None:
    """Build every issuer and target once: bad configuration fails before any work."""
    problems: list[str] = []
    for name in inv.issuers:
        try:
            issuer(inv, name)
        except InventoryError as exc:
            problems += exc.problems
    for name in inv.targets:
        try:
            target(inv, name)
        except InventoryError as exc:
            problems += exc.problems
    for i in range(len(inv.discovery)):
        try:
            discovery_source(inv, i)
        except InventoryError as exc:
            problems += exc.problems
    if problems:
        raise InventoryError(problems)


def missing_paths(inv: Inventory) -> list[str]:
    """Files that would fail at run time: a trust bundle, a file target's directory.

    ``certfleet validate`` reports them. Runs do not refuse the whole inventory for
    them: a target whose directory is missing fails alone, and the others proceed.
    """
    out: list[str] = []
    bundles = [("trust_bundle", inv.trust_bundle)]
    bundles += [(f"certificates[{i}].trust_bundle", c.trust_bundle) for i, c in enumerate(inv.certificates)]
    for where, value in bundles:
        path = inv.resolve_path(value)
        if path is not None and not path.is_file():
            out.append(f"{inv.source}: {where}: {path} does not exist")
    for name, cfg in inv.targets.items():
        if not isinstance(cfg, dict) or cfg.get("kind") != "file":
            continue
        for key in ("fullchain_path", "key_path", "pkcs12_path"):
            value = cfg.get(key)
            if not isinstance(value, str):
                continue
            parent = inv.resolve_path(value).parent  # type: ignore[union-attr]
            if not parent.is_dir():
                out.append(f"{inv.source}: targets.{name}.{key}: directory {parent} does not exist")
    return out
