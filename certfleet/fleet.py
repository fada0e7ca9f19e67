"""The fleet snapshot: per certificate, what was issued, what each target holds, what
each endpoint serves — one row each, a status and the reason. Pure: facts in, rows out.

Statuses, most urgent first: EXPIRED, UNREACHABLE, HOSTNAME_MISMATCH, UNTRUSTED_CHAIN,
INCOMPLETE_CHAIN, DRIFT (serves or holds a serial other than the latest issued — the
"renewed but not deployed" case), DUE (inside its renewal window), NOT_ISSUED, OK.
Certificates found live but absent from the inventory are UNMANAGED.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Sequence

from certfleet import policy
from certfleet.models import CertificateInfo, ProbeResult, ProbeStatus


class Status(str, enum.Enum):
    OK = "OK"
    DUE = "DUE"
    DRIFT = "DRIFT"
    EXPIRED = "EXPIRED"
    HOSTNAME_MISMATCH = "HOSTNAME_MISMATCH"
    UNTRUSTED_CHAIN = "UNTRUSTED_CHAIN"
    INCOMPLETE_CHAIN = "INCOMPLETE_CHAIN"
    UNREACHABLE = "UNREACHABLE"
    NOT_ISSUED = "NOT_ISSUED"
    UNMANAGED = "UNMANAGED"

    def __str__(self) -> str:
        return self.value


_PROBE_TO_STATUS = {
    ProbeStatus.REFUSED: Status.UNREACHABLE, ProbeStatus.RESET: Status.UNREACHABLE,
    ProbeStatus.TIMEOUT: Status.UNREACHABLE, ProbeStatus.PLAIN_HTTP: Status.UNREACHABLE,
    ProbeStatus.HANDSHAKE_FAILED: Status.UNREACHABLE, ProbeStatus.UNREACHABLE: Status.UNREACHABLE,
    ProbeStatus.SELF_SIGNED: Status.UNTRUSTED_CHAIN, ProbeStatus.UNTRUSTED_CHAIN: Status.UNTRUSTED_CHAIN,
    ProbeStatus.INCOMPLETE_CHAIN: Status.INCOMPLETE_CHAIN, ProbeStatus.EXPIRED: Status.EXPIRED,
    ProbeStatus.NOT_YET_VALID: Status.UNTRUSTED_CHAIN, ProbeStatus.HOSTNAME_MISMATCH: Status.HOSTNAME_MISMATCH,
}


@dataclass(frozen=True)
class Row:
    certificate: str            # inventory name, or "" for UNMANAGED
    kind: str                   # "endpoint" | "target" | "discovered"
    location: str               # endpoint "sni@host:port", target name, or source location
    status: Status
    reason: str
    issued_serial: str | None = None
    seen_serial: str | None = None
    not_after: datetime | None = None
    days_left: float | None = None

    def as_table_row(self) -> dict:
        return {
            "certificate": self.certificate or "(unmanaged)", "kind": self.kind, "where": self.location,
            "status": str(self.status), "serving": self.seen_serial or "-", "issued": self.issued_serial or "-",
            "days left": "-" if self.days_left is None else f"{self.days_left:.1f}", "reason": self.reason,
        }


def _days(info: CertificateInfo | None, now: datetime) -> float | None:
    return None if info is None else info.remaining(now) / 86400


def endpoint_row(name: str, stored: CertificateInfo | None, probe: ProbeResult, now: datetime) -> Row:
    where, leaf = str(probe.endpoint), probe.leaf
    base = dict(certificate=name, kind="endpoint", location=where, issued_serial=stored.serial if stored else None,
                seen_serial=leaf.serial if leaf else None, not_after=leaf.not_after if leaf else None,
                days_left=_days(leaf, now))
    if leaf is None:
        return Row(status=_PROBE_TO_STATUS.get(ProbeStatus(probe.status), Status.UNREACHABLE), reason=probe.reason, **base)
    if leaf.not_after <= now:
        return Row(status=Status.EXPIRED, reason=f"{where} serves {leaf.serial}, expired {leaf.not_after:%Y-%m-%d %H:%M}Z", **base)
    if not probe.ok:
        return Row(status=_PROBE_TO_STATUS.get(ProbeStatus(probe.status), Status.UNREACHABLE), reason=probe.reason, **base)
    if stored is not None and leaf.serial != stored.serial:
        return Row(status=Status.DRIFT, reason=f"{where} serves {leaf.serial}, but {stored.serial} was issued", **base)
    due = policy.renewal_due(leaf, now)
    if not due.ok:
        return Row(status=Status.DUE, reason=f"{where}: {due.message}", **base)
    if stored is None:
        return Row(status=Status.NOT_ISSUED, reason=f"{where} serves {leaf.serial}; certfleet has issued nothing yet", **base)
    return Row(status=Status.OK, reason=f"{where} serves {leaf.serial}; {due.message}", **base)


def target_row(name: str, stored: CertificateInfo | None, target: str, held: str | None, error: str | None = None) -> Row:
    base = dict(certificate=name, kind="target", location=target, issued_serial=stored.serial if stored else None, seen_serial=held)
    if error is not None:
        return Row(status=Status.UNREACHABLE, reason=f"target '{target}': {error}", **base)
    if stored is None:
        return Row(status=Status.NOT_ISSUED, reason=f"target '{target}' holds {held or 'nothing'}; nothing issued yet", **base)
    if held != stored.serial:
        return Row(status=Status.DRIFT, reason=f"target '{target}' holds {held or 'nothing'}, but {stored.serial} was issued", **base)
    return Row(status=Status.OK, reason=f"target '{target}' holds {held}", **base)


@dataclass(frozen=True)
class Discovered:
    """A certificate found live by a discovery source (no key material)."""

    source: str      # e.g. "files", "acm", "kubernetes", "tls"
    location: str    # path, ARN, namespace/name, s3 URL, endpoint
    info: CertificateInfo


@dataclass(frozen=True)
class Managed:
    """What the inventory + store know of one certificate, for attributing finds."""

    name: str
    domains: tuple[str, ...]
    serials: frozenset[str] = field(default_factory=frozenset)   # every stored version
    current: CertificateInfo | None = None


def discovered_rows(found: Iterable[Discovered], managed: list[Managed], now: datetime) -> list[Row]:
    """Attribute each find to an inventory certificate (by serial, else by names); the
    rest is UNMANAGED, so a team can adopt what it already runs (``certfleet import``)."""
    rows = []
    for d in found:
        owner = next((m for m in managed if d.info.serial in m.serials), None)
        owner = owner or next((m for m in managed if set(d.info.sans) == {x.lower() for x in m.domains}), None)
        base = dict(kind="discovered", location=f"{d.source}:{d.location}", seen_serial=d.info.serial,
                    not_after=d.info.not_after, days_left=_days(d.info, now))
        if owner is None:
            rows.append(Row(certificate="", status=Status.UNMANAGED,
                            reason=f"{d.source} {d.location}: {', '.join(d.info.sans) or d.info.subject} ({d.info.serial}) is not in the inventory",
                            **base))
            continue
        issued = owner.current.serial if owner.current else None
        if d.info.not_after <= now:
            status, why = Status.EXPIRED, f"holds {d.info.serial}, expired {d.info.not_after:%Y-%m-%d %H:%M}Z"
        elif issued and d.info.serial != issued:
            status, why = Status.DRIFT, f"holds {d.info.serial}, but {issued} was issued"
        else:
            status, why = Status.OK, f"holds {d.info.serial}"
        rows.append(Row(certificate=owner.name, status=status, reason=f"{d.source} {d.location} {why}", issued_serial=issued, **base))
    return rows


# -- events ----------------------------------------------------------------------

CRITICAL_DAYS, WARNING_DAYS = 7.0, 21.0


def severity(days_left: float) -> str:
    """Decided here, by the emitter: automations count events, they do not grade them."""
    if days_left <= CRITICAL_DAYS:
        return "critical"
    if days_left <= WARNING_DAYS:
        return "warning"
    return "info"


@dataclass(frozen=True)
class EventSpec:
    event: str
    resource: dict[str, str]
    payload: dict


def _resource(row: Row) -> dict[str, str]:
    rid = f"certfleet.certificate.{row.certificate or 'unmanaged'}"
    res = {"prefect.resource.id": rid, "prefect.resource.name": row.certificate or "(unmanaged)",
           "certfleet.certificate": row.certificate}
    if row.kind == "endpoint":
        res["certfleet.endpoint"] = row.location
    elif row.kind == "target":
        res["certfleet.target"] = row.location
    else:
        res["certfleet.location"] = row.location
    return res


def events_for(rows: list[Row]) -> list[EventSpec]:
    """Events automations can act on. Names and serials only; never key material.

    One ``expiring`` event per certificate (its most urgent endpoint), one ``drift`` per
    drifting endpoint or target, one ``unreachable`` per unreachable endpoint, and one
    ``verification.failed`` per endpoint whose chain or name does not validate.
    """
    out: list[EventSpec] = []
    worst: dict[str, Row] = {}
    for row in rows:
        if row.days_left is not None and row.certificate and row.status in (Status.DUE, Status.EXPIRED, Status.DRIFT, Status.OK, Status.NOT_ISSUED):
            if row.status in (Status.DUE, Status.EXPIRED) or row.days_left <= WARNING_DAYS:
                if row.certificate not in worst or row.days_left < worst[row.certificate].days_left:  # type: ignore[operator]
                    worst[row.certificate] = row
        elif row.days_left is not None and not row.certificate and row.days_left <= WARNING_DAYS:
            # UNMANAGED finds expire too: one event per place they were found. Their
            # certfleet.certificate label is empty, so the renew automation (which needs a
            # name) does not match them; alerts and the UI do.
            worst[f"unmanaged:{row.location}"] = row
        payload = {"status": str(row.status), "reason": row.reason, "serving": row.seen_serial, "issued": row.issued_serial}
        if row.status is Status.DRIFT:
            out.append(EventSpec("certfleet.certificate.drift", _resource(row), payload))
        elif row.status is Status.UNREACHABLE and row.kind == "endpoint":
            out.append(EventSpec("certfleet.endpoint.unreachable", _resource(row), payload))
        elif row.status in (Status.HOSTNAME_MISMATCH, Status.UNTRUSTED_CHAIN, Status.INCOMPLETE_CHAIN):
            out.append(EventSpec("certfleet.verification.failed", _resource(row), payload))
    for name, row in worst.items():
        days = row.days_left or 0.0
        res = _resource(row)
        res["certfleet.severity"] = severity(days)
        out.append(EventSpec("certfleet.certificate.expiring", res,
                             {"days_left": round(days, 2), "severity": severity(days), "not_after": row.not_after.isoformat() if row.not_after else None,
                              "status": str(row.status), "reason": row.reason, "serving": row.seen_serial}))
    return out


# -- the snapshot: one function for ``certfleet status`` and the monitor flow --------

@dataclass(frozen=True)
class Look:
    """What to look at for one certificate: what was issued, where it is served, held."""

    name: str
    stored: CertificateInfo | None
    endpoints: tuple = ()          # Endpoint objects
    roots: list | None = None      # trust roots (None: this machine's trust store)
    targets: tuple[str, ...] = ()


def snapshot(looks: Sequence[Look], *, read_target: Callable[[str], str | None] | None = None,
             now: datetime | None = None, probe_timeout: float = 5.0, batch: int = 50,
             progress: Callable[[int, str], None] | None = None) -> list[Row]:
    """What the fleet looks like: one row per endpoint (a TLS handshake each) and, with
    ``read_target``, one per target (what it holds; an error is a row, not a crash).

    Endpoints are probed ``batch`` at a time, concurrently within a batch;
    ``progress(n, what)`` is told after each step (n = items just finished).
    """
    from certfleet.probe import probe_sync

    now = now or datetime.now(timezone.utc)
    work = [(look, e) for look in looks for e in look.endpoints]
    rows: list[Row] = []
    for i in range(0, len(work), batch):
        part = work[i:i + batch]
        by_roots: dict[int, list[int]] = {}
        for j, (look, _) in enumerate(part):
            by_roots.setdefault(id(look.roots), []).append(j)
        results: list = [None] * len(part)
        for idx in by_roots.values():
            roots = part[idx[0]][0].roots
            got = probe_sync([part[j][1] for j in idx], roots=roots,
                             connect_timeout=probe_timeout, handshake_timeout=probe_timeout)
            for j, r in zip(idx, got):
                results[j] = r
        rows += [endpoint_row(look.name, look.stored, r, now) for (look, _), r in zip(part, results)]
        if progress:
            progress(len(part), f"probed {min(i + batch, len(work))} of {len(work)} endpoints")
    if read_target is not None:
        for look in looks:
            for t in look.targets:
                try:
                    held, error = read_target(t), None
                except Exception as exc:  # noqa: BLE001 - an unreachable target is a row
                    held, error = None, str(exc) or type(exc).__name__
                rows.append(target_row(look.name, look.stored, t, held, error))
                if progress:
                    progress(1, f"asked target '{t}' what it holds")
    return rows


def managed(specs, store) -> list[Managed]:
    """What the inventory + store know of each certificate, to attribute discovered finds."""
    out = []
    for spec in specs:
        cur = store.current(spec.name)
        out.append(Managed(spec.name, tuple(spec.domains), frozenset(v.serial for v in store.versions(spec.name)),
                           cur.info if cur else None))
    return out
