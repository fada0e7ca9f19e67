"""``certfleet demo``: the midnight incident on a local fleet, fixed by one run."""

from __future__ import annotations

import os
from pathlib import Path

from certfleet.cli.base import EXIT_ATTENTION, EXIT_OK, UsageError, print_table, use_colour
from certfleet.cli.status import fleet_rows, row_table

def cmd_demo(args) -> int:
    """Build the incident fleet, show it, run the lifecycle once, show it again."""
    try:
        from certfleet_dev import demo
    except ImportError:
        raise UsageError("certfleet demo needs the development tools (Pebble, nginx and Knot launchers), "
                         "which the runtime package does not ship: pip install certfleet-dev "
                         "(from a checkout: pip install -e ./dev)") from None

    workdir = Path(args.workdir)
    os.environ.setdefault("PREFECT_HOME", str((workdir.parent / ".prefect-home").resolve()))
    print(f"Starting a local fleet in {workdir}: Pebble (ACME CA) and nginx (production + staging) ...")
    fleet = demo.build(workdir)
    columns = ["certificate", "where", "serving", "expires", "issued", "status"]
    colour = use_colour()
    try:
        print(f"\nInventory: {fleet.inventory}\n\nBEFORE — what production serves (the renewal ran on staging):")
        rows = fleet_rows(str(fleet.inventory), targets=False, progress=False)
        print_table([row_table(r) for r in rows], columns, colour)
        print("\nRunning the lifecycle flow (Prefect on SQLite; the first start takes ~20 s) ...")
        from certfleet.flows.lifecycle import lifecycle

        state = lifecycle(inventory=str(fleet.inventory), verify_deadline=30, return_state=True)
        print(f"\nlifecycle: {state.type.value}: {state.message}")
        print("\nAFTER — what production serves, checked by a TLS handshake per endpoint:")
        rows = fleet_rows(str(fleet.inventory), targets=False, progress=False)
        print_table([row_table(r) for r in rows], columns, colour)
        ok = state.is_completed() and all(str(r.status) == "OK" for r in rows)
        print("\nEvery endpoint serves the certificate that was issued." if ok else "\nSome endpoints need attention (see above).")
        print(f"Run it again: certfleet run -i {fleet.inventory}   (nothing to do: no issuance, no write)")
        return EXIT_OK if ok else EXIT_ATTENTION
    finally:
        if args.keep:
            print(f"Pebble and nginx keep running (--keep); stop them with: kill {' '.join(str(p) for p in fleet.pids())}")
        else:
            fleet.stop()


def register(add) -> None:
    sp = add("demo", "the midnight incident on a local fleet (Pebble + nginx), fixed by one run", """
        Examples:
          certfleet demo
          certfleet demo --workdir /tmp/demo --keep""", cmd_demo, inventory=False)
    sp.add_argument("--workdir", default=".demo", help="where the demo fleet lives (default ./.demo)")
    sp.add_argument("--keep", action="store_true", help="leave Pebble and nginx running afterwards")
