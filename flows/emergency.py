"""Emergency rotation — the incident button.

Select the affected certificates → hold their scheduled renewals (their locks) →
new keys, new certificates (the fallback issuer if the primary CA fails) → distribute
to every target → verify every endpoint → only then revoke the old certificates, so
nothing goes dark → report a timeline. A dry run prints the plan and changes nothing.
"""

from __future__ import annotations

import contextlib
from prefect import flow, get_run_logger
from certfleet.flows._names import rotation_name, TIMEOUTS
from prefect.states import Completed, Failed

from certfleet.blocks.notifiers.slack import emergency_timeline_message
from certfleet import emergency
from certfleet.flows._futures import settle
from certfleet.flows.distribute import distribute
from certfleet.tasks.common import load_inventory, store_for
from certfleet.tasks.emergency import revoke_certificate, rotate_certificate
from certfleet.tasks.notify import notify_slack
from certfleet.tasks.report import publish_table, validate_inventory
from certfleet.tasks.verify import verify_certificate


# RFC 5280 reasons a CA accepts on revocation: a dropdown in the UI, not free text.
Reason = emergency.Reason


@flow(name="emergency-rotation", flow_run_name=rotation_name, timeout_seconds=TIMEOUTS["emergency-rotation"])
def emergency_rotation(inventory: str = "inventory.yaml", certificates: list[str] | None = None,
                       sharing_key_with: list[str] | None = None, issuer: str | None = None,
                       target: str | None = None, reason: Reason = "keyCompromise", dry_run: bool = False,
                       force_revoke: bool = False, verify_deadline: float = 120.0,
                       slack_block: str | None = None):
    """Rotate every selected certificate now, prove every endpoint is safe, then revoke.

    Args:
        inventory: path of the inventory YAML file.
        certificates: certificate names to rotate.
        sharing_key_with: also every certificate using the same key as these certificates
            (names) or public keys (SPKI SHA-256 fingerprints).
        issuer: also every certificate from this inventory issuer (or whose CA's name contains it).
        target: also every certificate deployed to this target.
        reason: RFC 5280 revocation reason (keyCompromise, superseded, cessationOfOperation, ...).
        dry_run: print the plan and change nothing.
        force_revoke: with keyCompromise, revoke even where an endpoint still serves the old one.
        verify_deadline: seconds to wait for endpoints to serve the new certificates.
        slack_block: name of a saved SlackNotifier block to post the timeline to (optional).
    """
    log = get_run_logger()
    timeline = emergency.Timeline()
    timeline.mark("started")
    code = emergency.reason_code(reason)  # bad reason: fail before anything happens
    validate_inventory(inventory, None)
    inv = load_inventory(inventory)
    store = store_for(inv)
    names = emergency.select(inv, store, emergency.Selector(
        tuple(certificates or ()), tuple(sharing_key_with or ()), issuer, target))
    items = emergency.plan(inv, store, names)
    publish_table("emergency-plan", [vars(i) for i in items], f"Emergency rotation plan ({reason}, code {code})")
    for i in items:
        log.warning("PLAN %s: replace %s via '%s'%s → targets %s; verify %s", i.certificate, i.old_serial or "nothing",
                    i.issuer, f" (fallback '{i.fallback}')" if i.fallback else "", ", ".join(i.targets) or "-",
                    ", ".join(i.endpoints) or "-")
    if dry_run:
        return Completed(message=f"dry run: would rotate {len(names)} certificates: {', '.join(names)}; nothing changed")

    rows: dict[str, dict] = {}
    failures: list[str] = []
    with contextlib.ExitStack() as held:
        for n in names:  # hold scheduled renewals of these certificates until we are done
            held.enter_context(store.lock(n, timeout=verify_deadline + 600))
        done, failed = settle({n: rotate_certificate.submit(inventory, n) for n in names})
        timeline.mark(f"issued {len(done)}/{len(names)}")
        failures += [f"{n}: not rotated: {why}" for n, why in failed.items()]
        for n, r in done.items():
            rows[n] = {"certificate": n, "old serial": r.old_serial or "-", "new serial": r.new_serial,
                       "issuer": r.issuer + (" (FALLBACK)" if r.fallback_used else ""), "verified": "-", "revoked": "-"}
            if r.fallback_used:
                log.error("certificate '%s' was issued by the FALLBACK issuer '%s': %s", n, r.issuer, r.note)
        rotated = list(done)
        if rotated:
            dist = distribute(inventory, rotated, None, verify_deadline, return_state=True)
            timeline.mark("distributed" if dist.is_completed() else f"distributed with failures: {dist.message}")
            if not dist.is_completed():
                failures.append(f"distribution: {dist.message}")
        verdicts, vfailed = settle({n: verify_certificate.submit(inventory, n, done[n].new_serial, verify_deadline)
                                    for n in rotated})
        safe = {n: all(v.ok for v in vs) for n, vs in verdicts.items()}
        for n, why in vfailed.items():
            safe[n] = False
            failures.append(f"{n}: verification did not run: {why}")
        for n, vs in verdicts.items():
            rows[n]["verified"] = f"{sum(v.ok for v in vs)}/{len(vs)}"
            failures += [f"{n}: {v.check.message}" for v in vs if not v.ok]
        timeline.mark(f"verified {sum(safe.values())}/{len(rotated)} certificates")

        revokes = {}
        for n in rotated:
            old = done[n].old_serial
            ok, why = emergency.may_revoke(safe.get(n, False), force_revoke, reason)
            if old is None:
                rows[n]["revoked"] = "nothing to revoke"
            elif not ok:
                rows[n]["revoked"] = why
            else:
                if "FORCED" in why:
                    log.error("certificate '%s': %s", n, why)
                revokes[n] = revoke_certificate.submit(inventory, n, old, reason)
                rows[n]["revoked"] = why
        rdone, rfailed = settle(revokes)
        for n, why in rfailed.items():
            rows[n]["revoked"] = f"FAILED: {why}"
            failures.append(f"{n}: revocation failed: {why}")
        timeline.mark(f"revoked {len(rdone)}/{len(rotated)}")

    publish_table("emergency-rotation", list(rows.values()), "Emergency rotation: " + " → ".join(s for s, _ in timeline.steps))
    for line in timeline.lines():
        log.info("timeline: %s", line)
    summary = f"rotated {len(done)}/{len(names)}, safe {sum(safe.values())}, revoked {len(rdone)}"
    message = emergency_timeline_message(names, timeline.steps, f"{reason}: {summary}" + (f"; {len(failures)} problems" if failures else ""))
    notify_slack(slack_block, message.title, message.lines, message.table)
    if failures:
        return Failed(message=f"{summary}; {len(failures)} problems: " + "; ".join(failures),
                      data={"timeline": timeline.lines(), "rows": list(rows.values())})
    return Completed(message=summary, data={"timeline": timeline.lines(), "rows": list(rows.values())})
