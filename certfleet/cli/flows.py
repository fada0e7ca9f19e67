"""The commands that run a flow: ``run``, ``renew``, ``distribute``, ``verify`` and
``rotate``. Each checks its input first (exit 2, before Prefect starts), then runs one
flow in this process and prints its final state."""

from __future__ import annotations

from certfleet.cli.base import UsageError, finish, load_checked

def _dry_run(args, what: str, *, renew: bool, distribute: bool) -> int:
    from certfleet.cli import plan

    inv = load_checked(args.inventory, args.names, getattr(args, "target", None))
    steps = plan.plan(inv, args.names or None, renew=renew, distribute=distribute,
                      force=getattr(args, "force", False), targets=getattr(args, "target", None))
    return plan.show(steps, args, what)


def cmd_run(args) -> int:
    if args.dry_run:
        return _dry_run(args, "run", renew=True, distribute=True)
    load_checked(args.inventory, args.names)
    from certfleet.flows.lifecycle import lifecycle

    state = lifecycle(inventory=args.inventory, certificates=args.names or None,
                      verify_deadline=args.verify_deadline, return_state=True)
    return finish("lifecycle", state, args)


def cmd_renew(args) -> int:
    if args.dry_run:
        return _dry_run(args, "renew", renew=True, distribute=False)
    load_checked(args.inventory, args.names)
    from certfleet.flows.renew import renew

    state = renew(inventory=args.inventory, certificates=args.names, force=args.force, return_state=True)
    return finish("renew", state, args)


def cmd_distribute(args) -> int:
    if args.dry_run:
        return _dry_run(args, "distribute", renew=False, distribute=True)
    load_checked(args.inventory, args.names, args.target)
    from certfleet.flows.distribute import distribute

    state = distribute(inventory=args.inventory, certificates=args.names, targets=args.target or None,
                       verify_deadline=args.verify_deadline, return_state=True)
    return finish("distribute", state, args)


def cmd_verify(args) -> int:
    load_checked(args.inventory, args.names)
    from certfleet.flows.verify import verify

    state = verify(inventory=args.inventory, certificates=args.names or None, deadline=args.deadline,
                   return_state=True)
    return finish("verify", state, args)


def cmd_rotate(args) -> int:
    if not args.emergency:
        raise UsageError("rotate replaces keys and revokes certificates now; say so with --emergency "
                         "(try --dry-run first to see the plan)")
    from certfleet.blocks import registry
    from certfleet import emergency

    certificates = (args.names or []) + (args.certificate or [])
    inv = load_checked(args.inventory, certificates, [args.target] if args.target else None)
    try:
        emergency.reason_code(args.reason)
        emergency.select(inv, registry.store(inv), emergency.Selector(
            tuple(certificates), tuple(args.sharing_key_with or ()), args.issuer, args.target))
    except emergency.SelectionError as exc:
        raise UsageError(str(exc)) from None
    from certfleet.flows.emergency import emergency_rotation

    state = emergency_rotation(inventory=args.inventory, certificates=certificates or None,
                               sharing_key_with=args.sharing_key_with or None, issuer=args.issuer,
                               target=args.target, reason=args.reason, dry_run=args.dry_run,
                               force_revoke=args.force_revoke, verify_deadline=args.verify_deadline,
                               return_state=True)
    return finish("emergency-rotation", state, args)


def register(add) -> None:
    sp = add("run", "run the lifecycle: renew what is due, distribute to every target, verify every endpoint", """
        Examples:
          certfleet run                          # the whole fleet
          certfleet run shop --verify-deadline 120

        Idempotent: a second run issues nothing and writes nothing. Exit 1 names each
        endpoint that does not serve the issued serial.""", cmd_run, json_=True)
    sp.add_argument("names", nargs="*", metavar="NAME", help="only these certificates (default: all)")
    sp.add_argument("--verify-deadline", type=float, default=60.0, help="seconds to wait for endpoints to serve the new serial (default 60)")
    sp.add_argument("--dry-run", action="store_true", help="print what would be ordered, written and reloaded, and why; change nothing")

    sp = add("renew", "issue new versions of the named certificates, if due (or --force)", """
        Examples:
          certfleet renew shop                   # issues only if shop is due
          certfleet renew shop api --force       # issue now, due or not

        One issuer per certificate, under the store's lock. Renewing does not deploy:
        follow with `certfleet distribute NAME` (or use `certfleet run`).""", cmd_renew, json_=True)
    sp.add_argument("names", nargs="+", metavar="NAME", help="certificates to renew")
    sp.add_argument("--force", action="store_true", help="issue even when the current version is not due")
    sp.add_argument("--dry-run", action="store_true", help="print what would be ordered, written and reloaded, and why; change nothing")

    sp = add("distribute", "put the current version of the named certificates on their targets", """
        Examples:
          certfleet distribute shop
          certfleet distribute shop --target lb-1 --target lb-2

        Targets that already hold the current serial are skipped. Canary targets go
        first; the others only if the canaries verify.""", cmd_distribute, json_=True)
    sp.add_argument("names", nargs="+", metavar="NAME", help="certificates to distribute")
    sp.add_argument("--target", action="append", metavar="TARGET", help="only this target (repeatable; default: all of each certificate's)")
    sp.add_argument("--verify-deadline", type=float, default=60.0, help="seconds to wait for a target's endpoints to serve the new serial (default 60)")
    sp.add_argument("--dry-run", action="store_true", help="print what would be ordered, written and reloaded, and why; change nothing")

    sp = add("verify", "prove every endpoint serves the issued serial, with a valid chain and name", """
        Examples:
          certfleet verify                       # every certificate's endpoints
          certfleet verify shop --deadline 5

        Re-probes endpoints that do not verify yet until the deadline, then names each
        one that still fails.""", cmd_verify, json_=True)
    sp.add_argument("names", nargs="*", metavar="NAME", help="only these certificates (default: all)")
    sp.add_argument("--deadline", type=float, default=60.0, help="seconds to keep re-probing endpoints that do not verify yet (default 60)")

    sp = add("rotate", "emergency rotation: new keys, new certificates, redistribute, verify, then revoke", """
        Examples:
          certfleet rotate --emergency shop --dry-run                 # the plan; nothing changes
          certfleet rotate --emergency --sharing-key-with shop        # every certificate with shop's key
          certfleet rotate --emergency --issuer letsencrypt --reason superseded
          certfleet rotate --emergency --target lb-1 --reason superseded

        Selectors add up (a union). Old certificates are revoked only after every
        endpoint serves the new one, unless --force-revoke (keyCompromise only).""",
        cmd_rotate, json_=True)
    sp.add_argument("names", nargs="*", metavar="NAME", help="certificates to rotate")
    sp.add_argument("--emergency", action="store_true", help="required: you mean it")
    sp.add_argument("-c", "--certificate", action="append", metavar="NAME", help="also this certificate (repeatable)")
    sp.add_argument("--sharing-key-with", action="append", metavar="NAME|SPKI_SHA256",
                    help="also every certificate using the same key as this certificate or public-key fingerprint (repeatable)")
    sp.add_argument("--issuer", help="also every certificate from this inventory issuer (or whose CA name contains it)")
    sp.add_argument("--target", help="also every certificate deployed to this target")
    from certfleet.emergency import ACCEPTED_REASONS

    sp.add_argument("--reason", default="keyCompromise", choices=ACCEPTED_REASONS,
                    help="RFC 5280 revocation reason an ACME CA accepts (default keyCompromise)")
    sp.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    sp.add_argument("--force-revoke", action="store_true", help="with keyCompromise: revoke even where an endpoint still serves the old certificate")
    sp.add_argument("--verify-deadline", type=float, default=120.0, help="seconds to wait for endpoints to serve the new certificates (default 120)")
