"""Benchmark: one certificate onto 1,000 file targets, 200 of them verified on nginx.

Setup (not timed): one loopback nginx with 200 SNI vhosts (``hostNNNN.fleet.test``) on
one port; vhost *i* reads the fullchain + key that file target ``tNNNN`` writes. The
other 800 targets are file drops nothing serves (apps that read their PEMs on their own
schedule): they get the files, no reload, no endpoint. One certificate (``fleet.test``,
``*.fleet.test``) from a local CA. Every round starts from "the fleet holds the previous
serial" and ends at "every one of the 200 vhosts serves the new serial, with a chain
valid to the local root and a matching hostname", checked by our own handshakes.

Contenders, each deploying a fresh serial, interleaved round by round:

* sequential — plain Python: per target an atomic write (temp + fsync + rename) of the
  chain and the key; ONE ``nginx -s reload``; then one verifying ``ssl`` handshake per
  vhost (a vhost still on the old serial — nginx reloads asynchronously — is retried).
* bare — no orchestration, the practical floor: the same writes in a 32-thread pool, ONE
  reload, then the handshakes with asyncio (200 at a time), same retry.
* certfleet — the real ``distribute`` flow: one Prefect task run per target (1,000),
  each doing certfleet's transaction (read what the target holds, preflight, backup,
  write, reload if it has a reload command, verify the endpoints it feeds, roll back on
  failure). The 200 nginx-backed targets share one reload command, as they would in an
  inventory, so their writes share ``_server_lock`` and its reloads take it alone; how
  many reloads nginx actually performed is printed for every contender (from its log).

* prefect floor — not a contender but the yardstick for one: the same number of task
  runs, each doing nothing, through the same task runner (ThreadPoolTaskRunner, 128
  workers) in a flow of its own. What one tracked Prefect task run per target costs on
  this machine before any certificate work; certfleet cannot be faster than this.

The Prefect server (temporary, SQLite) is started before anything is timed and a
warm-up run of the flow is done first. After each certfleet run the script waits until
the server has recorded every task run as Completed and answers ``/health`` promptly
again before the next contender starts (so a backlog in the server's recorder, event
persister or triggers does not steal CPU from, or delay the API calls of, the next
contender) and prints that lag; it is not part of the flow's time.

Finally certfleet runs again with nothing to do (every target already holds the
serial): printed as a percentage of the first run's (median) time.

Run: ``.venv/bin/python bench/fanout.py [TARGETS] [ENDPOINTS]``
(``FANOUT_REPEATS`` rounds, default 3). The last line is machine-readable.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from certfleet import prefect_defaults  # noqa: E402

# A fresh Prefect home: the bench's SQLite database never mixes with anyone's runs.
_PREFECT_HOME = tempfile.mkdtemp(prefix="certfleet-fanout-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # 1,000 INFO lines per run is noise
prefect_defaults.apply()

import asyncio  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import yaml  # noqa: E402

from certfleet import pki  # noqa: E402
from certfleet_dev.nginx import Vhost, free_port, start_nginx  # noqa: E402
from certfleet.fsutil import atomic_write  # noqa: E402
from certfleet.localca import LocalCA  # noqa: E402
from certfleet.store import LocalStore  # noqa: E402

REPEATS = int(os.environ.get("FANOUT_REPEATS", "3"))
CONCURRENCY = 200
WRITE_THREADS = 32
RETRY_SLEEP = 0.05
CERT = "fleet"
DOMAINS = ["fleet.test", "*.fleet.test"]


# --------------------------------------------------------------------------- fleet


class Fleet:
    def __init__(self, workdir: Path, n_targets: int, n_endpoints: int):
        self.workdir = workdir
        self.n_targets, self.n_endpoints = n_targets, n_endpoints
        self.ca = LocalCA.create(workdir / "ca")
        self.cafile = str(workdir / "ca" / "root.pem")
        self.port = free_port()
        self.targets = [f"t{i:04d}" for i in range(n_targets)]
        self.snis = [f"host{i:04d}.fleet.test" for i in range(n_endpoints)]
        self.store = LocalStore(workdir / "store")
        self.nginx = None
        self.chain, self.key, self.serial, self.leaf_der = b"", b"", "", b""

    def paths(self, target: str) -> tuple[Path, Path]:
        d = self.workdir / "targets" / target
        return d / "fullchain.pem", d / "key.pem"

    def new_certificate(self) -> None:
        """A fresh serial for the next contender (put in the store: what certfleet deploys)."""
        self.chain, self.key = self.ca.issue(DOMAINS)
        leaf = pki.load_certs(self.chain)[0]
        self.serial = pki.serial_hex(leaf)
        from cryptography.hazmat.primitives.serialization import Encoding

        self.leaf_der = leaf.public_bytes(Encoding.DER)
        self.store.put(CERT, self.chain, self.key, issuer="bench")

    def start(self) -> None:
        self.new_certificate()
        for t in self.targets:  # the fleet starts out holding a serial (nginx needs files)
            for path, data, mode in zip(self.paths(t), (self.chain, self.key), (0o644, 0o600)):
                atomic_write(path, data, mode)
        vhosts = [Vhost(f"v{i}", [sni], self.port, *self.paths(self.targets[i]), default_server=(i == 0))
                  for i, sni in enumerate(self.snis)]
        self.nginx = start_nginx(self.workdir / "nginx", vhosts, worker_processes=os.cpu_count() or 1)
        self.write_inventory()

    def write_inventory(self) -> None:
        reload = self.nginx.reload_command
        targets = {}
        for i, t in enumerate(self.targets):
            full, key = self.paths(t)
            cfg = {"kind": "file", "fullchain_path": str(full), "key_path": str(key)}
            if i < self.n_endpoints:
                cfg["reload_command"] = reload  # one nginx: one shared reload command
            targets[t] = cfg
        inv = {
            "store": {"path": "store"},
            "trust_bundle": self.cafile,
            "issuers": {"local": {"kind": "local-ca", "directory": str(self.workdir / "ca")}},
            "targets": targets,
            "certificates": [{
                "name": CERT, "domains": DOMAINS, "issuer": "local", "targets": self.targets,
                "endpoints": [{"host": "127.0.0.1", "port": self.port, "sni": sni, "target": self.targets[i]}
                              for i, sni in enumerate(self.snis)],
            }],
        }
        self.inventory = self.workdir / "inventory.yaml"
        self.inventory.write_text(yaml.safe_dump(inv, sort_keys=False))

    def reload_count(self) -> int:
        return self.nginx.reload_count

    def holds_everywhere(self) -> bool:
        return all(self.paths(t)[0].read_bytes() == self.chain for t in self.targets)


# --------------------------------------------------------------------------- baselines


def _write_one(fleet: Fleet, target: str) -> None:
    full, key = fleet.paths(target)
    atomic_write(full, fleet.chain, 0o644)
    atomic_write(key, fleet.key, 0o600)


def _reload(fleet: Fleet) -> None:
    subprocess.run(fleet.nginx.reload_command, check=True, capture_output=True)


def sequential(fleet: Fleet) -> int:
    for t in fleet.targets:
        _write_one(fleet, t)
    _reload(fleet)
    ok = 0
    for sni in fleet.snis:
        while True:
            ctx = ssl.create_default_context(cafile=fleet.cafile)
            with socket.create_connection(("127.0.0.1", fleet.port), timeout=10) as sock:
                with ctx.wrap_socket(sock, server_hostname=sni) as tls:
                    served = tls.getpeercert(binary_form=True)
            if served == fleet.leaf_der:
                ok += 1
                break
            time.sleep(RETRY_SLEEP)  # the old worker still answers: reload in progress
    return ok


async def _bare_verify(fleet: Fleet) -> int:
    ctx = ssl.create_default_context(cafile=fleet.cafile)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(sni: str) -> bool:
        while True:
            async with gate:
                reader, writer = await asyncio.open_connection("127.0.0.1", fleet.port, ssl=ctx,
                                                               server_hostname=sni)
                served = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                writer.close()
                try:
                    await writer.wait_closed()
                except (ssl.SSLError, ConnectionError):
                    pass
            if served == fleet.leaf_der:
                return True
            await asyncio.sleep(RETRY_SLEEP)

    return sum(await asyncio.gather(*(one(s) for s in fleet.snis)))


def bare(fleet: Fleet) -> int:
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        list(pool.map(lambda t: _write_one(fleet, t), fleet.targets))
    _reload(fleet)
    return asyncio.run(_bare_verify(fleet))


# --------------------------------------------------------------------------- certfleet


def _recorded(flow_run_id, expected: int, timeout: float = 600.0) -> float:
    """Seconds until the server holds ``expected`` Completed task runs of the flow run."""
    from prefect.client.orchestration import get_client

    body = {"flow_runs": {"id": {"any_": [str(flow_run_id)]}},
            "task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}
    started = time.perf_counter()
    with get_client(sync_client=True) as client:
        while time.perf_counter() - started < timeout:
            n = client._client.post("/task_runs/count", json=body).json()
            if n >= expected:
                return time.perf_counter() - started
            time.sleep(0.25)
    return float("nan")


def _quiet(timeout: float = 60.0, fast: float = 0.03, streak: int = 4) -> float:
    """Seconds until the server answers /health in under ``fast`` s ``streak`` times in a row.

    The task-run recorder is not the server's only backlog after 3,000 events: the event
    persister and the triggers service work through them too, and an API call made
    meanwhile (the next flow's start, its artifact) waits behind them. The next
    contender starts on a quiet server, as every other contender does.
    """
    from prefect.client.orchestration import get_client

    started = time.perf_counter()
    run = 0
    with get_client(sync_client=True) as client:
        while time.perf_counter() - started < timeout and run < streak:
            t = time.perf_counter()
            client._client.get("/health")
            run = run + 1 if time.perf_counter() - t < fast else 0
            time.sleep(0.25)
    return time.perf_counter() - started


class CertfleetRunner:
    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.lags: list[float] = []
        self.last_message = ""

    def run(self, *, expect_deployed: int | None) -> int:
        from certfleet.flows.distribute import distribute

        state = distribute(inventory=str(self.fleet.inventory), verify_deadline=60, return_state=True)
        report = state.data if hasattr(state, "data") else None
        self.last_message = state.message or ""
        if not state.is_completed():
            raise SystemExit(f"certfleet run failed: {state.message}")
        self._flow_run_id = state.state_details.flow_run_id
        if expect_deployed is not None and not self.last_message.startswith(f"deployed {expect_deployed},"):
            raise SystemExit(f"certfleet: expected {expect_deployed} deployed, got: {self.last_message}")
        del report
        return self.fleet.n_endpoints

    def settle(self, expected: int) -> None:
        self.lags.append(_recorded(self._flow_run_id, expected) + _quiet())


def _floor_flow():
    """A flow that runs one no-op task per target: Prefect's own cost of a tracked fan-out."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    @task(name="no-op", cache_policy=NO_CACHE, persist_result=False)
    def noop(target: str) -> str:
        return target

    @flow(name="prefect-floor", task_runner=ThreadPoolTaskRunner(max_workers=128))
    def floor(targets: list[str]) -> int:
        futures = [noop.submit(t) for t in targets]
        return sum(1 for f in futures if f.result())

    return floor


class FloorRunner:
    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.flow = _floor_flow()

    def run(self) -> float:
        started = time.perf_counter()
        state = self.flow(self.fleet.targets, return_state=True)
        elapsed = time.perf_counter() - started
        assert state.result() == self.fleet.n_targets
        _recorded(state.state_details.flow_run_id, self.fleet.n_targets)  # as for certfleet: not timed
        _quiet()
        return elapsed


# --------------------------------------------------------------------------- main


def main() -> None:
    n_targets = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    n_endpoints = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory(prefix="certfleet-fanout-") as tmp:
        t0 = time.perf_counter()
        fleet = Fleet(Path(tmp), n_targets, n_endpoints)
        fleet.start()
        try:
            with prefect_test_harness(server_startup_timeout=180):
                print(f"setup: {n_targets} targets, {n_endpoints} nginx vhosts, Prefect server "
                      f"in {time.perf_counter() - t0:.1f}s; {os.cpu_count()} cores")
                cf = CertfleetRunner(fleet)
                expected_tasks = n_targets + 2  # rollouts + validate inventory + publish report

                fleet.new_certificate()
                started = time.perf_counter()
                cf.run(expect_deployed=n_targets)
                print(f"warm-up certfleet run: {time.perf_counter() - started:.1f}s (not counted)")
                cf.settle(expected_tasks)

                floor = FloorRunner(fleet)
                floor.run()  # warm-up
                contenders = {
                    "sequential": lambda: sequential(fleet),
                    "bare": lambda: bare(fleet),
                    "certfleet": lambda: cf.run(expect_deployed=n_targets),
                }
                times: dict[str, list[float]] = {k: [] for k in contenders}
                reloads: dict[str, list[int]] = {k: [] for k in contenders}
                floor_times: list[float] = []
                for rnd in range(REPEATS):
                    floor_times.append(floor.run())  # touches no file: no certificate state to reset
                    print(f"  round {rnd + 1} {'floor':>10}: {floor_times[-1]:6.2f}s "
                          f"({n_targets} no-op task runs)", flush=True)
                    for name, fn in contenders.items():
                        fleet.new_certificate()
                        before = fleet.reload_count()
                        started = time.perf_counter()
                        ok = fn()
                        elapsed = time.perf_counter() - started
                        assert ok == n_endpoints, f"{name}: only {ok}/{n_endpoints} endpoints verified"
                        assert fleet.holds_everywhere(), f"{name}: a target does not hold the new serial"
                        if name == "certfleet":
                            cf.settle(expected_tasks)
                        reloads[name].append(fleet.reload_count() - before)
                        times[name].append(elapsed)
                        print(f"  round {rnd + 1} {name:>10}: {elapsed:6.2f}s "
                              f"(nginx reloads {reloads[name][-1]})", flush=True)

                # Nothing to do: every target already holds the serial certfleet just deployed.
                before = fleet.reload_count()
                mtimes = [fleet.paths(t)[0].stat().st_mtime_ns for t in fleet.targets]
                started = time.perf_counter()
                cf.run(expect_deployed=0)
                rerun = time.perf_counter() - started
                rerun_msg = cf.last_message
                _recorded(cf._flow_run_id, 2)  # let the server finish before the harness stops
                assert fleet.reload_count() == before, "the re-run reloaded nginx"
                assert [fleet.paths(t)[0].stat().st_mtime_ns for t in fleet.targets] == mtimes, "the re-run wrote"
        finally:
            fleet.nginx.stop()

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"median of {REPEATS} rounds, time to all {n_endpoints} vhosts verified "
          f"({n_targets} targets written):")
    for name, s in med.items():
        print(f"{name:>12}: {s:7.2f}s  ({s / med['bare']:.2f}x bare, {s / med['sequential']:.2f}x sequential)"
              f"  nginx reloads/run {statistics.median(reloads[name]):.0f}")
    fl = statistics.median(floor_times)
    print(f"prefect floor: {fl:7.2f}s  ({fl / med['bare']:.2f}x bare) for {n_targets} no-op task runs; "
          f"certfleet above it: {med['certfleet'] - fl:.2f}s")
    print(f"certfleet server-side lag after the flow returned, until recorded and quiet (median): "
          f"{statistics.median(cf.lags):.1f}s")
    print(f"re-run with nothing to do: {rerun:.2f}s ({rerun / med['certfleet'] * 100:.0f}% of a first run)"
          f" — flow said: {rerun_msg}")
    s = med["certfleet"]
    print(f"fanout: targets={n_targets} endpoints={n_endpoints} seconds={s:.2f} "
          f"vs_bare={s / med['bare']:.2f}x vs_sequential={s / med['sequential']:.2f}x "
          f"rerun={rerun / s * 100:.0f}%")


if __name__ == "__main__":
    main()
