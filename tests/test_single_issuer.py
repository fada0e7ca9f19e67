"""One issuer, once: five lifecycle runs started at once issue exactly one certificate.

Counted at Pebble (its own log), not by certfleet. The store's per-certificate lock and
the look-again-after-locking step are what make this hold.
"""

from __future__ import annotations

import threading

import pytest

from tests.plugins.fleet import served_serial

pytestmark = pytest.mark.services


def test_five_concurrent_lifecycles_issue_exactly_once(prefect_harness, fleet, issued_since):
    from certfleet.flows.lifecycle import lifecycle

    states, errors = [], []
    start = threading.Barrier(5)

    def run():
        try:
            start.wait()
            states.append(lifecycle(inventory=str(fleet["inventory"]), verify_deadline=20, return_state=True))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(states) == 5
    assert all(s.is_completed() for s in states), [s.message for s in states]
    issued = issued_since()
    assert len(issued) == 1, f"Pebble issued {len(issued)} certificates: {issued}"
    assert served_serial(fleet["port"], "shop.test", fleet["roots"]) == issued[0]
    assert [v.serial for v in fleet["store"].versions("shop")] == issued
