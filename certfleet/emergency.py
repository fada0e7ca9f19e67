"""Emergency rotation: which certificates, in what order, and the timeline of it.

Pure pieces only: selecting the affected certificates from the inventory and the
store, the RFC 5280 revocation reasons, the plan a dry run prints, the rule for when
an old certificate may be revoked, and the timeline the notification carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal, get_args

from certfleet.inventory import Inventory
from certfleet.store import LocalStore

# RFC 5280 §5.3.1 CRLReason
REASONS = {
    "unspecified": 0, "keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3,
    "superseded": 4, "cessationOfOperation": 5, "certificateHold": 6, "removeFromCRL": 8,
    "privilegeWithdrawn": 9, "aACompromise": 10,
}


# The reasons a rotation may give: what ACME CAs accept on revocation (RFC 8555 §7.6;
# Let's Encrypt refuses cACompromise and the rest). One source of truth: the flow's
# parameter type (a dropdown in the UI) and the CLI's --reason choices both read it.
Reason = Literal["keyCompromise", "superseded", "cessationOfOperation", "affiliationChanged",
                 "privilegeWithdrawn", "unspecified"]
ACCEPTED_REASONS: tuple[str, ...] = get_args(Reason)


class SelectionError(ValueError):
    pass


def reason_code(reason: str) -> int:
    if reason not in ACCEPTED_REASONS:
        raise SelectionError(f"reason '{reason}' is not accepted (one of: {', '.join(ACCEPTED_REASONS)})")
    return REASONS[reason]


@dataclass(frozen=True)
class Selector:
    """What to rotate. Every non-empty criterion adds certificates (a union)."""

    certificates: tuple[str, ...] = ()
    sharing_key_with: tuple[str, ...] = ()    # certificate names, or public-key SHA-256 fingerprints
    issuer: str | None = None                 # inventory issuer name, or a substring of the CA's DN
    target: str | None = None                 # every certificate deployed to this target

    def empty(self) -> bool:
        return not (self.certificates or self.sharing_key_with or self.issuer or self.target)


def select(inv: Inventory, store: LocalStore, sel: Selector) -> list[str]:
    """Names of the affected certificates, in inventory order. Unknown names are errors."""
    if sel.empty():
        raise SelectionError("nothing selected: give certificate names, a key, an issuer or a target")
    names = [c.name for c in inv.certificates]
    unknown = [n for n in sel.certificates if n not in names]
    if unknown:
        raise SelectionError(f"{inv.source}: no certificate named {', '.join(unknown)}")
    if sel.target and sel.target not in inv.targets:
        raise SelectionError(f"{inv.source}: no target named '{sel.target}'")
    current = {n: store.current(n) for n in names}
    wanted_keys = set()
    for k in sel.sharing_key_with:
        if k in current and current[k] is not None:
            wanted_keys.add(current[k].info.public_key_sha256)  # type: ignore[union-attr]
        elif k in names:
            raise SelectionError(f"certificate '{k}' has no issued version: its key is unknown")
        else:
            wanted_keys.add(k.lower())
    picked = []
    for spec in inv.certificates:
        cur = current[spec.name]
        hit = spec.name in sel.certificates
        hit |= bool(wanted_keys) and cur is not None and cur.info.public_key_sha256 in wanted_keys
        if sel.issuer:
            hit |= spec.issuer == sel.issuer or (cur is not None and sel.issuer.lower() in cur.info.issuer.lower())
        hit |= bool(sel.target) and sel.target in spec.targets
        if hit:
            picked.append(spec.name)
    if not picked:
        raise SelectionError("the selection matches no certificate")
    return picked


@dataclass
class PlanItem:
    certificate: str
    old_serial: str | None
    issuer: str
    fallback: str | None
    targets: list[str]
    endpoints: list[str]


def plan(inv: Inventory, store: LocalStore, names: list[str]) -> list[PlanItem]:
    items = []
    for n in names:
        spec = inv.certificate(n)
        cur = store.current(n)
        items.append(PlanItem(n, cur.serial if cur else None, spec.issuer,
                              inv.issuers[spec.issuer].get("fallback"), list(spec.targets),
                              [str(e) for e in spec.endpoint_list()]))
    return items


def may_revoke(verified_ok: bool, force: bool, reason: str) -> tuple[bool, str]:
    """Revoke only when nothing still depends on the old certificate, unless forced.

    Forcing is allowed for keyCompromise only: a stolen key is worse than a dark
    endpoint. Otherwise revoking early would take the endpoint down.
    """
    if verified_ok:
        return True, "every endpoint serves the new certificate"
    if force and reason == "keyCompromise":
        return True, "FORCED: some endpoints still serve the old certificate (keyCompromise)"
    return False, "some endpoints still serve the old certificate; not revoked"


@dataclass
class Timeline:
    steps: list[tuple[str, datetime]] = field(default_factory=list)

    def mark(self, step: str) -> None:
        self.steps.append((step, datetime.now(timezone.utc)))

    def lines(self) -> list[str]:
        if not self.steps:
            return []
        t0 = self.steps[0][1]
        return [f"{at:%H:%M:%S}Z (+{(at - t0).total_seconds():.1f}s) {step}" for step, at in self.steps]
