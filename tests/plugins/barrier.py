"""A barrier just before the ACME order: contenders meet where a missing lock would hurt.

``BarrierAcmeIssuer`` is the ACME issuer block with one addition: ``issue`` first waits
until ``parties`` contenders have arrived at a file-based barrier (one file per arrival
in ``barrier_dir``), or ``timeout`` seconds have passed. It is reached only after the
renewal has taken the lock and looked again, so

- with the store's lock, one contender arrives, waits out the timeout and orders; the
  others then take the lock, look again, find the new version current and never order;
- without the lock, every contender decides to order before any has stored anything,
  they all meet here and all order: Pebble counts several issuances.

A test block, saved to the test's Prefect server and named by ``block:`` in the
inventory: the code under test (registry, renewal, lock) runs unchanged.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from pydantic import Field

from certfleet.blocks.issuers.acme import AcmeIssuer
from certfleet.contracts import IssuanceRequest, Issued


class BarrierAcmeIssuer(AcmeIssuer):
    _block_type_name = "certfleet test barrier acme issuer"
    _block_type_slug = "certfleet-test-barrier-acme-issuer"

    barrier_dir: str = Field(description="Directory holding one file per contender that arrived")
    parties: int = Field(description="Contenders to wait for")
    timeout: float = Field(description="Seconds to wait before ordering anyway")

    def issue(self, request: IssuanceRequest) -> Issued:
        d = Path(self.barrier_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / uuid.uuid4().hex).touch()
        deadline = time.monotonic() + self.timeout
        while len(list(d.iterdir())) < self.parties and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().issue(request)


@pytest.fixture
def barrier_issuer(prefect_harness, tmp_path):
    """``make(parties, timeout, **acme_fields) -> (block reference, barrier dir)``."""

    def make(parties: int, timeout: float, **fields) -> tuple[str, Path]:
        name = f"contend-{uuid.uuid4().hex[:8]}"
        d = tmp_path / f"barrier-{name}"
        BarrierAcmeIssuer(barrier_dir=str(d), parties=parties, timeout=timeout, **fields).save(name)
        return f"{BarrierAcmeIssuer.get_block_type_slug()}/{name}", d

    return make
