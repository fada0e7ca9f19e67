"""One issuer, once: five lifecycle runs started at once issue exactly one certificate.

Counted at Pebble (its own log), not by certfleet. The store's per-certificate lock and
the look-again-after-locking step are what make this hold.

The race is made real: flow start-up staggers five runs enough that, without the lock,
the look-again alone used to save them. A barrier inside the issuer (after the lock and
the re-check, just before the ACME order; ``tests/plugins/barrier.py``) holds each
contender until all five have arrived, or ``BARRIER_TIMEOUT`` has passed. With the lock
only one contender ever gets there; without it all five do, and Pebble issues five.
(Checked once by making ``LocalStore.lock`` a no-op: Pebble issued several.)
"""

from __future__ import annotations

import threading

import pytest
import yaml

from tests.plugins.barrier import barrier_issuer  # noqa: F401 - fixture
from tests.plugins.fleet import served_serial

pytestmark = pytest.mark.services

CONTENDERS = 5
BARRIER_TIMEOUT = 20.0  # what the one contender holding the lock waits; the others never arrive


def test_five_concurrent_lifecycles_issue_exactly_once(prefect_harness, fleet, issued_since, barrier_issuer, pebble):
    from certfleet.flows.lifecycle import lifecycle

    inv = yaml.safe_load(fleet["inventory"].read_text())
    acme = inv["issuers"]["pebble"]
    solver = acme.pop("solver")
    acme.pop("kind")
    from certfleet_dev.challtestsrv import ChallTestSrvSolver

    ref, arrived = barrier_issuer(CONTENDERS, BARRIER_TIMEOUT, solver=ChallTestSrvSolver(url=solver["url"]),
                                  account_key_path=str(fleet["inventory"].parent / "account.key"), **acme)
    inv["issuers"]["pebble"] = {"block": ref}
    fleet["inventory"].write_text(yaml.safe_dump(inv))

    states, errors = [], []
    start = threading.Barrier(CONTENDERS)

    def run():
        try:
            start.wait()
            states.append(lifecycle(inventory=str(fleet["inventory"]), verify_deadline=20, return_state=True))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(CONTENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(states) == CONTENDERS
    issued = issued_since()
    assert len(issued) == 1, f"Pebble issued {len(issued)} certificates: {issued}"
    assert len(list(arrived.iterdir())) == 1, "more than one contender reached the ACME order"
    assert all(s.is_completed() for s in states), [s.message for s in states]
    assert served_serial(fleet["port"], "shop.test", fleet["roots"]) == issued[0]
    assert [v.serial for v in fleet["store"].versions("shop")] == issued
