"""The ``certfleet`` command: the one composition root allowed to import flows.

One module per command group (``status``, ``init`` + ``validate``, ``adopt`` for
``import``, ``flows`` for the commands that run a flow, ``demo``); this module builds
the parser from them and maps errors to exit codes.

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
import os
import sys
import textwrap

from certfleet.cli import adopt, demo, flows, init, status
from certfleet.cli.base import EXIT_USAGE, UsageError

COMMAND_GROUPS = (init, status, flows, adopt, demo)


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

    for group in COMMAND_GROUPS:
        group.register(add)
    return p


def main(argv: list[str] | None = None) -> int:
    from certfleet import prefect_defaults
    from certfleet.inventory import InventoryError

    prefect_defaults.apply()
    import logging

    logging.getLogger("certfleet").setLevel(logging.INFO)
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
