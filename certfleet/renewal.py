"""Renew one certificate, once: lock, look again, issue, check, store.

certmagic's habit: after taking the lock, re-read the store — another run (another
worker, another schedule) may have renewed while we waited, and then there is nothing
to do. The issuer only ever sees a CSR; the key goes from here to the store.

With an issuer that offers renewal information (RFC 9773, ``RenewalInfoProvider``) the
CA's window decides the timing: fetched before the lock, a time picked inside it and
persisted in the storage seam (``Keys.ari(name)``, shared by every worker), and the new order names the
certificate it ``replaces``. ARI is advice: any failure to get it falls back to the
1/3-lifetime rule and never fails the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from certfleet import ari, keys, pki, policy
from certfleet.contracts import IssuanceRequest, Issuer, RenewalInfoProvider
from certfleet.inventory import CertificateSpec
from certfleet.store import LocalStore

log = logging.getLogger(__name__)


class RenewalError(RuntimeError):
    pass


@dataclass(frozen=True)
class RenewalOutcome:
    """What renewal did for one certificate. No key material."""

    certificate: str
    serial: str
    issued: bool
    reason: str
    message: str
    previous_serial: str | None = None


def decide(spec: CertificateSpec, store: LocalStore, now: datetime | None = None,
           ari: policy.AriWindow | None = None, chosen: datetime | None = None):
    """``needs_reissue`` for ``spec`` against what the store holds now (ARI window first)."""
    cur = store.current(spec.name)
    return policy.needs_reissue(policy.ReissueInput(
        domains=tuple(spec.domains), key_type=str(spec.key_type),
        stored=cur.info if cur else None, now=now or datetime.now(timezone.utc),
        ari=ari, chosen=chosen))



@dataclass(frozen=True)
class AriTiming:
    """The CA's window for one stored serial and the time chosen in it (both None: no ARI)."""

    serial: str
    window: policy.AriWindow | None = None
    chosen: datetime | None = None


def chosen_times(storage, name: str) -> ari.ChosenTimes:
    """Where the chosen renewal times of certificate ``name`` are kept: ``Keys.ari(name)`` in ``storage``."""
    from certfleet.storage import Keys

    return ari.ChosenTimes(storage=storage, key=Keys.ari(name))


def ari_timing(spec: CertificateSpec, store: LocalStore, issuer: Issuer,
               chosen_at: "ari.ChosenTimes | Path | None") -> AriTiming | None:
    """Ask the issuer for the current version's window and pick/persist a time in it.

    ``None`` when there is nothing stored yet. Any failure (CA down, no AKI, a garbled
    window, an unwritable file) is logged and yields no window: the 1/3 rule applies.
    """
    cur = store.current(spec.name)
    if cur is None:
        return None
    if not isinstance(issuer, RenewalInfoProvider):
        return AriTiming(cur.serial)
    try:
        got = issuer.renewal_info(_leaf_pem(store.load_fullchain(spec.name, cur.serial)))
        if got is None:
            log.info("certificate '%s': the issuer offers no renewal information; 1/3-lifetime rule", spec.name)
            return AriTiming(cur.serial)
        start, end = (t if t.tzinfo else t.replace(tzinfo=timezone.utc) for t in got)
        if end <= start:
            raise ari.AriError(f"window ends ({end.isoformat()}) before it starts ({start.isoformat()})")
        window = policy.AriWindow(start, end)
        times = chosen_at if isinstance(chosen_at, ari.ChosenTimes) else ari.ChosenTimes(chosen_at) if chosen_at else None
        chosen = times.choose(cur.serial, window) if times else None
    except Exception as exc:  # noqa: BLE001 - ARI is advice; never fail a renewal for it
        log.warning("certificate '%s': no renewal information for serial %s (%s); using the 1/3-lifetime rule",
                    spec.name, cur.serial, exc)
        return AriTiming(cur.serial)
    log.info("certificate '%s': CA suggests renewing serial %s between %s and %s; chosen %s", spec.name,
             cur.serial, window.start.isoformat(), window.end.isoformat(), chosen.isoformat() if chosen else "-")
    return AriTiming(cur.serial, window, chosen)


def renew(spec: CertificateSpec, store: LocalStore, issuer: Issuer, *, issuer_name: str,
          force: bool = False, lock_timeout: float = 600.0, ledger=None,
          chosen_at: "ari.ChosenTimes | Path | None" = None) -> RenewalOutcome:
    """Issue a new version of ``spec`` if (and only if) it is needed, under the lock.

    ``chosen_at`` keeps the ARI choice (``chosen_times(storage, name)``); by default
    ``Keys.ari(name)`` in a local store's directory (none for other stores).
    """
    if chosen_at is None and isinstance(getattr(store, "root", None), Path):
        from certfleet.storage import LocalStorage

        chosen_at = chosen_times(LocalStorage(store.root), spec.name)  # type: ignore[attr-defined]
    timing = ari_timing(spec, store, issuer, chosen_at)  # network: before the lock
    with store.lock(spec.name, timeout=lock_timeout):
        cur = store.current(spec.name)  # look again: someone may have renewed meanwhile
        # The window belongs to the serial it was fetched for, not to a newer one.
        same = timing is not None and cur is not None and timing.serial == cur.serial
        check = decide(spec, store, ari=timing.window if same else None,  # type: ignore[union-attr]
                       chosen=timing.chosen if same else None)  # type: ignore[union-attr]
        if check.ok and not force:
            log.info("certificate '%s': %s; nothing to issue", spec.name, check.message)
            return RenewalOutcome(spec.name, cur.serial, False, check.reason, check.message, cur.serial)  # type: ignore[union-attr]
        version = issue_version(spec, store, issuer, issuer_name=issuer_name, why=check.reason,
                                new_key=not spec.reuse_key, ledger=ledger,
                                replaces=_replaces(spec, store, cur))
        return RenewalOutcome(spec.name, version.serial, True, check.reason, check.message, cur.serial if cur else None)


def _leaf_pem(fullchain_pem: bytes) -> bytes:
    return pki.to_pem(pki.order_chain(pki.load_certs(fullchain_pem))[:1])


def _replaces(spec: CertificateSpec, store: LocalStore, cur) -> str | None:
    """The ARI certID of the version being renewed (``None``: first issue, or no AKI)."""
    if cur is None:
        return None
    try:
        return ari.cert_id(_leaf_pem(store.load_fullchain(spec.name, cur.serial)))
    except Exception as exc:  # noqa: BLE001 - only a hint to the CA
        log.info("certificate '%s': serial %s has no ARI identifier (%s); not sent as replaces", spec.name, cur.serial, exc)
        return None


def issue_version(spec: CertificateSpec, store: LocalStore, issuer: Issuer, *, issuer_name: str,
                  why: str, new_key: bool = True, ledger=None, emergency: bool = False,
                  replaces: str | None = None):
    """Issue and store a new version. The caller holds the certificate's lock.

    With a rate-limit ``ledger``, the budgets are checked before any order is placed
    (``emergency`` may use the reserved slice) and every order, failed validation and
    issuance is recorded. Checks what came back before storing it: the key must match
    and the names must be covered, or nothing is stored and the current version stays.
    """
    reservation = None
    if ledger is not None:
        # BudgetExceeded: no order placed. From here the order counts in every budget
        # until it ends (issued, failed: released, or abandoned: it expires).
        reservation = ledger.reserve_order(spec.domains, emergency=emergency)
    try:
        cur = store.current(spec.name)
        key_pem = _key_for(spec, store, cur, new_key)
        key = pki.load_private_key(key_pem)
        csr = keys.make_csr(key, spec.domains)
        log.info("certificate '%s': %s; asking issuer '%s' for %s", spec.name, why, issuer_name, ", ".join(spec.domains))
        issued = issuer.issue(IssuanceRequest(name=spec.name, domains=tuple(spec.domains), csr_pem=csr,
                                              replaces=replaces))
    except BaseException as exc:
        if ledger is not None:
            failed_identifier = getattr(exc, "identifier", None)
            if failed_identifier:
                ledger.record_failed_validation(failed_identifier)
            ledger.release(reservation)
        raise
    if ledger is not None:
        ledger.record_issued(spec.domains, reservation=reservation)
    # The one "safe to ship?" chain (policy.safe_to_ship), trust aside: the CA's roots
    # need not be on the renewing worker; preflight proves the chain before any write.
    check = policy.safe_to_ship(policy.DistributeInput(
        certificate=spec.name, fullchain_pem=issued.fullchain_pem, key_pem=key_pem,
        hostnames=tuple(d.lower() for d in spec.domains), now=datetime.now(timezone.utc), check_trust=False))
    if not check.ok:
        raise RenewalError(f"certificate '{spec.name}': issuer '{issuer_name}' returned a certificate that fails "
                           f"{check.reason}: {check.message}; nothing stored")
    version = store.put(spec.name, issued.fullchain_pem, key_pem, issuer=issuer_name)
    log.info("certificate '%s': stored serial %s (expires %s)", spec.name, version.serial, version.info.not_after.isoformat())
    return version


def _key_for(spec: CertificateSpec, store: LocalStore, cur, new_key: bool) -> bytes:
    """A new key by default; the current one when the spec asks to reuse it."""
    if not new_key and cur is not None and cur.info.key_type == str(spec.key_type):
        return store.load_key(spec.name, cur.serial)
    return keys.key_to_pem(keys.generate_key(spec.key_type))


ATTEMPT_FILE = "last-attempt.json"


def attempt_path(store_root: str | Path, name: str) -> Path:
    """Where the last renewal attempt of certificate ``name`` is recorded (beside the ARI choice)."""
    return Path(store_root) / name / ATTEMPT_FILE


def record_attempt(path: Path, *, result: str, message: str, serial: str | None = None,
                   at: datetime | None = None) -> None:
    """Remember the last renewal attempt (``issued``, ``not due`` or ``failed``) for
    ``certfleet certificates``. Advice for people: a failure to write it is logged, never raised."""
    import json

    from certfleet.fsutil import atomic_write

    record = {"at": (at or datetime.now(timezone.utc)).isoformat(), "result": result, "message": message,
              "serial": serial}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(record).encode(), 0o644)
    except OSError as exc:
        log.warning("could not record the renewal attempt in %s (%s)", path, exc)


def last_attempt(path: Path) -> dict | None:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
