"""What every command module shares: exit codes, the usage error, output helpers, and
the inventory check that runs before any work (and before Prefect starts)."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import os
import sys
from datetime import date, datetime
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


def dump(data: Any) -> None:
    print(json.dumps(to_jsonable(data), indent=2))


_COLOURS = {"OK": "32", "DUE": "33", "NOT_ISSUED": "33", "UNMANAGED": "33"}  # the rest: red


def use_colour(stream=None) -> bool:
    stream = stream or sys.stdout
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def paint(text: str, status: str, colour: bool) -> str:
    return f"\033[{_COLOURS.get(status, '31')}m{text}\033[0m" if colour else text


def print_table(rows: list[dict], columns: list[str], colour: bool = False) -> None:
    if not rows:
        print("(nothing)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        cells = []
        for c in columns:
            cell = str(r.get(c, "")).ljust(widths[c])
            cells.append(paint(cell, str(r.get("status")), colour) if c == "status" else cell)
        print("  ".join(cells).rstrip())


class Progress:
    """A ``rich`` progress bar on stderr, only when stderr is a terminal: nothing at all
    in a pipe, a file or a cron mail (and callers pass ``enabled=False`` for --json)."""

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total, self.stream = total, stream or sys.stderr
        self.tty = enabled and self.stream.isatty() and os.environ.get("TERM") != "dumb"
        self._bar = self._task = None
        if self.tty and total > 0:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=Console(file=self.stream), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("", total=total)

    def step(self, done: int, what: str) -> None:
        """``done`` items finished in total so far."""
        if self._bar is not None:
            self._bar.update(self._task, completed=done, description=what)

    def advance(self, n: int, what: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=n, description=what)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool = True):
    """``with progress_bar(n) as step: step(k, "what")`` — k items just finished."""
    bar = Progress(total, enabled=enabled)
    try:
        yield bar.advance
    finally:
        bar.close()


def short(serial: str | None, n: int = 16) -> str:
    if not serial:
        return "-"
    return serial if len(serial) <= n else serial[:n] + "…"


# -- input checks shared by the flow commands -------------------------------------

def load_checked(path: str, names: list[str] | None = None, targets: list[str] | None = None):
    """The inventory, with every issuer and target built once: errors exit 2, before Prefect."""
    from certfleet.blocks import registry
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


def finish(flow_name: str, state, args) -> int:
    """Print a flow's final state (and its data with --json); 0 when Completed, else 1."""
    data = None
    try:
        data = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - no result to show is fine
        data = None
    if isinstance(data, BaseException):
        data = None
    if getattr(args, "json", False):
        dump({"flow": flow_name, "state": state.type.value, "ok": state.is_completed(),
               "message": state.message, "data": data})
    else:
        print(f"{flow_name}: {state.type.value}: {state.message or ''}".rstrip(": "))
    return EXIT_OK if state.is_completed() else EXIT_ATTENTION

