"""Pebble fixtures: one Pebble + challtestsrv per test session, on free loopback ports.

``pebble`` is session-scoped because a start costs ~1 s and Pebble's state (accounts,
orders) is harmless to share; tests that count issuances use ``issued_since``, which
diffs Pebble's own log, so they stay independent of what other tests issued.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from certfleet_dev.pebble import Pebble, start_pebble


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """A running Pebble (default 5% nonce rejection) resolving via challtestsrv."""
    with start_pebble(tmp_path_factory.mktemp("pebble")) as running:
        yield running


@pytest.fixture
def issued_since(pebble: Pebble) -> Callable[[], list[str]]:
    """Callable returning the serials Pebble issued since this test started, in order."""
    before = len(pebble.issued_serials())

    def since() -> list[str]:
        return pebble.issued_serials()[before:]

    return since
