"""One Prefect test harness for the whole session (it costs ~12 s to start).

The harness runs a temporary API on SQLite; ``prefect_db_path`` lets the leak test read
that database's bytes.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield {"api_url": PREFECT_API_URL.value(), "db_url": PREFECT_API_DATABASE_CONNECTION_URL.value()}
