"""``certfleet status``: what every endpoint serves and every target holds, versus what
was issued. Prefect-free: probes and target reads happen in this process."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from certfleet.cli.base import (
    EXIT_ATTENTION,
    EXIT_OK,
    progress_bar,
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
               targets: bool = True, progress: bool = True, timeout: float = 5.0) -> list:
    """The monitor's rows, from the same core function (``certfleet.fleet.snapshot``),
    computed here without Prefect.

    What the store issued, what each target holds, what each endpoint serves — and,
    with ``discovery``, certificates found live that the inventory does not name.
    """
    from certfleet.blocks import registry
    from certfleet import distribution, fleet

    inv = load_checked(inventory_path, names)
    store = registry.store(inv)
    specs = [c for c in inv.certificates if not names or c.name in names]
    now = datetime.now(timezone.utc)
    roots_cache: dict[Any, Any] = {}

    def roots(spec):
        bundle = inv.trust_bundle_for(spec)
        if bundle not in roots_cache:
            try:
                roots_cache[bundle] = distribution.load_roots(bundle)
            except (OSError, ValueError) as exc:  # missing file, or not PEM
                why = getattr(exc, "strerror", None) or exc
                raise UsageError(f"{inv.source}: trust bundle {bundle}: cannot read ({why})") from None
        return roots_cache[bundle]

    looks = []
    for spec in specs:
        cur = store.current(spec.name)
        looks.append(fleet.Look(spec.name, cur.info if cur else None, tuple(spec.endpoint_list()), roots(spec),
                                tuple(spec.targets)))
    sources = len(inv.discovery) if discovery and not names else 0
    total = sum(len(lk.endpoints) for lk in looks) + (sum(len(lk.targets) for lk in looks) if targets else 0) + sources
    with progress_bar(total, enabled=progress) as step:
        rows = fleet.snapshot(looks, read_target=(lambda t: registry.target(inv, t).current()) if targets else None,
                              now=now, probe_timeout=timeout, batch=PROBE_BATCH, progress=step)
        if sources:
            known = fleet.managed(inv.certificates, store)
            for i in range(len(inv.discovery)):
                try:
                    rows += fleet.discovered_rows(registry.discovery_source(inv, i).scan(), known, now)
                except Exception as exc:  # noqa: BLE001 - one source failing is a row, not a crash
                    rows.append(fleet.Row(certificate="", kind="discovered", location=f"discovery[{i}]",
                                          status=fleet.Status.UNREACHABLE, reason=f"discovery[{i}]: {exc}"))
                step(1, f"scanned discovery[{i}]")
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
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    rows = fleet_rows(args.inventory, args.names or None, discovery=not args.no_discovery,
                      targets=not args.no_targets, progress=not (args.quiet or args.json), timeout=args.timeout)
    if args.sort == "days":  # fewest days left first; rows without a certificate seen last
        rows.sort(key=lambda r: (r.days_left is None, r.days_left if r.days_left is not None else 0.0))
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
          certfleet status --sort days --timeout 2   # soonest expiry first; slow endpoints give up after 2 s
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
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar (there is none in a pipe or with --json)")
    sp.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                    help="probe timeout: seconds for the TCP connect and again for the TLS handshake (default 5)")
    sp.add_argument("--sort", choices=("inventory", "days"), default="inventory",
                    help="row order: as in the inventory (default), or by days left, fewest first")
