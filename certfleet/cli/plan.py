"""``--dry-run`` for ``run``, ``renew`` and ``distribute``: what would be ordered, written
and reloaded, and why — from the renewal policy and the distribution decision (what each
target holds). Reads only: no ACME order, no store write, no target write, no Prefect."""

from __future__ import annotations

from certfleet.cli.base import EXIT_OK, dump


def plan(inv, names: list[str] | None, *, renew: bool, distribute: bool, force: bool = False,
         targets: list[str] | None = None) -> list[dict]:
    from certfleet.blocks import registry
    from certfleet import renewal
    from certfleet.contracts import Activatable

    store = registry.store(inv)
    steps: list[dict] = []
    for spec in inv.certificates:
        if names and spec.name not in names:
            continue
        cur = store.current(spec.name)
        serial = cur.serial if cur else None
        new_version = False
        if renew:
            check = renewal.decide(spec, store)
            new_version = force or not check.ok
            why = "forced (--force)" if force and check.ok else f"{check.reason}: {check.message}"
            steps.append({"certificate": spec.name, "action": "order" if new_version else "keep",
                          "issuer": spec.issuer, "why": why})
        if not distribute:
            continue
        for t in spec.targets:
            if targets and t not in targets:
                continue
            block = registry.target(inv, t)
            try:
                held, error = block.current(), None
            except Exception as exc:  # noqa: BLE001 - shown, not raised
                held, error = None, str(exc)
            reload = isinstance(block, Activatable) or bool(getattr(block, "reload_command", None))
            want = "the new version" if new_version else serial
            if want is None:
                steps.append({"certificate": spec.name, "action": "skip", "target": t,
                              "why": "nothing issued yet: run renew first"})
            elif not new_version and held == serial and error is None:
                steps.append({"certificate": spec.name, "action": "skip", "target": t,
                              "why": f"already holds {serial}"})
            else:
                steps.append({"certificate": spec.name, "action": "write", "target": t, "reload": reload,
                              "why": (f"cannot read what it holds ({error})" if error else
                                      f"holds {held or 'nothing'}, wants {want}")})
    return steps


def show(steps: list[dict], args, what: str) -> int:
    if getattr(args, "json", False):
        dump({"dry_run": True, "command": what, "steps": steps})
        return EXIT_OK
    print(f"{what} --dry-run: nothing is ordered, stored, written or reloaded")
    for s in steps:
        if s["action"] == "order":
            print(f"  would ORDER  {s['certificate']} from {s['issuer']}: {s['why']}")
        elif s["action"] == "keep":
            print(f"  would keep   {s['certificate']}: {s['why']}")
        elif s["action"] == "write":
            print(f"  would WRITE  {s['certificate']} → {s['target']}{' and RELOAD it' if s['reload'] else ''}: {s['why']}")
        else:
            print(f"  would skip   {s['certificate']} → {s['target']}: {s['why']}")
    return EXIT_OK
