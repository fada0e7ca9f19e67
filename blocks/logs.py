"""The logger a block should use: the run's (shows in the UI) inside a flow or task,
a module logger otherwise (CLI, tests)."""

from __future__ import annotations

from prefect.exceptions import MissingContextError
from prefect.logging import get_logger, get_run_logger


def block_logger(name: str):
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger(name)
