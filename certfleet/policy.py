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


# -- "safe to distribute?" -------------------------------------------------------


@dataclass(frozen=True)
class DistributeInput:
    certificate: str
    fullchain_pem: bytes
    key_pem: bytes = field(repr=False)
    hostnames: tuple[str, ...]
    roots: tuple = ()
    now: datetime | None = None
    accepted_key_types: tuple[str, ...] | None = None

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


def _covers(i: DistributeInput) -> CheckResult:
    leaf = i.chain[0]
    missing = pki.uncovered(pki.sans_of(leaf), i.hostnames)
    if missing:
        return CheckResult(False, "SANS_DO_NOT_COVER", f"certificate '{i.certificate}' ({', '.join(pki.sans_of(leaf))}) does not cover {', '.join(missing)}")
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
    chain = i.chain
    if not i.roots:
        # Without roots we can still refuse expired / not-yet-valid certificates.
        info = pki.describe(chain[0])
        now = i.now or datetime.now(info.not_after.tzinfo)
        if now > info.not_after:
            return CheckResult(False, "EXPIRED", f"certificate '{i.certificate}' ({info.serial}) expired at {info.not_after:%Y-%m-%d %H:%M}Z")
        if now < info.not_before:
            return CheckResult(False, "NOT_YET_VALID", f"certificate '{i.certificate}' ({info.serial}) is not valid before {info.not_before:%Y-%m-%d %H:%M}Z")
        return CheckResult(True, "OK")
    res = pki.verify_chain(chain[0], chain[1:], list(i.roots), None, i.now)
    if not res.ok:
        return CheckResult(False, res.reason, f"certificate '{i.certificate}': {res.message}")
    return res


DISTRIBUTE_CHECKS: tuple[Check, ...] = (_parses, _key_matches, _chain_valid, _covers, _key_type_accepted)


def safe_to_distribute(i: DistributeInput) -> CheckResult:
    return run_chain(DISTRIBUTE_CHECKS, i)


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
