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

The ledger is one JSON file per issuer account (e.g. ``<store>/_ledger/<issuer>.json``),
updated under an exclusive ``flock`` and replaced atomically; events older than the
longest window are dropped on every write. ``now`` is injectable everywhere. No Prefect.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from certfleet.fsutil import atomic_write

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


class Ledger:
    """One ACME account's spending, on disk at ``path``."""

    def __init__(self, path: Path | str, limits: Limits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or Limits()

    # --- asking -----------------------------------------------------------------------

    def check(self, names: Iterable[str], emergency: bool = False, *, now: datetime | None = None) -> None:
        """Raise :class:`BudgetExceeded` if one more order (and certificate) for ``names`` is over budget.

        Checked in the order a CA would refuse: account orders, failed validations per
        name, certificates per registered domain, certificates per exact name set.
        """
        now = _now(now)
        with self._locked():
            events = self._read()
        self._check(events, normalize(names), now, emergency)

    def reserve_order(self, names: Iterable[str], emergency: bool = False, *, now: datetime | None = None) -> None:
        """``check`` and ``record_order`` in one locked step: what an issuance does first.

        One lock, one read, one write per order (instead of two of each): twenty
        renewals at once otherwise queue behind this file.
        """
        now = _now(now)
        with self._locked():
            events = self._read()
            self._check(events, normalize(names), now, emergency)
            events.orders.append(now)
            self._write(_pruned(events, now - self.limits.longest_window()))

    def _check(self, events: "_Events", names: list[str], now: datetime, emergency: bool) -> None:
        lim = self.limits
        self._require(lim.new_orders, "this account", events.orders, now, emergency)
        for name in sorted({_identifier(n) for n in names}):
            stamps = [at for at, ident in events.failed if ident == name]
            self._require(lim.failed_validations, repr(name), stamps, now, emergency)
        for domain in sorted({registered_domain(n) for n in names}):
            stamps = [at for at, issued in events.issued if domain in {registered_domain(n) for n in issued}]
            self._require(lim.certificates_per_domain, repr(domain), stamps, now, emergency)
        stamps = [at for at, issued in events.issued if issued == names]
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

    def record_issued(self, names: Iterable[str], *, now: datetime | None = None) -> None:
        """A certificate for ``names`` was issued (counts per registered domain and per name set)."""
        stamp, names = _now(now), normalize(names)
        self._update(lambda events: events.issued.append((stamp, names)), stamp)

    def record_failed_validation(self, identifier: str, *, now: datetime | None = None) -> None:
        """The CA rejected a challenge for ``identifier`` (a wildcard counts for its base name)."""
        stamp, ident = _now(now), _identifier(identifier)
        self._update(lambda events: events.failed.append((stamp, ident)), stamp)

    def record_order(self, *, now: datetime | None = None) -> None:
        """A new order was placed with this account (successful or not)."""
        stamp = _now(now)
        self._update(lambda events: events.orders.append(stamp), stamp)

    def _update(self, change, now: datetime) -> None:
        """Read, change, drop what aged out, write — all under the lock."""
        with self._locked():
            events = self._read()
            change(events)
            self._write(_pruned(events, now - self.limits.longest_window()))

    # --- file -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive ``flock`` on a sidecar file: the ledger itself is replaced on write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> _Events:
        """The ledger's events; a missing file is an empty ledger, a corrupt one an error."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return _Events()
        except (OSError, ValueError) as exc:
            raise LedgerError(f"rate-limit ledger {self.path}: unreadable: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != LEDGER_VERSION:
            raise LedgerError(f"rate-limit ledger {self.path}: not a version {LEDGER_VERSION} ledger")
        try:
            return _Events(
                issued=[(_parse(e["at"]), list(e["names"])) for e in data.get("issued", [])],
                failed=[(_parse(e["at"]), str(e["identifier"])) for e in data.get("failed", [])],
                orders=[_parse(at) for at in data.get("orders", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(f"rate-limit ledger {self.path}: malformed event: {exc}") from None

    def _write(self, events: _Events) -> None:
        data: dict[str, Any] = {
            "version": LEDGER_VERSION,
            "issued": [{"at": at.isoformat(), "names": names} for at, names in events.issued],
            "failed": [{"at": at.isoformat(), "identifier": ident} for at, ident in events.failed],
            "orders": [at.isoformat() for at in events.orders],
        }
        # No fsync: losing the last event to a power cut can only let one order through
        # that the CA itself would still refuse; fsyncing every event serialised renewals.
        atomic_write(self.path, (json.dumps(data, indent=1) + "\n").encode(), mode=0o600, fsync=False)


class LedgerError(RuntimeError):
    """The ledger file cannot be read; refusing is safer than assuming an empty budget."""


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


def _pruned(events: _Events, cutoff: datetime) -> _Events:
    return _Events(
        issued=[(at, names) for at, names in events.issued if at > cutoff],
        failed=[(at, ident) for at, ident in events.failed if at > cutoff],
        orders=[at for at in events.orders if at > cutoff],
    )


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
