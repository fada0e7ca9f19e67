"""Rate-limit budgets: stop before the CA's limits do, and keep some for an emergency.

Let's Encrypt refuses orders past its rate limits for up to a week. A fleet that burns
its budget on a retry loop on Tuesday cannot rotate a compromised key on Wednesday. So
every issuer keeps a ledger of what it spent, ``check`` is asked before each order, and
a slice of every budget (10%, at least one) is held back for ``emergency=True`` — the
emergency-rotation flow.

Defaults are Let's Encrypt's published limits:

* 50 new certificates per registered domain per 7 days,
* 5 new certificates per exact set of names per 7 days,
* 5 failed validations per identifier (per account) per hour,
* 300 new orders per account per 3 hours.

Deliberately conservative: Let's Encrypt exempts renewals (same exact set of names)
from the per-domain limit; here they count, so the ledger can only refuse early, never
late. "Registered domain" is the public-suffix-aware one (``shop.example.co.uk`` →
``example.co.uk``) from the Public Suffix List bundled in the ``publicsuffixlist``
wheel: nothing is downloaded at run time.

An order counts against every budget from the moment it is *reserved* until it ends:
``reserve_order`` checks and records an open reservation in one atomic step, so twenty
renewals racing for the last slot of a domain get one slot between them, not twenty.
The reservation becomes an issued certificate (``record_issued(..., reservation=)``), is
released when the order fails (``release``), or, abandoned by a worker that died, stops
counting after ``Limits.reservation_ttl``.

The ledger is one JSON document per issuer account in the storage seam
(``Keys.ledger(issuer)``, i.e. ``<store>/_ledger/<issuer>.json`` for a local store), so
every worker shares it. Each change is a read-modify-write with compare-and-set: a
writer that lost the race reads again and re-checks. Events older than the longest
window are dropped on every write. ``now`` is injectable everywhere. No Prefect.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from certfleet.storage import Conflict, LocalStorage, NotFound, Storage, StoreError

LEDGER_VERSION = 1


@dataclass(frozen=True)
class Limit:
    """At most ``count`` events per key in any ``window``."""

    name: str
    count: int
    window: timedelta

    def reserve(self, fraction: float) -> int:
        """Events held back for emergencies: ``fraction`` of the limit, at least 1, at most all of it."""
        return min(self.count, max(1, math.floor(self.count * fraction)))


@dataclass(frozen=True)
class Limits:
    """The budgets one ACME account lives within; Let's Encrypt's by default."""

    certificates_per_domain: Limit = Limit("new certificates per registered domain", 50, timedelta(days=7))
    certificates_per_name_set: Limit = Limit("new certificates per exact set of names", 5, timedelta(days=7))
    failed_validations: Limit = Limit("failed validations per identifier", 5, timedelta(hours=1))
    new_orders: Limit = Limit("new orders per account", 300, timedelta(hours=3))
    emergency_fraction: float = 0.10
    reservation_ttl: timedelta = timedelta(hours=1)
    """How long a reserved order counts without ending: then its worker is taken to have
    died with it (an order that really runs longer than this is not expected)."""

    def longest_window(self) -> timedelta:
        return max(
            self.certificates_per_domain.window,
            self.certificates_per_name_set.window,
            self.failed_validations.window,
            self.new_orders.window,
        )


class BudgetExceeded(Exception):
    """An order now would exceed (or eat into the emergency reserve of) a rate limit.

    ``frees_at`` is when enough counted events have aged out for one more order;
    ``None`` when the whole limit is the emergency reserve (a limit of 1).
    """

    def __init__(self, limit: Limit, key: str, used: int, allowed: int, reserve: int,
                 frees_at: datetime | None, emergency: bool) -> None:
        self.limit, self.key, self.used, self.allowed = limit, key, used, allowed
        self.reserve, self.frees_at, self.emergency = reserve, frees_at, emergency
        if emergency:
            budget = f"{used} of {limit.count} used, emergency reserve included"
        else:
            budget = f"{used} of {allowed} used ({reserve} more held back for emergency rotation)"
        if frees_at is None:
            when = "only emergency rotation may use this budget"
        else:
            when = f"the next slot frees at {frees_at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
        super().__init__(f"rate limit '{limit.name}' for {key}: {budget} in the last {_span(limit.window)}; {when}")


@dataclass
class _Events:
    """The ledger's content: timestamps (aware, UTC) with what each event was about."""

    issued: list[tuple[datetime, list[str]]] = field(default_factory=list)
    failed: list[tuple[datetime, str]] = field(default_factory=list)
    orders: list[datetime] = field(default_factory=list)
    open: list[tuple[str, datetime, list[str]]] = field(default_factory=list)  # (id, reserved at, names)


class Ledger:
    """One ACME account's spending: a document ``key`` in ``storage``.

    ``Ledger(path)`` is the same over a local directory (``path``'s parent).
    """

    def __init__(self, path: Path | str | None = None, limits: Limits | None = None, *,
                 storage: Storage | None = None, key: str | None = None) -> None:
        if storage is None:
            if path is None:
                raise ValueError("rate-limit ledger: give a path, or a storage and a key")
            self.path: Path | None = Path(path)
            storage, key = LocalStorage(self.path.parent, label="rate-limit ledger"), self.path.name
        else:
            self.path = None
        if not key:
            raise ValueError("rate-limit ledger: no storage key")
        self.storage, self.key = storage, key
        self.limits = limits or Limits()
        self.where = str(self.path) if self.path else f"{getattr(storage, 'label', 'storage')} {key}"

    # --- asking -----------------------------------------------------------------------

    def check(self, names: Iterable[str], emergency: bool = False, *, now: datetime | None = None) -> None:
        """Raise :class:`BudgetExceeded` if one more order (and certificate) for ``names`` is over budget.

        Checked in the order a CA would refuse: account orders, failed validations per
        name, certificates per registered domain, certificates per exact name set.
        """
        now = _now(now)
        events, _ = self._read()
        self._check(events, normalize(names), now, emergency)

    def reserve_order(self, names: Iterable[str], emergency: bool = False, *, now: datetime | None = None) -> str:
        """Check and reserve in one atomic step: what an issuance does before its order.

        Returns the reservation's id. From now on the order counts as a certificate for
        ``names`` in every budget, until ``record_issued(..., reservation=id)``,
        ``release(id)``, or ``reservation_ttl`` (abandoned). The order itself counts
        against the account's order budget for its window, whatever its end.
        """
        now, names = _now(now), normalize(names)
        rid = uuid.uuid4().hex

        def change(events: _Events) -> None:
            self._check(events, names, now, emergency)
            events.orders.append(now)
            events.open.append((rid, now, names))

        self._update(change, now)
        return rid

    def release(self, reservation: str, *, now: datetime | None = None) -> None:
        """The reserved order ended without a certificate (failed, refused): free its slot."""
        self._update(lambda events: _drop_open(events, reservation), _now(now))

    def counted(self, names: Iterable[str], *, now: datetime | None = None) -> int:
        """Certificates (issued + reserved) counted now against ``names``' registered domain(s), at most."""
        now, names = _now(now), normalize(names)
        events, _ = self._read()
        domains = {registered_domain(n) for n in names}
        stamps = self._certificates(events, now, lambda issued: bool(domains & {registered_domain(n) for n in issued}))
        return len([at for at in stamps if at > now - self.limits.certificates_per_domain.window])

    def _certificates(self, events: "_Events", now: datetime, match: Callable[[list[str]], bool]) -> list[datetime]:
        """Issued certificates and live reservations whose names ``match``."""
        live = now - self.limits.reservation_ttl
        return ([at for at, issued in events.issued if match(issued)]
                + [at for _, at, reserved in events.open if at > live and match(reserved)])

    def _check(self, events: "_Events", names: list[str], now: datetime, emergency: bool) -> None:
        lim = self.limits
        self._require(lim.new_orders, "this account", events.orders, now, emergency)
        for name in sorted({_identifier(n) for n in names}):
            stamps = [at for at, ident in events.failed if ident == name]
            self._require(lim.failed_validations, repr(name), stamps, now, emergency)
        for domain in sorted({registered_domain(n) for n in names}):
            stamps = self._certificates(events, now, lambda issued: domain in {registered_domain(n) for n in issued})
            self._require(lim.certificates_per_domain, repr(domain), stamps, now, emergency)
        stamps = self._certificates(events, now, lambda issued: issued == names)
        self._require(lim.certificates_per_name_set, f"[{', '.join(names)}]", stamps, now, emergency)

    def _require(self, limit: Limit, key: str, stamps: list[datetime], now: datetime, emergency: bool) -> None:
        """Raise when the events inside the window leave no room for one more."""
        recent = sorted(at for at in stamps if at > now - limit.window)
        reserve = limit.reserve(self.limits.emergency_fraction)
        allowed = limit.count if emergency else limit.count - reserve
        if len(recent) < allowed:
            return
        # One slot opens when the (used - allowed + 1)-th oldest event leaves the window.
        frees_at = recent[len(recent) - allowed] + limit.window if allowed > 0 else None
        raise BudgetExceeded(limit, key, len(recent), allowed, reserve, frees_at, emergency)

    # --- recording --------------------------------------------------------------------

    def record_issued(self, names: Iterable[str], *, now: datetime | None = None,
                      reservation: str | None = None) -> None:
        """A certificate for ``names`` was issued (counts per registered domain and per name set).

        ``reservation``: the order it was reserved by, which stops counting as open."""
        stamp, names = _now(now), normalize(names)

        def change(events: _Events) -> None:
            if reservation:
                _drop_open(events, reservation)
            events.issued.append((stamp, names))

        self._update(change, stamp)

    def record_failed_validation(self, identifier: str, *, now: datetime | None = None) -> None:
        """The CA rejected a challenge for ``identifier`` (a wildcard counts for its base name)."""
        stamp, ident = _now(now), _identifier(identifier)
        self._update(lambda events: events.failed.append((stamp, ident)), stamp)

    def record_order(self, *, now: datetime | None = None) -> None:
        """A new order was placed with this account (successful or not)."""
        stamp = _now(now)
        self._update(lambda events: events.orders.append(stamp), stamp)

    def _update(self, change, now: datetime) -> None:
        """Read, change, drop what aged out, write with compare-and-set; again if another writer won."""
        while True:
            events, version = self._read()
            change(events)
            data = self._encode(_pruned(events, now - self.limits.longest_window(), now - self.limits.reservation_ttl))
            try:
                self.storage.put(self.key, data, if_match=version, create_only=version is None)
                return
            except Conflict:
                continue  # someone else wrote meanwhile: look again (and check again)
            except StoreError as exc:
                raise LedgerError(f"rate-limit ledger {self.where}: cannot write: {exc}") from None

    # --- document ---------------------------------------------------------------------

    def _read(self) -> tuple[_Events, str | None]:
        """The ledger's events and version; a missing one is empty, a corrupt one an error."""
        try:
            item = self.storage.read(self.key)
        except NotFound:
            return _Events(), None
        except StoreError as exc:
            raise LedgerError(f"rate-limit ledger {self.where}: unreadable: {exc}") from None
        try:
            data = json.loads(item.value)
        except ValueError as exc:
            raise LedgerError(f"rate-limit ledger {self.where}: unreadable: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != LEDGER_VERSION:
            raise LedgerError(f"rate-limit ledger {self.where}: not a version {LEDGER_VERSION} ledger")
        try:
            return _Events(
                issued=[(_parse(e["at"]), list(e["names"])) for e in data.get("issued", [])],
                failed=[(_parse(e["at"]), str(e["identifier"])) for e in data.get("failed", [])],
                orders=[_parse(at) for at in data.get("orders", [])],
                open=[(str(e["id"]), _parse(e["at"]), list(e["names"])) for e in data.get("open", [])],
            ), item.version
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(f"rate-limit ledger {self.where}: malformed event: {exc}") from None

    @staticmethod
    def _encode(events: _Events) -> bytes:
        data: dict[str, Any] = {
            "version": LEDGER_VERSION,
            "issued": [{"at": at.isoformat(), "names": names} for at, names in events.issued],
            "failed": [{"at": at.isoformat(), "identifier": ident} for at, ident in events.failed],
            "orders": [at.isoformat() for at in events.orders],
            "open": [{"id": rid, "at": at.isoformat(), "names": names} for rid, at, names in events.open],
        }
        return (json.dumps(data, indent=1) + "\n").encode()


class LedgerError(RuntimeError):
    """The ledger cannot be read or written; refusing is safer than assuming an empty budget."""


def ledger_path(store_root: Path | str, issuer_name: str) -> Path:
    """``<store>/_ledger/<issuer>.json``, the issuer name made safe as a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", issuer_name).strip("._") or "issuer"
    return Path(store_root) / "_ledger" / f"{safe}.json"


def normalize(names: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated, lower-case names without a trailing dot: the "exact set" key."""
    cleaned = sorted({n.strip().rstrip(".").lower() for n in names if n and n.strip()})
    if not cleaned:
        raise ValueError("rate limit: no names given")
    return cleaned


def registered_domain(name: str) -> str:
    """``www.shop.example.co.uk`` → ``example.co.uk``; an IP address or a bare suffix is its own key."""
    host = name.strip().rstrip(".").lower().removeprefix("*.")
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    return _psl().privatesuffix(host) or host


@functools.lru_cache(maxsize=1)
def _psl():
    """The bundled Public Suffix List, parsed once (~50 ms)."""
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def _identifier(name: str) -> str:
    """ACME names a wildcard's authorization by its base name."""
    return name.strip().rstrip(".").lower().removeprefix("*.")


def _pruned(events: _Events, cutoff: datetime, abandoned: datetime) -> _Events:
    """Drop events older than ``cutoff`` and reservations older than ``abandoned``."""
    return _Events(
        issued=[(at, names) for at, names in events.issued if at > cutoff],
        failed=[(at, ident) for at, ident in events.failed if at > cutoff],
        orders=[at for at in events.orders if at > cutoff],
        open=[(rid, at, names) for rid, at, names in events.open if at > abandoned],
    )


def _drop_open(events: _Events, reservation: str) -> None:
    events.open[:] = [o for o in events.open if o[0] != reservation]


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ValueError("rate limit: now must be timezone-aware")
    return now.astimezone(timezone.utc)


def _parse(text: str) -> datetime:
    return _now(datetime.fromisoformat(text))


def _span(window: timedelta) -> str:
    """'7 days', '3 hours', '1 hour' — the window as the limit is usually spoken."""
    seconds = int(window.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"
