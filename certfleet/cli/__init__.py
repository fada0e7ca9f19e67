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
import contextlib
import io
import os
import sys
import textwrap

from certfleet.cli import adopt, certificates, demo, deploy, flows, init, restore, status
from certfleet.cli.base import EXIT_ATTENTION, EXIT_OK, EXIT_USAGE, UsageError, dump

COMMAND_GROUPS = (init, status, certificates, flows, restore, deploy, adopt, demo)


def _epilog(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n\nExit codes: 0 all good, 1 something needs attention, 2 usage or input error."


class _ArgumentError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str):
        self.parser, self.message = parser, message
        super().__init__(message)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``--json`` can report usage errors too."""

    def error(self, message):  # noqa: D401 - argparse's hook
        raise _ArgumentError(self, message)


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = _Parser(
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
        # Every command takes --json (errors included); ``json_=False`` marks one that has
        # no JSON rendering of its own: main() wraps its text output in a JSON object.
        sp.add_argument("--json", action="store_true", help="print the result (or the error) as JSON on stdout; logs go to stderr")
        sp.set_defaults(native_json=json_)
        sp.set_defaults(func=func)
        return sp

    for group in COMMAND_GROUPS:
        group.register(add)
    return p


def _field(problem: str) -> str | None:
    """``file: certificates[0].domains[0]: message`` -> ``certificates[0].domains[0]``."""
    parts = problem.split(": ")
    return parts[1] if len(parts) >= 3 else None


def error_json(message: str, exit_code: int, problems: list[str] | None = None) -> dict:
    """What an error looks like under --json: one object on stdout, same exit code."""
    problems = problems or [message]
    return {"ok": False, "error": message, "field": _field(problems[0]), "problems": problems,
            "exit_code": exit_code}


def main(argv: list[str] | None = None) -> int:
    from certfleet import prefect_defaults
    from certfleet.inventory import InventoryError

    prefect_defaults.apply()
    import logging

    logging.getLogger("certfleet").setLevel(logging.INFO)
    argv = sys.argv[1:] if argv is None else list(argv)
    want_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except _ArgumentError as exc:
        if want_json:
            dump(error_json(f"{exc.parser.prog}: {exc.message}", EXIT_USAGE))
        else:
            exc.parser.print_usage(sys.stderr)
            print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE

    def fail(problems: list[str], code: int) -> int:
        for line in problems:
            print(f"certfleet: {line}", file=sys.stderr)
        if args.json:
            dump(error_json(problems[0], code, problems))
        return code

    try:
        if args.json and not args.native_json:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                rc = args.func(args)
            dump({"ok": rc == EXIT_OK, "exit_code": rc, "output": buf.getvalue().splitlines()})
            return rc
        return args.func(args)
    except InventoryError as exc:
        return fail(list(exc.problems), EXIT_USAGE)
    except UsageError as exc:
        return fail([str(exc)], EXIT_USAGE)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - under --json an unexpected error is JSON too
        if not args.json:
            raise
        import traceback

        traceback.print_exc()
        return fail([f"{type(exc).__name__}: {exc}"], EXIT_ATTENTION)


if __name__ == "__main__":
    sys.exit(main())
