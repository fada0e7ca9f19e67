"""``certfleet status``: what every endpoint serves and every target holds, versus what
was issued. Prefect-free: probes and target reads happen in this process."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from certfleet.cli.base import (
    EXIT_ATTENTION,
    EXIT_OK,
    Progress,
    UsageError,
    dump,
    load_checked,
    paint,
    print_table,
    short,
    use_colour,
)

PROBE_BATCH = 50  # endpoints per progress step; each batch is probed concurrently


def fleet_rows(inventory_path: str, names: list[str] | None = None, *, discovery: bool = True,
               targets: bool = True, progress: bool = True) -> list:
    """The monitor's rows (``certfleet.fleet``), computed here without Prefect.

    What the store issued, what each target holds, what each endpoint serves — and,
    with ``discovery``, certificates found live that the inventory does not name.
    """
    from certfleet.blocks import registry
    from certfleet import distribution, fleet
    from certfleet.probe import probe_sync

    inv = load_checked(inventory_path, names)
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


def row_json(row) -> dict:
    return {"certificate": row.certificate or None, "kind": row.kind, "where": row.location,
            "status": str(row.status), "reason": row.reason, "serving": row.seen_serial,
            "issued": row.issued_serial, "not_after": row.not_after,
            "days_left": None if row.days_left is None else round(row.days_left, 2)}


def row_table(row) -> dict:
    return {"certificate": row.certificate or "(unmanaged)", "kind": row.kind, "where": row.location,
            "status": str(row.status), "serving": short(row.seen_serial), "issued": short(row.issued_serial),
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
        dump({"ok": ok, "counts": counts, "rows": [row_json(r) for r in rows]})
    else:
        colour = use_colour()
        print_table([row_table(r) for r in rows],
                     ["certificate", "kind", "where", "status", "serving", "issued", "expires", "days left"], colour)
        attention = [r for r in rows if str(r.status) != "OK"]
        if attention:
            print("\nNeeds attention:")
            for r in attention:
                print(f"  {paint(str(r.status), str(r.status), colour)}  {r.reason}")
        print("\n" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if rows else "")
    return EXIT_OK if ok else EXIT_ATTENTION


def register(add) -> None:
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
