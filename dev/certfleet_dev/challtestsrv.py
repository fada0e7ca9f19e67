"""dns-01 solver for pebble-challtestsrv, the fake DNS server that ships with Pebble.

Used in tests, the demo and benchmarks: it publishes TXT records through
challtestsrv's management API, which Pebble's validator then resolves. It ships with
the development tools (certfleet-dev), not the runtime package: with certfleet-dev
installed, ``certfleet.blocks.solvers.dev_solver_kinds()`` offers it as the solver
kind ``challtestsrv``; without it, an inventory naming that kind is refused with an
error that says how to install it.
"""

from __future__ import annotations

import logging

import httpx

from certfleet.challenges import challenge_name  # the one dns-01 name (lego: GetChallengeInfo)
from prefect.blocks.core import Block
from pydantic import Field

log = logging.getLogger(__name__)


class ChallTestSrvSolver(Block):
    """Publish and remove ``_acme-challenge`` TXT records in pebble-challtestsrv."""

    _block_type_name = "certfleet challtestsrv solver"
    _description = "dns-01 solver backed by pebble-challtestsrv's management API (tests and demos)."

    url: str = Field(
        ...,
        description="Base URL of challtestsrv's management API, e.g. http://127.0.0.1:8055.",
    )
    request_timeout: float = Field(
        default=5.0,
        description="Seconds to wait for one management API call before failing.",
    )

    def present(self, domain: str, value: str) -> None:
        """Add the TXT record ``value`` at ``_acme-challenge.<domain>.``."""
        host = _challenge_host(domain)
        log.info("challtestsrv solver: set TXT %s", host)
        self._post("/set-txt", {"host": host, "value": value})

    def cleanup(self, domain: str, value: str) -> None:
        """Remove the TXT records at ``_acme-challenge.<domain>.`` (challtestsrv clears the host)."""
        host = _challenge_host(domain)
        log.info("challtestsrv solver: clear TXT %s", host)
        self._post("/clear-txt", {"host": host})

    def _post(self, path: str, payload: dict[str, str]) -> None:
        url = self.url.rstrip("/") + path
        # Plain http needs no CA bundle; skipping its load saves ~100 ms per call.
        verify = url.startswith("https://")
        try:
            response = httpx.post(url, json=payload, timeout=self.request_timeout, verify=verify)
        except httpx.HTTPError as exc:
            raise RuntimeError(f"challtestsrv solver: cannot reach {url}: {exc}") from exc
        if response.status_code != 200:
            raise RuntimeError(
                f"challtestsrv solver: {path} for {payload['host']} returned HTTP "
                f"{response.status_code}: {response.text.strip()[:200]}"
            )


def _challenge_host(domain: str) -> str:
    """``*.shop.test`` and ``shop.test`` both validate at ``_acme-challenge.shop.test.``."""
    try:
        return challenge_name(domain) + "."
    except ValueError:
        raise ValueError("challtestsrv solver: empty domain") from None
