"""Prove, from the user's side of the wire, that every endpoint serves serial X.

Reloads and CDNs take a moment, so endpoints that do not verify yet are probed again
(only those) until ``deadline`` seconds have passed; then the result says exactly
which endpoints failed and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from certfleet import policy
from certfleet.models import CheckResult, Endpoint, ProbeResult
from certfleet.probe import probe_sync


@dataclass(frozen=True)
class EndpointVerdict:
    endpoint: Endpoint
    check: CheckResult
    probe: ProbeResult

    @property
    def ok(self) -> bool:
        return self.check.ok


def verify(endpoints: list[Endpoint], expected_serial: str, *, roots: list | None,
           deadline: float = 30.0, interval: float = 0.2, **probe_kw) -> list[EndpointVerdict]:
    """Verdicts in ``endpoints`` order; failing ones retried until ``deadline``."""
    verdicts: dict[Endpoint, EndpointVerdict] = {}
    pending = list(endpoints)
    stop = time.monotonic() + deadline
    while pending:
        for result in probe_sync(pending, roots=roots, **probe_kw):
            verdicts[result.endpoint] = EndpointVerdict(result.endpoint, policy.verified(result, expected_serial), result)
        pending = [e for e in pending if not verdicts[e].ok]
        if not pending or time.monotonic() + interval > stop:
            break
        time.sleep(interval)
        interval = min(interval * 2, 2.0)
    return [verdicts[e] for e in endpoints]
