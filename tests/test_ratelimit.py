"""Rate-limit budgets with ``now`` injected: pure, no services, milliseconds."""

from __future__ import annotations

import json
import multiprocessing
from datetime import datetime, timedelta, timezone

import pytest

from certfleet.ratelimit import (
    BudgetExceeded,
    Ledger,
    LedgerError,
    Limit,
    Limits,
    ledger_path,
    normalize,
    registered_domain,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(ledger_path(tmp_path / "store", "acme issuer 'https://acme-v02.api.letsencrypt.org/directory'"))


def test_defaults_are_lets_encrypts_published_limits():
    lim = Limits()
    assert (lim.certificates_per_domain.count, lim.certificates_per_domain.window) == (50, timedelta(days=7))
    assert (lim.certificates_per_name_set.count, lim.certificates_per_name_set.window) == (5, timedelta(days=7))
    assert (lim.failed_validations.count, lim.failed_validations.window) == (5, timedelta(hours=1))
    assert (lim.new_orders.count, lim.new_orders.window) == (300, timedelta(hours=3))
    assert [lim.certificates_per_domain.reserve(0.1), lim.certificates_per_name_set.reserve(0.1),
            lim.new_orders.reserve(0.1)] == [5, 1, 30]


def test_registered_domain_is_public_suffix_aware():
    assert registered_domain("www.shop.example.co.uk") == "example.co.uk"
    assert registered_domain("*.api.example.com.") == "example.com"
    assert registered_domain("a.b.github.io") == "b.github.io"  # a private-section suffix
    assert registered_domain("shop.test") == "shop.test"
    assert registered_domain("192.0.2.7") == "192.0.2.7"
    assert normalize(["WWW.Example.com.", "example.com", "www.example.com"]) == ["example.com", "www.example.com"]


def test_ledger_path_is_safe_and_under_the_store(tmp_path):
    path = ledger_path(tmp_path, "acme/../../etc 'x'")
    assert path.parent == tmp_path / "_ledger" and "/" not in path.name and path.suffix == ".json"


def test_duplicate_certificates_keep_one_for_emergencies(ledger):
    names = ["shop.example.com", "www.shop.example.com"]
    for i in range(4):
        ledger.check(names, now=T0 + timedelta(hours=i))
        ledger.record_issued(reversed(names), now=T0 + timedelta(hours=i))  # order does not matter

    with pytest.raises(BudgetExceeded) as info:
        ledger.check(names, now=T0 + timedelta(hours=5))
    err = info.value
    assert (err.limit.name, err.used, err.allowed, err.reserve) == ("new certificates per exact set of names", 4, 4, 1)
    assert err.frees_at == T0 + timedelta(days=7)
    assert str(err) == (
        "rate limit 'new certificates per exact set of names' for [shop.example.com, www.shop.example.com]: "
        "4 of 4 used (1 more held back for emergency rotation) in the last 7 days; "
        "the next slot frees at 2026-03-09 09:00:00 UTC"
    )
    ledger.check(names, emergency=True, now=T0 + timedelta(hours=5))  # the reserve is there
    ledger.record_issued(names, now=T0 + timedelta(hours=5))
    with pytest.raises(BudgetExceeded, match="5 of 5 used, emergency reserve included"):
        ledger.check(names, emergency=True, now=T0 + timedelta(hours=6))

    ledger.check(["shop.example.com"], now=T0 + timedelta(hours=6))  # another set is another budget
    ledger.check(names, now=T0 + timedelta(days=7, hours=2))  # two aged out: room again


def test_certificates_per_registered_domain_count_across_subdomains(ledger):
    limits = Limits(certificates_per_domain=Limit("new certificates per registered domain", 10, timedelta(days=7)))
    ledger = Ledger(ledger.path, limits)
    for i in range(9):
        ledger.record_issued([f"host{i}.eu.example.co.uk"], now=T0 + timedelta(minutes=i))
    with pytest.raises(BudgetExceeded) as info:
        ledger.check(["new.example.co.uk", "other.test"], now=T0 + timedelta(hours=1))
    assert info.value.key == "'example.co.uk'" and info.value.used == 9 and info.value.allowed == 9
    assert info.value.frees_at == T0 + timedelta(days=7)  # the oldest of the nine
    ledger.check(["new.example.co.uk"], emergency=True, now=T0 + timedelta(hours=1))
    ledger.check(["unrelated.example.com"], now=T0 + timedelta(hours=1))


def test_failed_validations_per_identifier_per_hour(ledger):
    for minute in (0, 10, 20, 30):
        ledger.record_failed_validation("*.Shop.example.com", now=T0 + timedelta(minutes=minute))
    with pytest.raises(BudgetExceeded) as info:
        ledger.check(["shop.example.com"], now=T0 + timedelta(minutes=40))
    assert info.value.limit.name == "failed validations per identifier"
    assert info.value.frees_at == T0 + timedelta(hours=1)
    assert "'shop.example.com': 4 of 4 used" in str(info.value)
    ledger.check(["www.shop.example.com"], now=T0 + timedelta(minutes=40))
    ledger.check(["shop.example.com"], now=T0 + timedelta(minutes=60, seconds=1))


def test_new_orders_per_account(ledger):
    ledger = Ledger(ledger.path, Limits(new_orders=Limit("new orders per account", 20, timedelta(hours=3))))
    for i in range(18):
        ledger.record_order(now=T0 + timedelta(minutes=i))
    with pytest.raises(BudgetExceeded) as info:
        ledger.check(["a.example.com"], now=T0 + timedelta(minutes=30))
    assert (info.value.key, info.value.used, info.value.allowed, info.value.reserve) == ("this account", 18, 18, 2)
    ledger.check(["a.example.com"], emergency=True, now=T0 + timedelta(minutes=30))
    ledger.check(["a.example.com"], now=T0 + timedelta(hours=3, minutes=0, seconds=30))


def test_a_limit_of_one_is_emergency_only(ledger):
    ledger = Ledger(ledger.path, Limits(new_orders=Limit("new orders per account", 1, timedelta(hours=3))))
    with pytest.raises(BudgetExceeded, match="only emergency rotation may use this budget"):
        ledger.check(["a.example.com"], now=T0)
    ledger.check(["a.example.com"], emergency=True, now=T0)


def test_old_events_are_pruned_from_the_file(ledger):
    ledger.record_order(now=T0)
    ledger.record_failed_validation("a.example.com", now=T0)
    ledger.record_issued(["a.example.com"], now=T0)
    ledger.record_order(now=T0 + timedelta(days=8))
    data = json.loads(ledger.path.read_text())
    assert data == {"version": 1, "issued": [], "failed": [], "orders": ["2026-03-10T09:00:00+00:00"], "open": []}
    assert ledger.path.stat().st_mode & 0o077 == 0


def test_corrupt_ledger_refuses_instead_of_assuming_empty(ledger):
    ledger.path.parent.mkdir(parents=True, exist_ok=True)
    ledger.path.write_text("{not json")
    with pytest.raises(LedgerError, match=r"rate-limit ledger .*: unreadable"):
        ledger.check(["a.example.com"], now=T0)


def test_naive_now_is_refused(ledger):
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.record_order(now=datetime(2026, 1, 1))


def _record_orders(path: str, count: int) -> None:
    ledger = Ledger(path)
    for _ in range(count):
        ledger.record_order(now=T0)


def test_concurrent_writers_lose_no_event(ledger):
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_record_orders, args=(str(ledger.path), 10)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert len(json.loads(ledger.path.read_text())["orders"]) == 40


def test_reserve_order_checks_and_records_in_one_step(tmp_path):
    from datetime import datetime, timedelta, timezone

    from certfleet.ratelimit import BudgetExceeded, Ledger, Limit, Limits

    limits = Limits(new_orders=Limit("new orders per account", 3, timedelta(hours=3)))
    ledger = Ledger(tmp_path / "ledger.json", limits)
    now = datetime(2026, 11, 1, tzinfo=timezone.utc)
    ledger.reserve_order(["a.example.com"], now=now)
    ledger.reserve_order(["b.example.com"], now=now)
    with pytest.raises(BudgetExceeded, match="new orders per account"):
        ledger.reserve_order(["c.example.com"], now=now)  # the third is the emergency reserve
    ledger.reserve_order(["c.example.com"], emergency=True, now=now)
    with pytest.raises(BudgetExceeded):
        ledger.reserve_order(["d.example.com"], emergency=True, now=now)


def test_twenty_concurrent_renewals_keep_the_emergency_reserve(tmp_path):
    """A domain at 44 of 50 (5 held back): 20 renewals at once get one order between them.

    Each contender has its own ``Ledger`` on the shared storage (as on twenty workers)
    and keeps its reservation open until all twenty have tried: an order counts from the
    moment it is reserved, not when its certificate arrives. Before reservations counted,
    all twenty went ahead and the domain reached 64 of 50.
    """
    import threading

    from certfleet.storage import LocalStorage, Keys

    storage = LocalStorage(tmp_path / "store")
    setup = Ledger(storage=storage, key=Keys.ledger("pebble"))
    for i in range(44):
        setup.record_issued([f"host{i}.shop.example.com"], now=T0 - timedelta(days=1))
    names = ["www.shop.example.com"]
    tried, granted, refused, seen = threading.Barrier(20), [], [], []

    def renew(i: int) -> None:
        ledger = Ledger(storage=storage, key=Keys.ledger("pebble"))
        try:
            granted.append(ledger.reserve_order([f"r{i}.shop.example.com"], now=T0))
        except BudgetExceeded as exc:
            refused.append(exc)
        seen.append(ledger.counted(names, now=T0))
        tried.wait(timeout=60)  # every reservation stays open until all twenty have asked

    threads = [threading.Thread(target=renew, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(granted) == 1 and len(refused) == 19, (len(granted), len(refused))
    assert max(seen) == 45  # never above the non-reserve budget (50 - 5)
    assert all(e.used == 45 and e.allowed == 45 for e in refused)
    assert setup.counted(names, now=T0) == 45
    # the emergency reserve is still whole
    for _ in range(5):
        setup.reserve_order(names, emergency=True, now=T0)
    with pytest.raises(BudgetExceeded, match="50 of 50 used, emergency reserve included"):
        setup.reserve_order(names, emergency=True, now=T0)


def test_a_failed_order_releases_its_reservation_and_an_abandoned_one_expires(tmp_path):
    limits = Limits(certificates_per_domain=Limit("new certificates per registered domain", 3, timedelta(days=7)))
    ledger = Ledger(tmp_path / "ledger.json", limits)
    names = ["a.example.com"]
    first = ledger.reserve_order(names, now=T0)
    ledger.reserve_order(["b.example.com"], now=T0)  # abandoned: its worker died
    with pytest.raises(BudgetExceeded, match="2 of 2 used"):
        ledger.reserve_order(["c.example.com"], now=T0)
    ledger.release(first, now=T0 + timedelta(minutes=1))  # the order failed
    third = ledger.reserve_order(["c.example.com"], now=T0 + timedelta(minutes=1))
    ledger.record_issued(["c.example.com"], reservation=third, now=T0 + timedelta(minutes=2))
    assert ledger.counted(names, now=T0 + timedelta(minutes=2)) == 2  # issued c + open b
    with pytest.raises(BudgetExceeded):
        ledger.reserve_order(["d.example.com"], now=T0 + timedelta(minutes=30))
    # b's reservation is abandoned after reservation_ttl (1 h): its slot is free again
    later = T0 + limits.reservation_ttl + timedelta(seconds=1)
    ledger.reserve_order(["d.example.com"], now=later)
    data = json.loads(ledger.path.read_text())
    assert [o["names"] for o in data["open"]] == [["d.example.com"]]
    assert [e["names"] for e in data["issued"]] == [["c.example.com"]]
