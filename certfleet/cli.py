"""The ``certfleet`` command: the one composition root allowed to import flows.

Each subcommand is a short function: check the input (bad input exits 2 before any
work, and before Prefect starts), then either do the Prefect-free thing itself
(``status``, ``validate``, ``init``, ``import``) or run one flow in-process and print
its state. Flows log their own progress; where the CLI itself loops (probing many
endpoints, importing many files) it draws a progress line on stderr.

Exit codes are for cron and CI: 0 all good, 1 something needs attention, 2 usage or
input error.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import sys
import textwrap
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ATTENTION, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input the user can fix: printed on stderr, exit 2, nothing written."""


# -- output helpers -----------------------------------------------------------------

def to_jsonable(obj: Any) -> Any:
    """Flow results (dataclasses, pydantic models, enums, datetimes, paths) as plain JSON."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [to_jsonable(v) for v in obj]
        return sorted(items, key=str) if isinstance(obj, (set, frozenset)) else items
    return str(obj)


def _dump(data: Any) -> None:
    print(json.dumps(to_jsonable(data), indent=2))


_COLOURS = {"OK": "32", "DUE": "33", "NOT_ISSUED": "33", "UNMANAGED": "33"}  # the rest: red


def _use_colour(stream=None) -> bool:
    stream = stream or sys.stdout
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _paint(text: str, status: str, colour: bool) -> str:
    return f"\033[{_COLOURS.get(status, '31')}m{text}\033[0m" if colour else text


def _print_table(rows: list[dict], columns: list[str], colour: bool = False) -> None:
    if not rows:
        print("(nothing)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        cells = []
        for c in columns:
            cell = str(r.get(c, "")).ljust(widths[c])
            cells.append(_paint(cell, str(r.get("status")), colour) if c == "status" else cell)
        print("  ".join(cells).rstrip())


class Progress:
    """``\\r[12/200] probing ...`` on a terminal; plain lines when stderr is a file or pipe."""

    def __init__(self, total: int, stream=None):
        self.total, self.stream = total, stream or sys.stderr
        self.tty = self.stream.isatty()
        self._width = 0

    def step(self, done: int, what: str) -> None:
        line = f"[{done}/{self.total}] {what}"
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = max(self._width, len(line))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


def _short(serial: str | None, n: int = 16) -> str:
    if not serial:
        return "-"
    return serial if len(serial) <= n else serial[:n] + "…"


# -- input checks shared by the flow commands -------------------------------------

def _load_checked(path: str, names: list[str] | None = None, targets: list[str] | None = None):
    """The inventory, with every issuer and target built once: errors exit 2, before Prefect."""
    from blocks import registry
    from certfleet import inventory

    inv = inventory.load(path)
    registry.check_all(inv)
    known = [c.name for c in inv.certificates]
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise UsageError(f"{inv.source}: no certificate named {', '.join(repr(u) for u in unknown)} (known: {', '.join(known)})")
    unknown = [t for t in targets or () if t not in inv.targets]
    if unknown:
        raise UsageError(f"{inv.source}: no target named {', '.join(repr(u) for u in unknown)} (known: {', '.join(sorted(inv.targets)) or 'none'})")
    return inv


def _finish(flow_name: str, state, args) -> int:
    """Print a flow's final state (and its data with --json); 0 when Completed, else 1."""
    data = None
    try:
        data = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - no result to show is fine
        data = None
    if isinstance(data, BaseException):
        data = None
    if getattr(args, "json", False):
        _dump({"flow": flow_name, "state": state.type.value, "ok": state.is_completed(),
               "message": state.message, "data": data})
    else:
        print(f"{flow_name}: {state.type.value}: {state.message or ''}".rstrip(": "))
    return EXIT_OK if state.is_completed() else EXIT_ATTENTION


# -- status -------------------------------------------------------------------------

PROBE_BATCH = 50  # endpoints per progress step; each batch is probed concurrently


def fleet_rows(inventory_path: str, names: list[str] | None = None, *, discovery: bool = True,
               targets: bool = True, progress: bool = True) -> list:
    """The monitor's rows (``certfleet.fleet``), computed here without Prefect.

    What the store issued, what each target holds, what each endpoint serves — and,
    with ``discovery``, certificates found live that the inventory does not name.
    """
    from blocks import registry
    from certfleet import distribution, fleet
    from certfleet.probe import probe_sync

    inv = _load_checked(inventory_path, names)
    store = registry.store(inv)
    specs = [c for c in inv.certificates if not names or c.name in names]
    now = datetime.now(timezone.utc)
    stored = {}
    for spec in specs:
        cur = store.current(spec.name)
        stored[spec.name] = cur.info if cur else None

    # Endpoints grouped by trust bundle, probed in concurrent batches.
    work: list[tuple[str, Any, Any]] = []  # (certificate, endpoint, roots path)
    for spec in specs:
        bundle = inv.trust_bundle_for(spec)
        work += [(spec.name, e, bundle) for e in spec.endpoint_list()]
    checks = sum(len(s.targets) for s in specs) if targets else 0
    sources = len(inv.discovery) if discovery and not names else 0
    bar = Progress(len(work) + checks + sources) if progress else None
    rows, done, roots_cache = [], 0, {}
    for i in range(0, len(work), PROBE_BATCH):
        batch = work[i:i + PROBE_BATCH]
        by_roots: dict[Any, list[int]] = {}
        for j, (_, _, bundle) in enumerate(batch):
            by_roots.setdefault(bundle, []).append(j)
        results: list = [None] * len(batch)
        for bundle, idx in by_roots.items():
            if bundle not in roots_cache:
                try:
                    roots_cache[bundle] = distribution.load_roots(bundle)
                except (OSError, ValueError) as exc:  # missing file, or not PEM
                    why = getattr(exc, "strerror", None) or exc
                    raise UsageError(f"{inv.source}: trust bundle {bundle}: cannot read ({why})") from None
            for j, r in zip(idx, probe_sync([batch[j][1] for j in idx], roots=roots_cache[bundle])):
                results[j] = r
        rows += [fleet.endpoint_row(name, stored[name], r, now) for (name, _, _), r in zip(batch, results)]
        done += len(batch)
        if bar:
            bar.step(done, f"probed {done} of {len(work)} endpoints")
    if targets:
        for spec in specs:
            for t in spec.targets:
                try:
                    held, error = registry.target(inv, t).current(), None
                except Exception as exc:  # noqa: BLE001 - an unreachable target is a row
                    held, error = None, str(exc) or type(exc).__name__
                rows.append(fleet.target_row(spec.name, stored[spec.name], t, held, error))
                done += 1
                if bar:
                    bar.step(done, f"asked target '{t}' what it holds")
    if sources:
        managed = [fleet.Managed(s.name, tuple(s.domains), frozenset(v.serial for v in store.versions(s.name)),
                                 stored[s.name]) for s in inv.certificates]
        for i in range(len(inv.discovery)):
            try:
                found = registry.discovery_source(inv, i).scan()
                rows += fleet.discovered_rows(found, managed, now)
            except Exception as exc:  # noqa: BLE001 - one source failing is a row, not a crash
                rows.append(fleet.Row(certificate="", kind="discovered", location=f"discovery[{i}]",
                                      status=fleet.Status.UNREACHABLE, reason=f"discovery[{i}]: {exc}"))
            done += 1
            if bar:
                bar.step(done, f"scanned discovery[{i}]")
    if bar:
        bar.close()
    return rows


def _row_json(row) -> dict:
    return {"certificate": row.certificate or None, "kind": row.kind, "where": row.location,
            "status": str(row.status), "reason": row.reason, "serving": row.seen_serial,
            "issued": row.issued_serial, "not_after": row.not_after,
            "days_left": None if row.days_left is None else round(row.days_left, 2)}


def _row_table(row) -> dict:
    return {"certificate": row.certificate or "(unmanaged)", "kind": row.kind, "where": row.location,
            "status": str(row.status), "serving": _short(row.seen_serial), "issued": _short(row.issued_serial),
            "expires": f"{row.not_after:%Y-%m-%d %H:%M}" if row.not_after else "-",
            "days left": "-" if row.days_left is None else f"{row.days_left:.1f}"}


def cmd_status(args) -> int:
    rows = fleet_rows(args.inventory, args.names or None, discovery=not args.no_discovery,
                      targets=not args.no_targets, progress=not args.quiet)
    ok = all(str(r.status) == "OK" for r in rows)
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.status)] = counts.get(str(r.status), 0) + 1
    if args.json:
        _dump({"ok": ok, "counts": counts, "rows": [_row_json(r) for r in rows]})
    else:
        colour = _use_colour()
        _print_table([_row_table(r) for r in rows],
                     ["certificate", "kind", "where", "status", "serving", "issued", "expires", "days left"], colour)
        attention = [r for r in rows if str(r.status) != "OK"]
        if attention:
            print("\nNeeds attention:")
            for r in attention:
                print(f"  {_paint(str(r.status), str(r.status), colour)}  {r.reason}")
        print("\n" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if rows else "")
    return EXIT_OK if ok else EXIT_ATTENTION


# -- validate, init -----------------------------------------------------------------

def cmd_validate(args) -> int:
    inv = _load_checked(args.inventory)
    print(f"{args.inventory}: {len(inv.certificates)} certificates, {len(inv.issuers)} issuers, "
          f"{len(inv.targets)} targets, {len(inv.discovery)} discovery sources: OK")
    return EXIT_OK


SCAFFOLD = """\
# certfleet inventory — what certificates exist, who issues them, where they go,
# and which endpoints must serve them. Reference: docs/inventory.md.
# Check it with:  certfleet validate -i {path}
version: 1

# The store keeps every issued version (certificate + key) and is the source of truth.
# Relative paths are relative to this file. See docs/stores.md (S3, Secrets Manager,
# encryption at rest).
store:
  path: store
  keep_versions: 10
  # encryption_key: {{env: CERTFLEET_STORE_KEY}}   # base64 32-byte key(s), comma separated

# PEM roots that endpoints are verified against (what "valid" means for your users).
# The local CA below writes its root to ca/root.pem on first use.
trust_bundle: ca/root.pem

issuers:
  # A local CA for internal names and first steps; it is created in ./ca on first use.
  internal:
    kind: local-ca
    directory: ca
    validity_days: 90
  # An ACME CA (Let's Encrypt) with a dns-01 solver; see docs/solvers.md.
  # letsencrypt:
  #   kind: acme
  #   directory_url: https://acme-v02.api.letsencrypt.org/directory
  #   email: ops@example.com
  #   solver:
  #     kind: rfc2136
  #     nameserver: ns1.example.com
  #     tsig_name: acme-key
  #     tsig_secret: {{env: TSIG_SECRET}}   # secrets are references, never inline

targets:
  # Files on this machine, then a config test and a reload; see docs/targets.md
  # (ssh, s3, acm, secrets-manager, kubernetes, webhook).
  web-1:
    kind: file
    fullchain_path: tls/example.pem
    key_path: tls/example.key
    # config_test_command: [nginx, -t]
    # reload_command: [nginx, -s, reload]

certificates:
  - name: example
    domains: [example.internal, www.example.internal]
    issuer: internal
    targets: [web-1]
    # Endpoints are checked from the user's side of the wire: "sni@host:port" or "host:port".
    # endpoints: ["203.0.113.10:443", "www.example.internal@203.0.113.10:443"]

# Where else to look for live certificates (reported as UNMANAGED until adopted);
# see docs/discovery.md.
# discovery:
#   - {{kind: tls, endpoints: ["203.0.113.10:443"]}}
"""


def block_classes() -> list[type]:
    """Every block type certfleet defines: issuers, solvers, targets, stores, discovery, notifiers."""
    from blocks import registry
    from blocks.aws import AwsCredentials
    from blocks.stores.s3 import S3Store
    from blocks.stores.secrets_manager import SecretsManagerStore

    classes: list[type] = [AwsCredentials, S3Store, SecretsManagerStore]
    for kinds in (registry._issuer_kinds, registry._solver_kinds, registry._target_kinds, registry._discovery_kinds):
        classes += list(kinds().values())
    try:
        from blocks.notifiers.slack import SlackNotifier
        classes.append(SlackNotifier)
    except ImportError:  # notifiers are optional
        pass
    return list(dict.fromkeys(classes))


def register_blocks(classes: list[type] | None = None) -> list[str]:
    """Register certfleet's block types (nested ones too) with the Prefect API; returns their slugs."""
    slugs = []
    for cls in classes or block_classes():
        cls.register_type_and_schema()
        slugs.append(cls.get_block_type_slug())
    return slugs


def cmd_init(args) -> int:
    if args.directory is not None or not args.register_blocks:
        directory = Path(args.directory or ".")
        path = directory / "inventory.yaml"
        if path.exists():
            raise UsageError(f"{path}: already exists; not overwritten (move it away, or edit it)")
        directory.mkdir(parents=True, exist_ok=True)
        with open(path, "x") as f:  # "x": never overwrite, even if it appeared meanwhile
            f.write(SCAFFOLD.format(path=path))
        print(f"wrote {path}\nnext: edit it, then `certfleet validate -i {path}` and `certfleet status -i {path}`")
    if args.register_blocks:
        from prefect.settings import PREFECT_API_URL

        slugs = register_blocks()
        where = PREFECT_API_URL.value() or "a temporary local server (set PREFECT_API_URL to register with yours)"
        print(f"registered {len(slugs)} block types with {where}:")
        for s in slugs:
            print(f"  {s}")
    return EXIT_OK


# -- import -------------------------------------------------------------------------

@dataclasses.dataclass
class _Adoption:
    name: str
    cert_file: str
    key_file: str
    fullchain: bytes
    key: bytes
    info: Any
    note: str


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read {what} ({exc.strerror})") from None


def _check_adoption(inv, store, name: str, cert_file: str, key_file: str, now: datetime) -> _Adoption:
    """Every check before anything is written; errors name the certificate and the file."""
    from certfleet import pki, policy

    try:
        spec = inv.certificate(name)
    except KeyError:
        known = ", ".join(c.name for c in inv.certificates)
        raise UsageError(f"{inv.source}: no certificate named '{name}' (known: {known}); add it to the inventory first") from None
    label = f"import '{name}'"
    pem, key_pem = _read(cert_file, "the certificate"), _read(key_file, "the private key")
    try:
        certs = pki.load_certs(pem)
    except pki.PemError as exc:
        raise UsageError(f"{label}: {cert_file}: {exc}") from None
    if not certs:
        raise UsageError(f"{label}: {cert_file}: no PEM certificate in it")
    try:
        chain = pki.order_chain(certs)
    except Exception as exc:  # noqa: BLE001 - a bundle with two leaves, say
        raise UsageError(f"{label}: {cert_file}: {exc}") from None
    try:
        key = pki.load_private_key(key_pem)
    except pki.PemError as exc:
        raise UsageError(f"{label}: {key_file}: {exc} (an encrypted key must be decrypted first)") from None
    leaf = chain[0]
    serial = pki.serial_hex(leaf)
    if not pki.key_matches(leaf, key):
        raise UsageError(f"{label}: {key_file} does not match certificate {serial} in {cert_file}; nothing written")
    info = pki.describe(leaf)
    missing = pki.uncovered(info.sans, [d.lower() for d in spec.domains])
    if missing:
        raise UsageError(f"{label}: certificate {serial} in {cert_file} does not cover {', '.join(missing)} "
                         f"(its names: {', '.join(info.sans) or 'none'}; the inventory wants {', '.join(spec.domains)}); nothing written")
    if info.not_after <= now:
        raise UsageError(f"{label}: certificate {serial} in {cert_file} expired {info.not_after:%Y-%m-%d %H:%M}Z; "
                         "nothing to adopt (run `certfleet renew` instead)")
    cur = store.current(name)
    if cur is not None and cur.serial != serial:
        raise UsageError(f"{label}: the store already has version {cur.serial} of '{name}' as current; "
                         "import adopts certificates certfleet does not manage yet; nothing written")
    check = policy.needs_reissue(policy.ReissueInput(tuple(spec.domains), str(spec.key_type), info, now))
    note = f"next renewal: {check.message}" if check.ok else f"the next `certfleet renew` reissues it ({check.reason}: {check.message})"
    return _Adoption(name, cert_file, key_file, pki.to_pem(chain), key_pem, info, note)


def cmd_import(args) -> int:
    if args.from_endpoint:
        raise UsageError("--from-endpoint is not possible: a TLS handshake gives the certificate, never its private key. "
                         "Import from the PEM files the server reads (--cert FILE --key FILE --name NAME), "
                         "or let `certfleet renew` issue a new certificate")
    names, certs, keys = args.name or [], args.cert or [], args.key or []
    if not names or not (len(names) == len(certs) == len(keys)):
        raise UsageError("import needs --name, --cert and --key, once per certificate (got "
                         f"{len(names)} --name, {len(certs)} --cert, {len(keys)} --key)")
    from blocks import registry
    from certfleet import inventory

    inv = inventory.load(args.inventory)
    store = registry.store(inv)
    now = datetime.now(timezone.utc)
    total = len(names)
    bar = Progress(total * 2) if total > 1 else None
    plan = []
    for i, (n, c, k) in enumerate(zip(names, certs, keys), 1):  # every check first: all or nothing
        plan.append(_check_adoption(inv, store, n, c, k, now))
        if bar:
            bar.step(i, f"checked {n}")
    dupes = sorted({a.name for a in plan if [p.name for p in plan].count(a.name) > 1})
    if dupes:
        raise UsageError(f"import: {', '.join(dupes)} given more than once")
    results = []
    for i, a in enumerate(plan, 1):
        version = store.put(a.name, a.fullchain, a.key, issuer=f"imported:{Path(a.cert_file).name}")
        results.append({"certificate": a.name, "serial": version.serial, "not_after": a.info.not_after,
                        "sans": list(a.info.sans), "note": a.note})
        if bar:
            bar.step(total + i, f"stored {a.name}")
    if bar:
        bar.close()
    if args.json:
        _dump({"imported": results})
    else:
        for r in results:
            print(f"imported '{r['certificate']}' serial {r['serial']} (expires {r['not_after']:%Y-%m-%d %H:%M}Z); {r['note']}")
    return EXIT_OK


# -- the flow commands --------------------------------------------------------------

def cmd_run(args) -> int:
    _load_checked(args.inventory, args.names)
    from flows.lifecycle import lifecycle

    state = lifecycle(inventory=args.inventory, certificates=args.names or None,
                      verify_deadline=args.verify_deadline, return_state=True)
    return _finish("lifecycle", state, args)


def cmd_renew(args) -> int:
    _load_checked(args.inventory, args.names)
    from flows.renew import renew

    state = renew(inventory=args.inventory, certificates=args.names, force=args.force, return_state=True)
    return _finish("renew", state, args)


def cmd_distribute(args) -> int:
    _load_checked(args.inventory, args.names, args.target)
    from flows.distribute import distribute

    state = distribute(inventory=args.inventory, certificates=args.names, targets=args.target or None,
                       verify_deadline=args.verify_deadline, return_state=True)
    return _finish("distribute", state, args)


def cmd_verify(args) -> int:
    _load_checked(args.inventory, args.names)
    from flows.verify import verify

    state = verify(inventory=args.inventory, certificates=args.names or None, deadline=args.deadline,
                   return_state=True)
    return _finish("verify", state, args)


def cmd_rotate(args) -> int:
    if not args.emergency:
        raise UsageError("rotate replaces keys and revokes certificates now; say so with --emergency "
                         "(try --dry-run first to see the plan)")
    from blocks import registry
    from certfleet import emergency

    certificates = (args.names or []) + (args.certificate or [])
    inv = _load_checked(args.inventory, certificates, [args.target] if args.target else None)
    try:
        emergency.reason_code(args.reason)
        emergency.select(inv, registry.store(inv), emergency.Selector(
            tuple(certificates), tuple(args.sharing_key_with or ()), args.issuer, args.target))
    except emergency.SelectionError as exc:
        raise UsageError(str(exc)) from None
    from flows.emergency import emergency_rotation

    state = emergency_rotation(inventory=args.inventory, certificates=certificates or None,
                               sharing_key_with=args.sharing_key_with or None, issuer=args.issuer,
                               target=args.target, reason=args.reason, dry_run=args.dry_run,
                               force_revoke=args.force_revoke, verify_deadline=args.verify_deadline,
                               return_state=True)
    return _finish("emergency-rotation", state, args)


def cmd_demo(args) -> int:
    """Build the incident fleet, show it, run the lifecycle once, show it again."""
    from certfleet import demo

    workdir = Path(args.workdir)
    os.environ.setdefault("PREFECT_HOME", str((workdir.parent / ".prefect-home").resolve()))
    print(f"Starting a local fleet in {workdir}: Pebble (ACME CA) and nginx (production + staging) ...")
    fleet = demo.build(workdir)
    columns = ["certificate", "where", "serving", "expires", "issued", "status"]
    colour = _use_colour()
    try:
        print(f"\nInventory: {fleet.inventory}\n\nBEFORE — what production serves (the renewal ran on staging):")
        rows = fleet_rows(str(fleet.inventory), targets=False, progress=False)
        _print_table([_row_table(r) for r in rows], columns, colour)
        print("\nRunning the lifecycle flow (Prefect on SQLite; the first start takes ~20 s) ...")
        from flows.lifecycle import lifecycle

        state = lifecycle(inventory=str(fleet.inventory), verify_deadline=30, return_state=True)
        print(f"\nlifecycle: {state.type.value}: {state.message}")
        print("\nAFTER — what production serves, checked by a TLS handshake per endpoint:")
        rows = fleet_rows(str(fleet.inventory), targets=False, progress=False)
        _print_table([_row_table(r) for r in rows], columns, colour)
        ok = state.is_completed() and all(str(r.status) == "OK" for r in rows)
        print("\nEvery endpoint serves the certificate that was issued." if ok else "\nSome endpoints need attention (see above).")
        print(f"Run it again: certfleet run -i {fleet.inventory}   (nothing to do: no issuance, no write)")
        return EXIT_OK if ok else EXIT_ATTENTION
    finally:
        if args.keep:
            print(f"Pebble and nginx keep running (--keep); stop them with: kill {' '.join(str(p) for p in fleet.pids())}")
        else:
            fleet.stop()


# -- the parser ---------------------------------------------------------------------

def _epilog(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n\nExit codes: 0 all good, 1 something needs attention, 2 usage or input error."


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="certfleet", formatter_class=raw,
        description="Keep every TLS endpoint of a fleet serving a valid, current certificate, "
                    "and prove it from the user's side of the wire.",
        epilog=_epilog("""
            Start here:
              certfleet init ./fleet                 # a commented inventory.yaml to edit
              certfleet validate -i fleet/inventory.yaml
              certfleet status   -i fleet/inventory.yaml   # what every endpoint serves
              certfleet run      -i fleet/inventory.yaml   # renew what is due, distribute, verify

            The inventory defaults to $CERTFLEET_INVENTORY, else ./inventory.yaml.
            Commands that run a flow use $PREFECT_API_URL when set (the runs show in your
            Prefect UI), else a temporary local Prefect server. Docs: docs/cli.md."""),
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, epilog: str, func, inventory: bool = True, json_: bool = False):
        sp = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".",
                            epilog=_epilog(epilog), formatter_class=raw)
        if inventory:
            sp.add_argument("-i", "--inventory", default=os.environ.get("CERTFLEET_INVENTORY", "inventory.yaml"),
                            help="inventory file (default: $CERTFLEET_INVENTORY or ./inventory.yaml)")
        if json_:
            sp.add_argument("--json", action="store_true", help="print the result as JSON on stdout (logs go to stderr)")
        sp.set_defaults(func=func)
        return sp

    sp = add("init", "write a commented inventory.yaml to start from, and/or register certfleet's block types", """
        Examples:
          certfleet init ./fleet                       # writes ./fleet/inventory.yaml (never overwrites)
          certfleet init --register-blocks             # only register the block types with $PREFECT_API_URL
          certfleet init ./fleet --register-blocks     # both

        The scaffold validates as it is: a local CA issuer (created in ./ca on first use)
        and one file target. Registering block types makes every certfleet block
        (issuers, solvers, targets, stores, discovery, notifiers) configurable in the UI.""",
        cmd_init, inventory=False)
    sp.add_argument("directory", nargs="?", help="directory for inventory.yaml (default: the current one)")
    sp.add_argument("--register-blocks", action="store_true", help="register certfleet's block types with the Prefect API")

    sp = add("validate", "check the inventory and every issuer, target and discovery configuration", """
        Examples:
          certfleet validate -i inventory.yaml

        Every problem is printed on stderr as `file: path.to[0].field: message`, and
        nothing runs. Secret references ({env: NAME}) must resolve.""", cmd_validate)

    sp = add("status", "what every endpoint serves and every target holds, versus what was issued", """
        Examples:
          certfleet status                          # the whole fleet, plus discovery sources
          certfleet status shop api --no-targets    # two certificates, endpoints only
          certfleet status --json | jq '.rows[] | select(.status != "OK")'

        One TLS handshake per endpoint (with SNI, against the trust bundle) and one
        look at each target; no Prefect, nothing written. Statuses, most urgent first:
        EXPIRED, UNREACHABLE, HOSTNAME_MISMATCH, UNTRUSTED_CHAIN, INCOMPLETE_CHAIN, DRIFT
        (serves or holds another serial than the one issued), DUE, NOT_ISSUED, OK;
        UNMANAGED for live certificates the inventory does not name.
        Exit 0 only when every row is OK.""", cmd_status, json_=True)
    sp.add_argument("names", nargs="*", metavar="NAME", help="only these certificates (default: all)")
    sp.add_argument("--no-targets", action="store_true", help="do not ask targets what they hold (endpoints only)")
    sp.add_argument("--no-discovery", action="store_true", help="do not scan the inventory's discovery sources")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress line")

    sp = add("run", "run the lifecycle: renew what is due, distribute to every target, verify every endpoint", """
        Examples:
          certfleet run                          # the whole fleet
          certfleet run shop --verify-deadline 120

        Idempotent: a second run issues nothing and writes nothing. Exit 1 names each
        endpoint that does not serve the issued serial.""", cmd_run, json_=True)
    sp.add_argument("names", nargs="*", metavar="NAME", help="only these certificates (default: all)")
    sp.add_argument("--verify-deadline", type=float, default=60.0, help="seconds to wait for endpoints to serve the new serial (default 60)")

    sp = add("renew", "issue new versions of the named certificates, if due (or --force)", """
        Examples:
          certfleet renew shop                   # issues only if shop is due
          certfleet renew shop api --force       # issue now, due or not

        One issuer per certificate, under the store's lock. Renewing does not deploy:
        follow with `certfleet distribute NAME` (or use `certfleet run`).""", cmd_renew, json_=True)
    sp.add_argument("names", nargs="+", metavar="NAME", help="certificates to renew")
    sp.add_argument("--force", action="store_true", help="issue even when the current version is not due")

    sp = add("distribute", "put the current version of the named certificates on their targets", """
        Examples:
          certfleet distribute shop
          certfleet distribute shop --target lb-1 --target lb-2

        Targets that already hold the current serial are skipped. Canary targets go
        first; the others only if the canaries verify.""", cmd_distribute, json_=True)
    sp.add_argument("names", nargs="+", metavar="NAME", help="certificates to distribute")
    sp.add_argument("--target", action="append", metavar="TARGET", help="only this target (repeatable; default: all of each certificate's)")
    sp.add_argument("--verify-deadline", type=float, default=60.0, help="seconds to wait for a target's endpoints to serve the new serial (default 60)")

    sp = add("verify", "prove every endpoint serves the issued serial, with a valid chain and name", """
        Examples:
          certfleet verify                       # every certificate's endpoints
          certfleet verify shop --deadline 5

        Re-probes endpoints that do not verify yet until the deadline, then names each
        one that still fails.""", cmd_verify, json_=True)
    sp.add_argument("names", nargs="*", metavar="NAME", help="only these certificates (default: all)")
    sp.add_argument("--deadline", type=float, default=60.0, help="seconds to keep re-probing endpoints that do not verify yet (default 60)")

    sp = add("rotate", "emergency rotation: new keys, new certificates, redistribute, verify, then revoke", """
        Examples:
          certfleet rotate --emergency shop --dry-run                 # the plan; nothing changes
          certfleet rotate --emergency --sharing-key-with shop        # every certificate with shop's key
          certfleet rotate --emergency --issuer letsencrypt --reason cACompromise
          certfleet rotate --emergency --target lb-1 --reason superseded

        Selectors add up (a union). Old certificates are revoked only after every
        endpoint serves the new one, unless --force-revoke (keyCompromise only).""",
        cmd_rotate, json_=True)
    sp.add_argument("names", nargs="*", metavar="NAME", help="certificates to rotate")
    sp.add_argument("--emergency", action="store_true", help="required: you mean it")
    sp.add_argument("-c", "--certificate", action="append", metavar="NAME", help="also this certificate (repeatable)")
    sp.add_argument("--sharing-key-with", action="append", metavar="NAME|SPKI_SHA256",
                    help="also every certificate using the same key as this certificate or public-key fingerprint (repeatable)")
    sp.add_argument("--issuer", help="also every certificate from this inventory issuer (or whose CA name contains it)")
    sp.add_argument("--target", help="also every certificate deployed to this target")
    sp.add_argument("--reason", default="keyCompromise", help="RFC 5280 revocation reason (default keyCompromise; "
                    "e.g. superseded, cessationOfOperation, cACompromise)")
    sp.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    sp.add_argument("--force-revoke", action="store_true", help="with keyCompromise: revoke even where an endpoint still serves the old certificate")
    sp.add_argument("--verify-deadline", type=float, default=120.0, help="seconds to wait for endpoints to serve the new certificates (default 120)")

    sp = add("import", "adopt certificates already in service: put their PEM files into the store", """
        Examples:
          certfleet import --name shop --cert /etc/nginx/tls/shop.pem --key /etc/nginx/tls/shop.key
          certfleet import --name shop --cert shop.pem --key shop.key --name api --cert api.pem --key api.key

        Every pair is checked before anything is written: the key matches the
        certificate, NAME is in the inventory, the certificate's names cover every
        domain the inventory lists for it, it has not expired, and the store has no
        other current version of it. Any failure: exit 2, nothing written.

        There is no --from-endpoint: a TLS handshake yields the certificate, never its
        private key. To watch certificates you cannot import, list their endpoints (or
        a discovery source) and use `certfleet status`. See docs/adopting.md.""",
        cmd_import, json_=True)
    sp.add_argument("--name", action="append", metavar="NAME", help="inventory certificate name (repeatable, paired in order with --cert/--key)")
    sp.add_argument("--cert", action="append", metavar="FILE", help="PEM certificate, or full chain leaf first")
    sp.add_argument("--key", action="append", metavar="FILE", help="PEM private key (unencrypted)")
    sp.add_argument("--from-endpoint", metavar="HOST:PORT", help="not possible (no private key over the wire); exits 2 saying so")

    sp = add("demo", "the midnight incident on a local fleet (Pebble + nginx), fixed by one run", """
        Examples:
          certfleet demo
          certfleet demo --workdir /tmp/demo --keep""", cmd_demo, inventory=False)
    sp.add_argument("--workdir", default=".demo", help="where the demo fleet lives (default ./.demo)")
    sp.add_argument("--keep", action="store_true", help="leave Pebble and nginx running afterwards")
    return p


def main(argv: list[str] | None = None) -> int:
    from certfleet import prefect_defaults
    from certfleet.inventory import InventoryError

    prefect_defaults.apply()
    import logging

    for name in ("certfleet", "blocks"):
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, a usage error 2
        return int(exc.code or 0)
    try:
        return args.func(args)
    except InventoryError as exc:
        for line in exc.problems:
            print(f"certfleet: {line}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"certfleet: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
