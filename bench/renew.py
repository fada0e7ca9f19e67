"""Benchmark: certfleet's ``renew`` flow vs a bare short-polling ``acme`` loop, dns-01 RFC 2136.

Setup: one Knot, authoritative for ``bench.test`` with a TSIG key that may update TXT;
one Pebble whose validator asks that Knot directly (``-dnsserver 127.0.0.1:<knot>``).
20 certificates with two names each (``cN.bench.test``, ``www.cN.bench.test``).
Pebble runs with its defaults (5% of good nonces rejected) except authorization reuse,
which is switched off (``PEBBLE_AUTHZREUSE=0``) so every order of every round publishes,
propagates and validates both names: both contenders always do the full dns-01 work.

Contenders, alternated round by round, median of REPEATS rounds:

* bare — ``AcmeClient`` (certfleet's short-polling client) + the same ``Rfc2136Solver``
  driven from a plain loop: one client, one certificate after the other, no Prefect,
  no store. (Peers measured 3–6 s for 20 with Pebble's default 50% authz reuse.)
* bare-concurrent — the same, one thread and one client per certificate, all at once:
  what Prefect 3.9's default ``ThreadPoolTaskRunner`` (unbounded threads) gives the
  flow. The summary line gives both: ``vs_bare`` against the bare loop the issue names
  (one certificate after the other) and ``vs_bare_concurrent`` against this one, which
  measures certfleet's overhead rather than its concurrency.
* certfleet — the real ``renew`` flow, ``force=True``, on an inventory file whose
  ``acme`` issuer has an ``rfc2136`` solver with the TSIG secret as ``{env: VAR}``:
  inventory validation, per-certificate tasks, store locks, rate-limit ledger, store
  writes. Run against a temporary Prefect API (start-up not timed) after one warm-up
  flow run; only the flow call is timed.

Run: ``.venv/bin/python bench/renew.py [N] [REPEATS]``. The last line is machine-readable.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bare_issue_all, bare_issue_concurrent, interleaved, machine_note, median, new_account_key, prefect_server  # noqa: E402

ZONE = "bench.test"
SECRET_ENV = "CERTFLEET_BENCH_TSIG_SECRET"
AIM = 1.5


def certificates(n: int) -> list[tuple[str, list[str]]]:
    return [(f"c{i}", [f"c{i}.{ZONE}", f"www.c{i}.{ZONE}"]) for i in range(n)]


def write_inventory(workdir: Path, pebble, knot, certs) -> Path:
    lines = [
        "store: {path: store}",
        "issuers:",
        "  pebble:",
        "    kind: acme",
        f"    directory_url: {pebble.directory_url}",
        f"    ca_bundle: {pebble.ca_cert_path}",
        f"    solver: {{kind: rfc2136, nameserver: 127.0.0.1, port: {knot.port}, zone: {ZONE}, "
        f"tsig_name: {knot.tsig_name}, tsig_secret: {{env: {SECRET_ENV}}}, tsig_algorithm: hmac-sha256}}",
        # Pebble allows what we ask of it; Let's Encrypt's default 50 certificates/domain/week
        # would refuse round 3 of a 20-certificate benchmark on one registered domain.
        "    rate_limits: {certificates_per_domain: 100000, new_orders: 100000, certificates_per_name_set: 100000, failed_validations: 100000}",
        "certificates:",
    ]
    lines += [f"  - {{name: {name}, domains: [{', '.join(domains)}], issuer: pebble}}" for name, domains in certs]
    path = workdir / "inventory.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    os.environ["PEBBLE_AUTHZREUSE"] = "0"  # read by the Pebble we start (env is inherited)

    from certfleet.blocks.solvers.rfc2136 import Rfc2136Solver
    from certfleet_dev.knot import start_knot
    from certfleet_dev.pebble import start_pebble

    certs = certificates(n)
    with tempfile.TemporaryDirectory(prefix="certfleet-bench-renew-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        with start_knot(workdir / "knot", [ZONE]) as knot, \
                start_pebble(workdir / "pebble", dns_server=f"127.0.0.1:{knot.port}") as pebble:
            os.environ[SECRET_ENV] = knot.tsig_secret
            inventory = str(write_inventory(workdir, pebble, knot, certs))
            solver = Rfc2136Solver(nameserver="127.0.0.1", port=knot.port, zone=ZONE, tsig_name=knot.tsig_name,
                                   tsig_secret=knot.tsig_secret, tsig_algorithm="hmac-sha256")
            account = new_account_key()
            with prefect_server():
                from certfleet.flows.renew import renew

                print(f"setup: knot + pebble + prefect API in {time.perf_counter() - t0:.1f}s; {machine_note()}")
                issued_before = len(pebble.issued_serials())

                def certfleet_run() -> None:
                    state = renew(inventory=inventory, force=True, return_state=True)
                    assert state.is_completed(), state.message
                    report = state.result()
                    assert len(report.issued) == n, f"certfleet issued {len(report.issued)}/{n}"

                def bare_run() -> None:
                    serials = bare_issue_all(pebble.directory_url, pebble.ca_cert_path, account, solver, certs)
                    assert len(set(serials)) == n

                def bare_concurrent_run() -> None:
                    serials = bare_issue_concurrent(pebble.directory_url, pebble.ca_cert_path, account, solver, certs)
                    assert len(set(serials)) == n

                started = time.perf_counter()
                certfleet_run()  # warm-up: account key + registration, imports, first flow run
                print(f"warm-up certfleet flow: {time.perf_counter() - started:.1f}s (not counted)")
                started = time.perf_counter()
                bare_run()
                print(f"warm-up bare loop: {time.perf_counter() - started:.1f}s (not counted)")
                times = interleaved({"bare": bare_run, "bare-concurrent": bare_concurrent_run,
                                     "certfleet": certfleet_run}, repeats)
                issued = len(pebble.issued_serials()) - issued_before
                assert issued == n * (3 * repeats + 2), f"pebble logged {issued} issuances"
    bare_s, conc_s, cf_s = median(times["bare"]), median(times["bare-concurrent"]), median(times["certfleet"])
    print(f"\n{n} certificates x 2 names, dns-01 RFC 2136 (Knot) on Pebble, median of {repeats} "
          f"alternated rounds (authz reuse off, 5% nonce rejection on):")
    for name, ts in times.items():
        m = median(ts)
        print(f"{name:>16}: {m:6.2f}s  ({m / n:.3f}s/cert, {m / bare_s:.2f}x bare, {m / conc_s:.2f}x bare-concurrent)  "
              f"runs: {' '.join(f'{t:.2f}' for t in ts)}")
    paired = [c / b for c, b in zip(times["certfleet"], times["bare-concurrent"])]
    print(f"per-round ratios certfleet / bare-concurrent: {' '.join(f'{r:.2f}' for r in paired)} "
          f"(median {median(paired):.2f}x)")
    ratio = cf_s / conc_s  # the stricter floor: same concurrency as certfleet's task runner
    print(f"certfleet vs sequential bare loop: {cf_s / bare_s:.2f}x; vs bare-concurrent (same concurrency, "
          f"the baseline of the summary line): {ratio:.2f}x")
    print(f"aim (issue): within {AIM}x of the bare loop: {'met' if cf_s / bare_s <= AIM else 'NOT met'} "
          f"({cf_s / bare_s:.2f}x); stricter, same concurrency: {'met' if ratio <= AIM else 'NOT met'} ({ratio:.2f}x)")
    print(f"renew: N={n} seconds={cf_s:.2f} vs_bare={cf_s / bare_s:.2f}x vs_bare_concurrent={ratio:.2f}x")


if __name__ == "__main__":
    main()
