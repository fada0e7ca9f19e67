"""``certfleet certificates``: the offline store listing (like ``certbot certificates``).

Per certificate: its stored versions (current, revoked, expired), expiry, when it will
be renewed and why (the renewal policy, with the persisted ARI time when there is one),
and the last renewal attempt and its result. Reads the store only: no network, no Prefect.
"""

from __future__ import annotations

from datetime import datetime, timezone

from certfleet.cli.base import EXIT_ATTENTION, EXIT_OK, dump, load_checked


def describe(inv, store, spec, now: datetime) -> dict:
    from certfleet import policy, renewal

    versions = store.versions(spec.name)
    cur = store.current(spec.name)
    revoked = store.revocations(spec.name) if hasattr(store, "revocations") else {}
    rows = []
    for v in reversed(versions):  # newest first
        state = ("current" if cur and v.serial == cur.serial else
                 "revoked" if v.serial in revoked else "expired" if v.info.not_after <= now else "kept")
        rows.append({"serial": v.serial, "state": state, "not_before": v.info.not_before,
                     "not_after": v.info.not_after, "days_left": round(v.info.remaining(now) / 86400, 2),
                     "issuer": v.issuer, "stored_at": v.stored_at,
                     "revoked": revoked.get(v.serial)})
    from certfleet.blocks import registry

    chosen = renewal.chosen_times(registry.storage(inv), spec.name).get(cur.serial) if cur else None
    check = renewal.decide(spec, store, now=now)
    if cur is None:
        renew_at, why = None, check.message
    elif chosen is not None:
        renew_at = chosen
        why = f"the time chosen inside the CA's ARI window (persisted): {chosen:%Y-%m-%d %H:%M}Z"
        if check.ok and now >= chosen:
            why += "; due now"
        elif not check.ok:
            why = f"{check.reason}: {check.message}"
    else:
        renew_at = policy.renewal_time(cur.info)
        why = f"{check.reason}: {check.message}" if not check.ok else check.message
    return {"certificate": spec.name, "domains": list(spec.domains), "issuer": spec.issuer,
            "current": cur.serial if cur else None, "expires": cur.info.not_after if cur else None,
            "renew_at": renew_at, "due": not check.ok, "reason": check.reason, "why": why,
            "last_attempt": renewal.last_attempt(renewal.attempt_path(inv.store_path(), spec.name)),
            "versions": rows}


def cmd_certificates(args) -> int:
    from certfleet.blocks import registry

    inv = load_checked(args.inventory, args.names)
    store = registry.store(inv)
    now = datetime.now(timezone.utc)
    certs = [describe(inv, store, s, now) for s in inv.certificates if not args.names or s.name in args.names]
    if args.json:
        dump({"certificates": certs})
    else:
        for c in certs:
            print(f"Certificate: {c['certificate']}  ({', '.join(c['domains'])}; issuer {c['issuer']})")
            if c["current"]:
                cur = next(v for v in c["versions"] if v["serial"] == c["current"])
                print(f"  Current:  {c['current']}  expires {c['expires']:%Y-%m-%d %H:%M}Z ({cur['days_left']:.1f} days)")
            else:
                print("  Current:  none (nothing issued yet)")
            when = f"{c['renew_at']:%Y-%m-%d %H:%M}Z" if c["renew_at"] else "at the next run"
            print(f"  Renewal:  {'DUE — ' if c['due'] else ''}{when}: {c['why']}")
            la = c["last_attempt"]
            print(f"  Last attempt: {la['at'][:16].replace('T', ' ')}Z {la['result']}: {la['message']}" if la
                  else "  Last attempt: none recorded")
            print(f"  Versions ({len(c['versions'])}, newest first):")
            for v in c["versions"]:
                extra = f" ({v['revoked']['reason']})" if v["revoked"] else ""
                print(f"    {v['serial']}  {v['state']}{extra}  expires {v['not_after']:%Y-%m-%d %H:%M}Z  "
                      f"stored {v['stored_at']:%Y-%m-%d %H:%M}Z")
            print()
    return EXIT_ATTENTION if any(c["due"] for c in certs) else EXIT_OK


def register(add) -> None:
    sp = add("certificates", "list the store offline: versions, expiry, next renewal and why, last attempt", """
        Examples:
          certfleet certificates
          certfleet certificates shop --json

        Reads the store only (no handshake, no CA, no Prefect). The renewal time is the
        renewal policy's: the time chosen inside the CA's ARI window when one was
        persisted, else 1/3 of the lifetime before expiry (1/2 for short-lived ones).
        Exit 1 when a certificate is due (or has never been issued).""", cmd_certificates, json_=True)
    sp.add_argument("names", nargs="*", metavar="NAME", help="only these certificates (default: all)")
