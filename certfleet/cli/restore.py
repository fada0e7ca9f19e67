"""``certfleet restore``: undo. Make a previous stored version current again, put it on
every target and prove every endpoint serves it. A revoked or expired version is refused
before anything is written (exit 2)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

from certfleet.cli.base import EXIT_ATTENTION, EXIT_OK, UsageError, dump, load_checked


def choose(store, name: str, serial: str | None, now: datetime | None = None):
    """The version to restore, or a one-line UsageError naming why not. Reads only."""
    from certfleet.store import previous_of

    now = now or datetime.now(timezone.utc)
    versions = store.versions(name)
    cur = store.current(name)
    if serial is None:
        version = previous_of(versions, cur)
        if version is None:
            raise UsageError(f"certificate '{name}': no previous version to restore (stored: "
                             f"{', '.join(v.serial for v in versions) or 'none'}); nothing written")
    else:
        version = next((v for v in versions if v.serial.lower() == serial.lower()), None)
        if version is None:
            raise UsageError(f"certificate '{name}': no stored version with serial {serial} (stored: "
                             f"{', '.join(v.serial for v in versions) or 'none'}); nothing written")
    revoked = store.revocations(name) if hasattr(store, "revocations") else {}
    if version.serial in revoked:
        r = revoked[version.serial]
        raise UsageError(f"certificate '{name}': serial {version.serial} was revoked ({r.get('reason')}, {r.get('at')}); "
                         "refusing to restore it; nothing written")
    if version.info.not_after <= now:
        raise UsageError(f"certificate '{name}': serial {version.serial} expired at "
                         f"{version.info.not_after:%Y-%m-%d %H:%M}Z; refusing to restore it; nothing written")
    return version, cur


def cmd_restore(args) -> int:
    from certfleet.blocks import registry

    inv = load_checked(args.inventory, [args.name])
    store = registry.store(inv)
    version, cur = choose(store, args.name, args.serial)
    was = cur.serial if cur else None
    if args.dry_run:
        plan = {"certificate": args.name, "restore": version.serial, "current": was,
                "targets": list(inv.certificate(args.name).targets), "dry_run": True}
        if args.json:
            dump(plan)
        else:
            print(f"would make {args.name}@{version.serial} current again (now {was or 'none'}), "
                  f"then deploy it to {', '.join(plan['targets']) or 'no target'} and verify; nothing changed")
        return EXIT_OK
    with store.lock(args.name):  # not while a renewal of the same certificate is storing a version
        store.set_current(args.name, version.serial)
    print(f"certificate '{args.name}': current is {version.serial} again (was {was or 'none'})",
          file=sys.stderr)
    from certfleet.flows.distribute import distribute
    from certfleet.flows.verify import verify

    distributed = distribute(inventory=args.inventory, certificates=[args.name],
                             verify_deadline=args.verify_deadline, return_state=True)
    verified = verify(inventory=args.inventory, certificates=[args.name], deadline=args.verify_deadline,
                      return_state=True)
    ok = distributed.is_completed() and verified.is_completed()
    if args.json:
        dump({"certificate": args.name, "restored": version.serial, "previous": was, "ok": ok,
              "distribute": {"state": distributed.type.value, "message": distributed.message},
              "verify": {"state": verified.type.value, "message": verified.message}})
    else:
        print(f"restored {args.name}@{version.serial} (was {was or 'none'})")
        print(f"distribute: {distributed.type.value}: {distributed.message}")
        print(f"verify: {verified.type.value}: {verified.message}")
    return EXIT_OK if ok else EXIT_ATTENTION


def register(add) -> None:
    sp = add("restore", "undo: make a previous stored version current again, redistribute it, verify it", """
        Examples:
          certfleet restore shop                     # the version before the current one
          certfleet restore shop --serial 5f3a...    # a particular stored version
          certfleet restore shop --dry-run           # what would happen; nothing changes

        A revoked or expired version is refused (exit 2, nothing written). The store's
        current pointer moves back, then every target of the certificate gets that
        version and every endpoint is checked to serve it (`certfleet certificates`
        lists the stored versions).""", cmd_restore, json_=True)
    sp.add_argument("name", metavar="NAME", help="the certificate")
    sp.add_argument("--serial", help="the stored version to restore (default: the one before the current one)")
    sp.add_argument("--dry-run", action="store_true", help="say what would be restored and deployed; change nothing")
    sp.add_argument("--verify-deadline", type=float, default=60.0, help="seconds to wait for endpoints to serve it (default 60)")
