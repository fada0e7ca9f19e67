"""Project defaults for Prefect settings, applied before Prefect is imported.

Only ``setdefault``: anything the operator set (environment, profile) wins. Kept as
plain environment variables so this module stays Prefect-free.
"""

from __future__ import annotations

import os

DEFAULTS = {
    # The temporary server on SQLite takes 13–20 s to start on a 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # No phoning home from air-gapped fleets.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Our own loggers show up in the run's logs in the UI.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "certfleet",
    # Large fan-outs are bound by the server's task-run recorder (default batch of 1).
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "500",
}


def apply() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
