"""A/B for the renew overhead: the same renewal core in 20 plain threads vs the renew flow.

Same stack as bench/renew.py (Knot + Pebble, RFC 2136, authz reuse off). "direct" runs
``certfleet.renewal.renew`` for every certificate in its own thread with the inventory's
issuer, store and ledger — everything certfleet does except Prefect. "flow" is the real
``renew`` flow. The difference is what orchestration adds.

Run: ``.venv/bin/python bench/renew_ab.py [ROUNDS]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, prefect_server  # noqa: E402
from bench.renew import SECRET_ENV, ZONE, certificates, write_inventory  # noqa: E402


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    os.environ["PEBBLE_AUTHZREUSE"] = "0"
    from certfleet_dev.knot import start_knot
    from certfleet_dev.pebble import start_pebble

    certs = certificates(20)
    with tempfile.TemporaryDirectory(prefix="certfleet-bench-renew-ab-") as tmp:
        work = Path(tmp)
        with start_knot(work / "knot", [ZONE]) as knot, \
                start_pebble(work / "pebble", dns_server=f"127.0.0.1:{knot.port}") as pebble:
            os.environ[SECRET_ENV] = knot.tsig_secret
            inv = str(write_inventory(work, pebble, knot, certs))
            with prefect_server():
                from certfleet.blocks import registry
                from certfleet import renewal
                from certfleet.flows.renew import renew
                from certfleet.tasks.common import ledger_for, load_inventory, store_for

                def direct() -> None:
                    inventory = load_inventory(inv)

                    def one(name: str) -> None:
                        spec = inventory.certificate(name)
                        renewal.renew(spec, store_for(inventory), registry.issuer(inventory, spec.issuer),
                                      issuer_name=spec.issuer, force=True, ledger=ledger_for(inventory, spec.issuer))

                    threads = [threading.Thread(target=one, args=(name,)) for name, _ in certs]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()

                renew(inventory=inv, force=True)  # warm-up
                times: dict[str, list[float]] = {"direct": [], "flow": []}
                for i in range(rounds):
                    for name, fn in (("direct", direct), ("flow", lambda: renew(inventory=inv, force=True))):
                        started = time.perf_counter()
                        fn()
                        times[name].append(time.perf_counter() - started)
                    print(f"round {i + 1}: direct {times['direct'][-1]:.2f}s  flow {times['flow'][-1]:.2f}s", flush=True)
    d, f = median(times["direct"]), median(times["flow"])
    print(f"renew_ab: N=20 direct={d:.2f}s flow={f:.2f}s flow_over_direct={f / d:.2f}x")


if __name__ == "__main__":
    main()
