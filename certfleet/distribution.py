"""Put one stored certificate on one target: skip if already there, preflight, deploy.

Idempotency comes from asking the target what it holds (``current()``), not from a
memo of what we once wrote: a target changed out of band is redeployed, a target that
already holds the serial is not touched (no write, no reload).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from datetime import datetime, timezone

from certfleet import pki, policy
from certfleet.contracts import Activatable, DeployBundle, RollbackCapable, Target
from certfleet.models import CheckResult, Receipt
from certfleet.store import LocalStore

log = logging.getLogger(__name__)


class PreflightError(RuntimeError):
    def __init__(self, target: str, result):
        self.reason = result.reason
        super().__init__(f"target '{target}': preflight {result.reason}: {result.message}; nothing written")


def deploy(certificate: str, serial: str, target_name: str, target: Target, store: LocalStore, *,
           hostnames: tuple[str, ...], roots: list | None = None,
           accepted_key_types: tuple[str, ...] | None = None) -> Receipt:
    return _deploy(certificate, serial, target_name, target, store, hostnames=hostnames, roots=roots,
                   accepted_key_types=accepted_key_types)[0]


def _deploy(certificate: str, serial: str, target_name: str, target: Target, store: LocalStore, *,
            hostnames: tuple[str, ...], roots: list | None = None,
            accepted_key_types: tuple[str, ...] | None = None) -> tuple[Receipt, str | None]:
    """``deploy``, also returning the serial the target held before (what a rollback restores)."""
    held = target.current()
    if held == serial:
        log.info("target '%s' already holds %s@%s; nothing to do", target_name, certificate, serial)
        return Receipt(target_name, certificate, serial, changed=False, detail="already current"), held
    fullchain = store.load_fullchain(certificate, serial)
    key_pem = store.load_key(certificate, serial)
    check = _preflight(policy.DistributeInput(
        certificate=certificate, fullchain_pem=fullchain, key_pem=key_pem, hostnames=hostnames,
        roots=None if roots is None else tuple(roots), now=datetime.now(timezone.utc),
        accepted_key_types=accepted_key_types))
    if not check.ok:
        raise PreflightError(target_name, check)
    log.info("target '%s': deploying %s@%s (was %s)", target_name, certificate, serial, held or "nothing")
    receipt = target.deploy(DeployBundle(certificate, serial, fullchain, key_pem))
    if isinstance(target, Activatable):
        target.activate()
    return Receipt(target_name, certificate, serial, changed=True,
                   detail=f"replaced {held or 'nothing'}; {receipt.detail}", at=receipt.at), held


#: How long a passed preflight of identical inputs is reused (a fan-out checks one
#: bundle against the same names for every target: 1,000 identical chain validations).
PREFLIGHT_REUSE_SECONDS = 60.0
_preflight_passed: dict[bytes, float] = {}
_preflight_lock = threading.Lock()


def _preflight(i: policy.DistributeInput) -> CheckResult:
    """``policy.safe_to_distribute``, reusing a pass of the very same inputs for a minute.

    Keyed by a digest of every input but the clock (chain, key, names, roots, key
    types), so a different byte anywhere is checked afresh. Only passes are reused, and
    only while the chain is still inside its validity window; failures are always
    recomputed (their message is the one the run reports).
    """
    h = hashlib.sha256()
    for part in (i.certificate.encode(), i.fullchain_pem, i.key_pem, "\0".join(i.hostnames).encode(),
                 *(pki.to_pem([r]) for r in i.roots or ()), repr(i.roots is None).encode(),
                 repr(i.accepted_key_types).encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    digest = h.digest()
    now = time.monotonic()
    with _preflight_lock:
        good_until = _preflight_passed.get(digest)
    if good_until is not None and now < good_until:
        return CheckResult(True, "OK", "preflight passed (same bundle, names and roots)")
    check = policy.safe_to_ship(i)
    if check.ok:
        chain = pki.load_certs(i.fullchain_pem)
        expires_in = min(c.not_valid_after_utc for c in chain) - (i.now or datetime.now(timezone.utc))
        reuse = min(PREFLIGHT_REUSE_SECONDS, expires_in.total_seconds())
        with _preflight_lock:
            if len(_preflight_passed) > 256:
                _preflight_passed.clear()
            _preflight_passed[digest] = now + reuse
    return check


def load_roots(path) -> list | None:
    """Trust roots from a PEM file; ``None`` (no trust bundle configured) means this
    machine's default trust store, which is what browsers and clients use for public CAs."""
    if path is None:
        return None
    from pathlib import Path

    roots = pki.load_certs(Path(path).read_bytes())
    if not roots:
        raise pki.PemError(f"trust bundle {path}: no certificate in it")
    return roots


class RolloutError(RuntimeError):
    """A target's rollout failed; ``rolled_back`` says whether the previous one is back."""

    def __init__(self, message: str, rolled_back: bool = False):
        self.rolled_back = rolled_back
        super().__init__(message)


def rollback(target_name: str, target: Target) -> str | None:
    if not isinstance(target, RollbackCapable):
        raise RolloutError(f"target '{target_name}': this kind of target cannot roll back")
    return target.rollback()


def rollout(certificate: str, serial: str, target_name: str, target: Target, store: LocalStore, *,
            hostnames: tuple[str, ...], roots: list, endpoints: list, verify_deadline: float,
            accepted_key_types: tuple[str, ...] | None = None) -> Receipt:
    """One target's transaction: deploy → verify the endpoints it feeds → roll back on failure.

    An unchanged target is verified too (it may hold the serial and still not serve it,
    e.g. a reload that never happened), but never rolled back: we wrote nothing. Nor is
    a target rolled back to a serial the store records as revoked.
    """
    from certfleet.verification import verify

    receipt, previous = _deploy(certificate, serial, target_name, target, store, hostnames=hostnames,
                                roots=roots, accepted_key_types=accepted_key_types)
    if not endpoints:
        return receipt
    # First re-probe soon: a reload usually lands within tens of milliseconds, and a
    # worker thread sleeping 0.2 s per target adds up over a 1,000-target fan-out.
    failed = [v for v in verify(endpoints, serial, roots=roots, deadline=verify_deadline, interval=0.05)
              if not v.ok]
    if not failed:
        return receipt
    why = "; ".join(v.check.message for v in failed)
    if not receipt.changed:
        raise RolloutError(f"target '{target_name}' holds {certificate}@{serial} but its endpoints do not serve it: {why}")
    revoked = store.revocations(certificate).get(previous or "")
    if revoked:  # never put a revoked certificate back: keep the new one and say so
        raise RolloutError(f"target '{target_name}': verification failed ({why}); not rolled back: the previous "
                           f"certificate {previous} was revoked ({revoked.get('reason', '?')}) and must not be served again")
    try:
        restored = rollback(target_name, target)
    except Exception as exc:  # noqa: BLE001 - reported with the verification failure
        raise RolloutError(f"target '{target_name}': verification failed ({why}); rollback failed: {exc}") from None
    log.warning("target '%s': verification failed, rolled back to %s", target_name, restored)
    raise RolloutError(f"target '{target_name}': verification failed ({why}); rolled back to {restored}", rolled_back=True)
