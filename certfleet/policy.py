"""When to renew, and whether a certificate may be distributed: pure functions.

Timing is one function with ``now`` injected (cert-manager's renewaltime.go, certmagic's
certNeedsRenewal): ACME Renewal Information first, with the chosen time persisted by the
caller and passed back in, else renew with 1/3 of the lifetime left (1/2 for
certificates of 10 days or less), and always when the end is near.

Checks are chains of small functions ``(input) -> CheckResult``; a chain stops at the
first failure and its reason is what the user reads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta
from typing import Callable, Iterable, TypeVar

from certfleet import pki
from certfleet.models import CertificateInfo, CheckResult, ProbeResult

SHORT_LIVED = timedelta(days=10)
EMERGENCY = timedelta(days=2)  # renew whatever any window says once this little is left


@dataclass(frozen=True)
class AriWindow:
    start: datetime
    end: datetime


def renewal_time(info: CertificateInfo, ari: AriWindow | None = None, chosen: datetime | None = None,
                 rng: random.Random | None = None) -> datetime:
    """The moment ``info`` should be renewed.

    With an ARI window: ``chosen`` if it lies inside the window (persisted earlier, so
    the time is not re-rolled on every check), else a uniformly random time in it.
    Without: not_after minus 1/3 of the lifetime (1/2 when the lifetime is ≤ 10 days).
    """
    if ari is not None:
        if chosen is not None and ari.start <= chosen <= ari.end:
            return chosen
        span = (ari.end - ari.start).total_seconds()
        return ari.start + timedelta(seconds=(rng or random).uniform(0, max(span, 0)))
    lifetime = info.not_after - info.not_before
    fraction = 2 if lifetime <= SHORT_LIVED else 3
    return info.not_after - lifetime / fraction


def renewal_due(info: CertificateInfo, now: datetime, ari: AriWindow | None = None,
                chosen: datetime | None = None) -> CheckResult:
    """Whether ``info`` needs renewing at ``now``, with the reason."""
    if now >= info.not_after:
        return CheckResult(False, "EXPIRED", f"certificate {info.serial} expired at {info.not_after:%Y-%m-%d %H:%M}Z")
    left = info.not_after - now
    if left <= min(EMERGENCY, (info.not_after - info.not_before) / 10):
        return CheckResult(False, "NEARLY_EXPIRED", f"certificate {info.serial} expires in {_human(left)}")
    when = renewal_time(info, ari, chosen)
    if now >= when:
        return CheckResult(False, "DUE", f"certificate {info.serial} entered its renewal window at {when:%Y-%m-%d %H:%M}Z; expires in {_human(left)}")
    return CheckResult(True, "OK", f"certificate {info.serial} renews at {when:%Y-%m-%d %H:%M}Z; expires in {_human(left)}")


def _human(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    if secs >= 2 * 86400:
        return f"{secs // 86400} days"
    if secs >= 3600:
        return f"{secs // 3600} hours"
    return f"{max(secs, 0) // 60} minutes"


T = TypeVar("T")
Check = Callable[[T], CheckResult]


def run_chain(checks: Iterable[Check], subject: T) -> CheckResult:
    """Run ``checks`` in order; return the first failure, else the last success."""
    result = CheckResult(True, "OK", "no checks")
    for check in checks:
        result = check(subject)
        if not result.ok:
            return result
    return result


# -- "needs reissue?" ------------------------------------------------------------


@dataclass(frozen=True)
class ReissueInput:
    domains: tuple[str, ...]
    key_type: str
    stored: CertificateInfo | None
    now: datetime
    served: tuple[ProbeResult, ...] = ()
    ari: AriWindow | None = None
    chosen: datetime | None = None


def _has_version(i: ReissueInput) -> CheckResult:
    if i.stored is None:
        return CheckResult(False, "NOT_ISSUED", "no version in the store yet")
    return CheckResult(True, "OK")


def _names_match(i: ReissueInput) -> CheckResult:
    want, have = {d.lower() for d in i.domains}, set(i.stored.sans)  # type: ignore[union-attr]
    if want != have:
        return CheckResult(False, "NAMES_CHANGED", f"inventory wants {', '.join(sorted(want))}; stored certificate has {', '.join(sorted(have))}")
    return CheckResult(True, "OK")


def _key_type_matches(i: ReissueInput) -> CheckResult:
    if i.stored.key_type != str(i.key_type):  # type: ignore[union-attr]
        return CheckResult(False, "KEY_TYPE_CHANGED", f"inventory wants {i.key_type}; stored certificate uses {i.stored.key_type}")  # type: ignore[union-attr]
    return CheckResult(True, "OK")


def _timing(i: ReissueInput) -> CheckResult:
    return renewal_due(i.stored, i.now, i.ari, i.chosen)  # type: ignore[arg-type]


REISSUE_CHECKS: tuple[Check, ...] = (_has_version, _names_match, _key_type_matches, _timing)


def needs_reissue(i: ReissueInput) -> CheckResult:
    """ok=True means the stored version is good: nothing to issue."""
    return run_chain(REISSUE_CHECKS, i)


# -- "safe to ship?" --------------------------------------------------------------
#
# One chain for every place a certificate is accepted: `certfleet import`, renewal's
# check of what the CA returned before it is stored, and distribution's preflight
# before a target is written. Each check returns (ok, reason, message).

#: Key types that meet the minimum strength. Ed25519 only where a target says it accepts it.
STRONG_EC_CURVES = ("ec-p256", "ec-p384")
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class DistributeInput:
    """A certificate and its key, about to be shipped (imported, stored or deployed).

    ``roots``: the trust bundle to validate the chain to; ``None`` means this machine's
    trust store (what clients of public CAs use). ``check_trust=False`` skips only the
    chain validation (renewal: the CA's own answer; trust is proven at preflight).
    """

    certificate: str
    fullchain_pem: bytes
    key_pem: bytes = field(repr=False)
    hostnames: tuple[str, ...]
    roots: tuple | None = ()
    now: datetime | None = None
    accepted_key_types: tuple[str, ...] | None = None
    check_trust: bool = True

    @cached_property
    def chain(self) -> list:
        """The bundle parsed once, leaf first, for every check of the chain to share."""
        return pki.order_chain(pki.load_certs(self.fullchain_pem))


def _parses(i: DistributeInput) -> CheckResult:
    try:
        chain = i.chain
        pki.load_private_key(i.key_pem)
    except pki.PemError as exc:
        return CheckResult(False, "MALFORMED", f"certificate '{i.certificate}': {exc}")
    return CheckResult(True, "OK", f"{len(chain)} certificates")


def _key_matches(i: DistributeInput) -> CheckResult:
    leaf = i.chain[0]
    if not pki.key_matches(leaf, pki.load_private_key(i.key_pem)):
        return CheckResult(False, "KEY_MISMATCH", f"certificate '{i.certificate}': the private key does not match certificate {pki.serial_hex(leaf)}")
    return CheckResult(True, "OK")


def _key_strength(i: DistributeInput) -> CheckResult:
    leaf = i.chain[0]
    kt = pki.key_type_of(leaf.public_key())
    if kt.startswith("rsa-") and kt[4:].isdigit() and int(kt[4:]) >= MIN_RSA_BITS:
        return CheckResult(True, "OK")
    if kt in STRONG_EC_CURVES:
        return CheckResult(True, "OK")
    if kt == "ed25519" and i.accepted_key_types is not None and "ed25519" in i.accepted_key_types:
        return CheckResult(True, "OK")
    why = "Ed25519 only where a target accepts it" if kt == "ed25519" else \
        f"minimum: RSA {MIN_RSA_BITS} bits, EC P-256 or P-384"
    return CheckResult(False, "WEAK_KEY", f"certificate '{i.certificate}' ({pki.serial_hex(leaf)}) uses a {kt} key; {why}")


def _validity_window(i: DistributeInput) -> CheckResult:
    info = pki.describe(i.chain[0])
    now = i.now or datetime.now(info.not_after.tzinfo)
    if now > info.not_after:
        return CheckResult(False, "EXPIRED", f"certificate '{i.certificate}' ({info.serial}) expired at {info.not_after:%Y-%m-%d %H:%M}Z")
    if now < info.not_before:
        return CheckResult(False, "NOT_YET_VALID", f"certificate '{i.certificate}' ({info.serial}) is not valid before {info.not_before:%Y-%m-%d %H:%M}Z")
    return CheckResult(True, "OK")


def _covers(i: DistributeInput) -> CheckResult:
    leaf = i.chain[0]
    missing = pki.uncovered(pki.sans_of(leaf), i.hostnames)
    if missing:
        return CheckResult(False, "SANS_DO_NOT_COVER", f"certificate '{i.certificate}' ({', '.join(pki.sans_of(leaf))}) does not cover {', '.join(missing)}")
    return CheckResult(True, "OK")


def _names_valid(i: DistributeInput) -> CheckResult:
    from certfleet import names

    for n in (*i.hostnames, *(s for s in pki.sans_of(i.chain[0]) if not names.is_ip_literal(s))):
        bad = names.name_problem(n, allow_ip=n not in i.hostnames)
        if bad is not None:
            return CheckResult(False, bad[0], f"certificate '{i.certificate}': {bad[1]}")
    return CheckResult(True, "OK")


def _key_type_accepted(i: DistributeInput) -> CheckResult:
    if i.accepted_key_types is None:
        return CheckResult(True, "OK")
    leaf = i.chain[0]
    kt = pki.key_type_of(leaf.public_key())
    if kt not in i.accepted_key_types:
        return CheckResult(False, "KEY_TYPE_REJECTED", f"certificate '{i.certificate}' uses {kt}; the target accepts {', '.join(i.accepted_key_types)}")
    return CheckResult(True, "OK")


def _chain_valid(i: DistributeInput) -> CheckResult:
    if not i.check_trust:
        return CheckResult(True, "OK", "trust not checked here")
    chain = i.chain
    roots = pki.system_roots() if i.roots is None else list(i.roots)
    where = "this machine's trust store (no trust_bundle set)" if i.roots is None else "the trust bundle"
    res = pki.verify_chain(chain[0], chain[1:], roots, None, i.now)
    if not res.ok:
        return CheckResult(False, res.reason, f"certificate '{i.certificate}' does not validate to {where}: {res.message}")
    return res


SHIP_CHECKS: tuple[Check, ...] = (_parses, _key_matches, _key_strength, _key_type_accepted, _validity_window,
                                  _chain_valid, _covers, _names_valid)
DISTRIBUTE_CHECKS = SHIP_CHECKS


def safe_to_ship(i: DistributeInput) -> CheckResult:
    """The one "safe to ship?" chain: import, renewal's store check and preflight use it."""
    return run_chain(SHIP_CHECKS, i)


safe_to_distribute = safe_to_ship


# -- "verified?" -----------------------------------------------------------------


def verified(result: ProbeResult, expected_serial: str) -> CheckResult:
    """An endpoint is verified when it serves ``expected_serial`` with a valid chain and name."""
    where = str(result.endpoint)
    if not result.ok and result.leaf is None:
        return CheckResult(False, result.status, f"{where}: {result.reason}")
    if result.serial != expected_serial:
        return CheckResult(False, "DRIFT", f"{where} serves serial {result.serial}, expected {expected_serial}")
    if not result.ok:
        return CheckResult(False, result.status, f"{where}: {result.reason}")
    return CheckResult(True, "OK", f"{where} serves {expected_serial}")
