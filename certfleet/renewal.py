"""Renew one certificate, once: lock, look again, issue, check, store.

certmagic's habit: after taking the lock, re-read the store — another run (another
worker, another schedule) may have renewed while we waited, and then there is nothing
to do. The issuer only ever sees a CSR; the key goes from here to the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from certfleet import keys, pki, policy
from certfleet.contracts import IssuanceRequest, Issuer
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


def decide(spec: CertificateSpec, store: LocalStore, now: datetime | None = None):
    """``needs_reissue`` for ``spec`` against what the store holds now."""
    cur = store.current(spec.name)
    return policy.needs_reissue(policy.ReissueInput(
        domains=tuple(spec.domains), key_type=str(spec.key_type),
        stored=cur.info if cur else None, now=now or datetime.now(timezone.utc)))


def renew(spec: CertificateSpec, store: LocalStore, issuer: Issuer, *, issuer_name: str,
          force: bool = False, lock_timeout: float = 600.0, ledger=None) -> RenewalOutcome:
    """Issue a new version of ``spec`` if (and only if) it is needed, under the lock."""
    with store.lock(spec.name, timeout=lock_timeout):
        check = decide(spec, store)  # look again: someone may have renewed meanwhile
        cur = store.current(spec.name)
        if check.ok and not force:
            log.info("certificate '%s': %s; nothing to issue", spec.name, check.message)
            return RenewalOutcome(spec.name, cur.serial, False, check.reason, check.message, cur.serial)  # type: ignore[union-attr]
        version = issue_version(spec, store, issuer, issuer_name=issuer_name, why=check.reason,
                                new_key=not spec.reuse_key, ledger=ledger)
        return RenewalOutcome(spec.name, version.serial, True, check.reason, check.message, cur.serial if cur else None)


def issue_version(spec: CertificateSpec, store: LocalStore, issuer: Issuer, *, issuer_name: str,
                  why: str, new_key: bool = True, ledger=None, emergency: bool = False):
    """Issue and store a new version. The caller holds the certificate's lock.

    With a rate-limit ``ledger``, the budgets are checked before any order is placed
    (``emergency`` may use the reserved slice) and every order, failed validation and
    issuance is recorded. Checks what came back before storing it: the key must match
    and the names must be covered, or nothing is stored and the current version stays.
    """
    if ledger is not None:
        ledger.check(spec.domains, emergency=emergency)  # BudgetExceeded: no order placed
        ledger.record_order()  # every attempt counts: over-counting can only refuse early
    cur = store.current(spec.name)
    key_pem = _key_for(spec, store, cur, new_key)
    key = pki.load_private_key(key_pem)
    csr = keys.make_csr(key, spec.domains)
    log.info("certificate '%s': %s; asking issuer '%s' for %s", spec.name, why, issuer_name, ", ".join(spec.domains))
    try:
        issued = issuer.issue(IssuanceRequest(name=spec.name, domains=tuple(spec.domains), csr_pem=csr))
    except Exception as exc:
        failed_identifier = getattr(exc, "identifier", None)
        if ledger is not None and failed_identifier:
            ledger.record_failed_validation(failed_identifier)
        raise
    if ledger is not None:
        ledger.record_issued(spec.domains)
    chain = pki.order_chain(pki.load_certs(issued.fullchain_pem))
    if not pki.key_matches(chain[0], key):
        raise RenewalError(f"certificate '{spec.name}': issuer '{issuer_name}' returned a certificate for another key; nothing stored")
    missing = pki.uncovered(pki.sans_of(chain[0]), spec.domains)
    if missing:
        raise RenewalError(f"certificate '{spec.name}': issuer '{issuer_name}' returned a certificate that does not cover {', '.join(missing)}; nothing stored")
    version = store.put(spec.name, issued.fullchain_pem, key_pem, issuer=issuer_name)
    log.info("certificate '%s': stored serial %s (expires %s)", spec.name, version.serial, version.info.not_after.isoformat())
    return version


def _key_for(spec: CertificateSpec, store: LocalStore, cur, new_key: bool) -> bytes:
    """A new key by default; the current one when the spec asks to reuse it."""
    if not new_key and cur is not None and cur.info.key_type == str(spec.key_type):
        return store.load_key(spec.name, cur.serial)
    return keys.key_to_pem(keys.generate_key(spec.key_type))
