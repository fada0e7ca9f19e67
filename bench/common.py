"""Shared pieces of the ACME benchmarks: the bare short-polling loop, Prefect, kmock, timing.

The bare loop is the floor certfleet is compared against: ``certfleet.acme_client``'s
``AcmeClient`` (short polling, badNonce retries) driven directly, one account, one
client, one certificate after the other; a fresh EC P-256 key and CSR per certificate,
the full chain returned, no Prefect, no store, no locks, no ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from certfleet import prefect_defaults

prefect_defaults.apply()  # before anything imports Prefect

from certfleet import keys, pki  # noqa: E402
from certfleet.acme_client import AcmeClient, generate_account_key  # noqa: E402
from certfleet.contracts import IssuanceRequest  # noqa: E402


def bare_issue_all(directory_url: str, ca_bundle: Path, account_key: bytes, solver,
                   certs: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Issue every (name, domains) in order with one fresh client; return the serials.

    A new ``AcmeClient`` per call, so each run pays one directory fetch + account lookup,
    as a cron job running a script would.
    """
    client = AcmeClient(directory_url, account_key, verify=str(ca_bundle))
    serials = []
    for name, domains in certs:
        key = keys.generate_key()
        issued = client.issue(IssuanceRequest(name=name, domains=tuple(domains),
                                              csr_pem=keys.make_csr(key, list(domains))), solver)
        leaf = pki.order_chain(pki.load_certs(issued.fullchain_pem))[0]
        assert pki.key_matches(leaf, key), f"{name}: certificate for another key"
        serials.append(pki.serial_hex(leaf))
    return serials


def bare_issue_concurrent(directory_url: str, ca_bundle: Path, account_key: bytes, solver,
                          certs: Sequence[tuple[str, Sequence[str]]], workers: int | None = None) -> list[str]:
    """The same loop with one thread (and one client) per certificate, all at once.

    What certfleet's flows do with Prefect's default ``ThreadPoolTaskRunner`` (unbounded
    threads in Prefect 3.9): so the ratio measures certfleet's overhead, not concurrency.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers or len(certs)) as pool:
        jobs = [pool.submit(bare_issue_all, directory_url, ca_bundle, account_key, solver, [c]) for c in certs]
        return [serial for job in jobs for serial in job.result()]


def new_account_key() -> bytes:
    return generate_account_key()


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int,
                log: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Seconds per run, contenders alternated within each round (noise spreads evenly).

    The order alternates every round too (a, b / b, a) so neither always runs right
    after the other's cleanup.
    """
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            started = time.perf_counter()
            contenders[name]()
            elapsed = time.perf_counter() - started
            times[name].append(elapsed)
            log(f"  round {r + 1}/{repeats} {name}: {elapsed:.2f}s")
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


@contextlib.contextmanager
def prefect_server() -> Iterator[None]:
    """A temporary Prefect API on SQLite for the whole benchmark (start-up not timed)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """In-process moto (S3) on a free loopback port; yields its URL."""
    import logging

    from moto.server import ThreadedMotoServer

    from certfleet_dev.ports import free_port

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def kmock_server() -> Iterator[str]:
    """kmock's KubernetesEmulator outside pytest: its aiohttp server on a private event loop
    in a daemon thread (what the ``kmock`` fixture does on the test's loop). Yields the URL."""
    import attrs  # noqa: F401 - kmock dependency; fail early with a clear ImportError
    from kmock._internal import apps, k8s

    ready = threading.Event()
    stop: dict = {}
    box: dict = {}

    async def serve() -> None:
        async with k8s.KubernetesEmulator() as emulator, apps.Server(emulator):
            box["url"] = str(emulator.url)
            stop["event"] = asyncio.Event()
            stop["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop["event"].wait()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="kmock", daemon=True)
    thread.start()
    if not ready.wait(30) or "error" in box:
        raise RuntimeError(f"kmock did not start: {box.get('error')!r}")
    try:
        yield box["url"]
    finally:
        stop["loop"].call_soon_threadsafe(stop["event"].set)
        thread.join(10)


def machine_note() -> str:
    return f"{os.cpu_count()} cores, shared with other work"
