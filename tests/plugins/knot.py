"""A real Knot DNS server, authoritative for the test zones, accepting TSIG-signed TXT updates.

Session-scoped: knotd starts in ~0.5 s, but every test that needs DNS (the
rfc2136 solver, Pebble's dns-01 validation) should see the same server. Tests
use distinct record names, so they never step on each other's records.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from certfleet_dev.knot import Knot, start_knot

KNOT_ZONES = ["shop.test", "example.test"]


@pytest.fixture(scope="session")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    """Running knotd on 127.0.0.1:<knot.port> (UDP+TCP) serving ``KNOT_ZONES``."""
    with start_knot(tmp_path_factory.mktemp("knot"), KNOT_ZONES) as server:
        yield server
