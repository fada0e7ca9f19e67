"""Benchmark: certfleet's fleet probe vs the loops people write by hand.

Setup: one loopback nginx, N SNI vhosts on one port, each with its own certificate from
a local CA (leaf + intermediate served). Every contender handshakes every name once and
validates chain + hostname against the local root:

* sequential — the seed article's monitor as written: per name, a new
  ``ssl.create_default_context()`` (the system trust store, loaded every time), plus our
  root so the private CA verifies, ``socket.create_connection``, ``wrap_socket``,
  ``getpeercert()``. One at a time.
* bare — a single-process asyncio loop: one verifying context, ``open_connection`` with
  SNI, 200 at a time. The floor an async probe should reach.
* certfleet — ``probe_many`` (served chain captured, validated, described, classified).

Run: ``.venv/bin/python bench/probe.py [N]``. The last line is machine-readable.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

from certfleet_dev.nginx import Vhost, free_port, start_nginx
from certfleet.localca import LocalCA
from certfleet.models import Endpoint
from certfleet.probe import _choose_processes, probe_many

REPEATS = 5
CONCURRENCY = 200


def make_fleet(workdir: Path, n: int) -> tuple[LocalCA, list[Vhost], int]:
    """N names, N certificates, one TLS port: SNI alone picks the vhost."""
    ca = LocalCA.create(workdir / "ca")
    port = free_port()
    vhosts = []
    for i in range(n):
        name = f"host{i:04d}.bench.test"
        chain, key = ca.issue([name])
        cert_path, key_path = workdir / f"{name}.pem", workdir / f"{name}.key"
        cert_path.write_bytes(chain)
        key_path.write_bytes(key)
        vhosts.append(Vhost(name, [name], port, cert_path, key_path, default_server=(i == 0)))
    return ca, vhosts, port


def sequential(endpoints: list[Endpoint], cafile: str) -> int:
    """The seed article's loop: a fresh default context and a blocking socket per name."""
    ok = 0
    for e in endpoints:
        context = ssl.create_default_context()  # as in the article: system roots, every time
        context.load_verify_locations(cafile=cafile)  # + our private root, or nothing verifies
        with socket.create_connection((e.host, e.port), timeout=10) as sock:
            with context.wrap_socket(sock, server_hostname=e.sni) as ssock:
                ok += bool(ssock.getpeercert())
    return ok


async def bare(endpoints: list[Endpoint], cafile: str) -> int:
    """A plain asyncio handshake loop: shared verifying context, semaphore, no extras."""
    context = ssl.create_default_context(cafile=cafile)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(e: Endpoint) -> bool:
        async with gate:
            reader, writer = await asyncio.open_connection(e.host, e.port, ssl=context,
                                                           server_hostname=e.sni)
            ok = bool(writer.get_extra_info("peercert"))
            writer.close()
            try:
                await writer.wait_closed()
            except (ssl.SSLError, ConnectionError):
                pass
            return ok

    return sum(await asyncio.gather(*(one(e) for e in endpoints)))


def measure(contenders: dict, expected: int) -> dict[str, float]:
    """Median endpoints/s over REPEATS rounds, contenders interleaved within each round.

    Interleaving spreads noise from other work on the machine over every contender
    instead of letting one of them absorb a slow patch.
    """
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(REPEATS):
        for name, fn in contenders.items():
            started = time.perf_counter()
            ok = fn()
            elapsed = time.perf_counter() - started
            assert ok == expected, f"{name}: only {ok}/{expected} endpoints validated"
            rates[name].append(expected / elapsed)
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory(prefix="certfleet-bench-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        ca, vhosts, port = make_fleet(workdir, n)
        cafile = str(workdir / "ca" / "root.pem")
        endpoints = [Endpoint("127.0.0.1", port, v.server_names[0]) for v in vhosts]
        roots = [ca.root_cert]
        with start_nginx(workdir / "nginx", vhosts, worker_processes=os.cpu_count() or 1):
            print(f"setup: {n} certificates + nginx in {time.perf_counter() - t0:.1f}s, "
                  f"{os.cpu_count()} cores")

            def certfleet_run(processes):
                results = asyncio.run(probe_many(endpoints, roots=roots, concurrency=CONCURRENCY,
                                                 processes=processes))
                return sum(r.ok for r in results)

            rates = measure({
                "sequential": lambda: sequential(endpoints, cafile),
                "bare": lambda: asyncio.run(bare(endpoints, cafile)),
                "certfleet(1 process)": lambda: certfleet_run(1),
                "certfleet(auto)": lambda: certfleet_run(None),
            }, n)
    for name, eps in rates.items():
        print(f"{name:>24}: {eps:8.0f} endpoints/s  ({eps / rates['bare']:.2f}x bare)")
    eps = rates["certfleet(auto)"]
    print(f"certfleet(auto) used {_choose_processes(n, None, None)} process(es) for N={n}")
    print(f"probe: N={n} eps={eps:.0f} vs_sequential={eps / rates['sequential']:.2f}x "
          f"vs_bare={eps / rates['bare']:.2f}x")


if __name__ == "__main__":
    main()
