"""The ``certfleet`` command: the one composition root allowed to import flows.

Exit codes are for cron and CI: 0 all good, 1 something needs attention, 2 usage or
input error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_ATTENTION, EXIT_USAGE = 0, 1, 2


def _print_table(rows: list[dict], columns: list[str]) -> None:
    if not rows:
        print("(nothing)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def status_rows(inventory_path: str) -> list[dict]:
    """What every endpoint serves now, against what the store says it should serve."""
    from certfleet import distribution, inventory, policy
    from certfleet.probe import probe_sync
    from certfleet.store import LocalStore

    inv = inventory.load(inventory_path)
    store = LocalStore(inv.store_path())
    rows = []
    for spec in inv.certificates:
        cur = store.current(spec.name)
        roots = distribution.load_roots(inv.trust_bundle_for(spec))
        for result in probe_sync(spec.endpoint_list(), roots=roots):
            if cur is not None and result.leaf is not None:
                check = policy.verified(result, cur.serial)
                state, detail = check.reason, check.message
            else:
                state, detail = str(result.status), result.reason
            leaf = result.leaf
            rows.append({
                "certificate": spec.name, "endpoint": str(result.endpoint),
                "serving": (leaf.serial[:16] if leaf else "-"),
                "expires": (leaf.not_after.strftime("%Y-%m-%d %H:%M") if leaf else "-"),
                "issued": cur.serial[:16] if cur else "-", "status": state, "detail": detail,
            })
    return rows


def cmd_status(args) -> int:
    rows = status_rows(args.inventory)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["certificate", "endpoint", "serving", "expires", "issued", "status"])
    return EXIT_OK if all(r["status"] == "OK" for r in rows) else EXIT_ATTENTION


def cmd_validate(args) -> int:
    from blocks import registry
    from certfleet import inventory

    inv = inventory.load(args.inventory)
    registry.check_all(inv)
    print(f"{args.inventory}: {len(inv.certificates)} certificates, {len(inv.issuers)} issuers, {len(inv.targets)} targets: OK")
    return EXIT_OK


def cmd_run(args) -> int:
    from flows.lifecycle import lifecycle

    state = lifecycle(inventory=args.inventory, certificates=args.certificate or None,
                      verify_deadline=args.verify_deadline, return_state=True)
    print(state.message or state.type.value)
    return EXIT_OK if state.is_completed() else EXIT_ATTENTION


def cmd_demo(args) -> int:
    """Build the incident fleet, show it, run the lifecycle once, show it again."""
    from certfleet import demo

    workdir = Path(args.workdir)
    os.environ.setdefault("PREFECT_HOME", str((workdir.parent / ".prefect-home").resolve()))
    print(f"Starting a local fleet in {workdir}: Pebble (ACME CA) and nginx (production + staging) ...")
    fleet = demo.build(workdir)
    try:
        print(f"\nInventory: {fleet.inventory}\n\nBEFORE — what production serves (the renewal ran on staging):")
        _print_table(status_rows(str(fleet.inventory)), ["certificate", "endpoint", "serving", "expires", "status"])
        print("\nRunning the lifecycle flow (Prefect on SQLite; the first start takes ~20 s) ...")
        from flows.lifecycle import lifecycle

        state = lifecycle(inventory=str(fleet.inventory), verify_deadline=30, return_state=True)
        print(f"\nlifecycle: {state.type.value}: {state.message}")
        print("\nAFTER — what production serves, checked by a TLS handshake per endpoint:")
        rows = status_rows(str(fleet.inventory))
        _print_table(rows, ["certificate", "endpoint", "serving", "expires", "issued", "status"])
        ok = state.is_completed() and all(r["status"] == "OK" for r in rows)
        print("\nEvery endpoint serves the certificate that was issued." if ok else "\nSome endpoints need attention (see above).")
        print(f"Run it again: certfleet run -i {fleet.inventory}   (nothing to do: no issuance, no write)")
        return EXIT_OK if ok else EXIT_ATTENTION
    finally:
        if args.keep:
            print(f"Pebble and nginx keep running (--keep); stop them with: kill {' '.join(str(p) for p in fleet.pids())}")
        else:
            fleet.stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="certfleet",
        description="Keep every TLS endpoint of a fleet serving a valid, current certificate, "
                    "and prove it from the user's side of the wire.",
        epilog="Exit codes: 0 all good, 1 something needs attention, 2 usage or input error.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def inv_arg(sp):
        sp.add_argument("-i", "--inventory", default=os.environ.get("CERTFLEET_INVENTORY", "inventory.yaml"),
                        help="inventory file (default: $CERTFLEET_INVENTORY or ./inventory.yaml)")

    sp = sub.add_parser("run", help="run the lifecycle: discover, renew, distribute, verify")
    inv_arg(sp)
    sp.add_argument("-c", "--certificate", action="append", help="only this certificate (repeatable)")
    sp.add_argument("--verify-deadline", type=float, default=60.0, help="seconds to wait for endpoints to serve the new serial (default 60)")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("status", help="what every endpoint serves now, versus what was issued")
    inv_arg(sp)
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("validate", help="check the inventory and every issuer and target configuration")
    inv_arg(sp)
    sp.set_defaults(func=cmd_validate)

    sp = sub.add_parser("demo", help="the midnight incident on a local fleet (Pebble + nginx), fixed by one run")
    sp.add_argument("--workdir", default=".demo", help="where the demo fleet lives (default ./.demo)")
    sp.add_argument("--keep", action="store_true", help="leave Pebble and nginx running afterwards")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    from certfleet import prefect_defaults
    from certfleet.inventory import InventoryError

    prefect_defaults.apply()
    import logging

    for name in ("certfleet", "blocks"):
        logging.getLogger(name).setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InventoryError as exc:
        print(f"certfleet: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
