"""A real OpenSSH server on loopback: the fleet VM the SSH target deploys to.

Session-scoped: sshd starts in well under a second, but every SSH test can share it;
each test writes under its own temp directory, so they never step on each other.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from certfleet_dev.sshd import Sshd, start_sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """Running sshd on 127.0.0.1:<sshd.port>; log in as ``sshd.username`` with ``sshd.user_key_path``."""
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
