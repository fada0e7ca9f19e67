"""The automations in deployments/prefect.yaml, end to end, as an operator would run them.

A real ``prefect server start`` (own PREFECT_HOME and SQLite), the ``certfleet`` process
work pool, ``prefect deploy`` of the project's prefect.yaml from the repository root, a
``prefect worker``; then the events the monitor emits (built by ``certfleet.fleet``,
sent with ``prefect event emit``) must start the right deployment for the right
certificate, and the run must do the work:

- ``certfleet.certificate.drift``  → ``distribute`` → the file target holds the store's serial;
- ``certfleet.certificate.expiring`` (critical) → ``renew`` → the store has a new serial;
- ``certfleet.verification.failed`` → ``notify-verification-failed`` → a Slack receiver gets the message.

One server for the module; every process is stopped by its PID (process group) at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import yaml

from certfleet import fleet, pki
from certfleet_dev.ports import free_port
from certfleet.store import LocalStore

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
PREFECT_FILE = "deployments/prefect.yaml"
RUN_TIMEOUT = 240.0


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started (its id is the child's PID), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


class Stack:
    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        self.env.update({
            "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_API_URL": self.api,
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_WORKER_QUERY_SECONDS": "2",      # default 10: only to keep the test short
            "PREFECT_CLI_PROMPT": "false",
            "PYTHONUNBUFFERED": "1",
        })
        self.procs: list[subprocess.Popen] = []
        self.http = httpx.Client(base_url=self.api, timeout=30)

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")
        proc = subprocess.Popen([PREFECT, *args], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
        out = subprocess.run([PREFECT, *args], cwd=REPO, env={**self.env, **(env or {})}, capture_output=True,
                             text=True, timeout=timeout)
        assert out.returncode == 0, f"prefect {' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out

    def wait_healthy(self, proc: subprocess.Popen, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited {proc.returncode}:\n{_tail(self.root / 'server.log')}")
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        pytest.fail(f"prefect server not healthy after {timeout}s:\n{_tail(self.root / 'server.log')}")

    def stop(self) -> None:
        for proc in reversed(self.procs):   # worker first, then the server
            _stop(proc)
        self.http.close()

    # -- API reads ---------------------------------------------------------------------

    def deployment_id(self, flow: str, name: str) -> str:
        r = self.http.get(f"/deployments/name/{flow}/{name}")
        r.raise_for_status()
        return r.json()["id"]

    def runs_of(self, deployment_id: str) -> list[dict]:
        r = self.http.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}}})
        r.raise_for_status()
        return r.json()

    def wait_for_run(self, deployment_id: str, certificate: str, timeout: float = RUN_TIMEOUT, key: str = "certificates") -> dict:
        """The run started for ``certificate``, once it is in a final state."""
        want = [certificate] if key == "certificates" else certificate
        deadline = time.monotonic() + timeout
        run = None
        while time.monotonic() < deadline:
            mine = [r for r in self.runs_of(deployment_id) if r["parameters"].get(key) == want]
            run = mine[0] if mine else None
            if run and run["state"] and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
            time.sleep(1)
        pytest.fail(f"no finished run for {certificate} after {timeout}s (last seen: {run and run['state']});\n"
                    f"worker log:\n{_tail(self.root / 'worker.log')}")

    def explain(self, run: dict) -> str:
        return f"{run['state']['type']}: {run['state'].get('message')}\nworker log:\n{_tail(self.root / 'worker.log')}"

    def emit(self, spec: fleet.EventSpec) -> None:
        self.cli("event", "emit", spec.event, "--resource", json.dumps(spec.resource),
                 "--payload", json.dumps(spec.payload, default=str))


@pytest.fixture(scope="module")
def fleet_files(tmp_path_factory, local_ca):
    """One inventory, two certificates: one drifting on a file target, one about to expire."""
    root = tmp_path_factory.mktemp("automations")
    tag = uuid.uuid4().hex[:8]
    drift, soon = f"drift-{tag}", f"soon-{tag}"
    store = LocalStore(root / "store")
    chain, key = local_ca.issue([f"{drift}.shop.test"])
    store.put(drift, chain, key, issuer="internal")
    now = datetime.now(timezone.utc)
    chain, key = local_ca.issue([f"{soon}.shop.test"], not_before=now - timedelta(days=85), not_after=now + timedelta(days=3))
    store.put(soon, chain, key, issuer="internal")
    (root / "roots.pem").write_bytes(local_ca.root_pem)
    (root / "lb").mkdir()
    inventory = root / "inventory.yaml"
    inventory.write_text(textwrap.dedent(f"""
        store: {{path: store}}
        trust_bundle: roots.pem
        issuers:
          internal: {{kind: local-ca, directory: {local_ca.directory}}}
        targets:
          lb-1: {{kind: file, fullchain_path: lb/{drift}.pem, key_path: lb/{drift}.key}}
        certificates:
          - {{name: {drift}, domains: [{drift}.shop.test], issuer: internal, targets: [lb-1]}}
          - {{name: {soon}, domains: [{soon}.shop.test], issuer: internal}}
    """))
    return {"root": root, "inventory": inventory, "store": store, "drift": drift, "soon": soon,
            "target_pem": root / "lb" / f"{drift}.pem"}


@pytest.fixture(scope="module")
def stack(fleet_files, tmp_path_factory):
    """Server → work pool → deploy (from the repo root) → worker; everything stopped at the end."""
    s = Stack(tmp_path_factory.mktemp("prefect-stack"))
    timings = {}
    try:
        t0 = time.monotonic()
        server = s.start("server", "server", "start", "--host", "127.0.0.1", "--port", str(s.port))
        s.wait_healthy(server)
        timings["server"] = time.monotonic() - t0

        t0 = time.monotonic()
        s.cli("work-pool", "create", "certfleet", "--type", "process")
        names = [d["name"] for d in yaml.safe_load((REPO / PREFECT_FILE).read_text())["deployments"]]
        if (REPO / "flows" / "emergency.py").exists():
            select = ["--all"]
        else:   # written by someone else; deploy everything but it
            select = [a for n in names if n != "emergency-rotation" for a in ("--name", n)]
        s.cli("--no-prompt", "deploy", *select, "--prefect-file", PREFECT_FILE,
              env={"CERTFLEET_INVENTORY": str(fleet_files["inventory"])}, timeout=300)
        timings["deploy"] = time.monotonic() - t0

        s.start("worker", "worker", "start", "--pool", "certfleet")
        s.timings = timings
        yield s
    finally:
        s.stop()
        print(f"\nstack timings: {', '.join(f'{k} {v:.1f}s' for k, v in timings.items())}")


def test_deployments_and_automations_from_prefect_yaml(stack, fleet_files):
    """What `prefect deploy` made of the file: schedules, parameters, one automation per trigger."""
    lifecycle = stack.http.get("/deployments/name/lifecycle/lifecycle").json()
    assert lifecycle["parameters"] == {"inventory": str(fleet_files["inventory"])}
    assert [s["schedule"].get("cron") for s in lifecycle["schedules"]] == ["17 6 * * *"]
    monitor = stack.http.get("/deployments/name/monitor/monitor").json()
    assert [s["schedule"].get("interval") for s in monitor["schedules"]] == [900.0]
    for flow in ("renew", "distribute", "verify"):
        dep = stack.http.get(f"/deployments/name/{flow}/{flow}").json()
        assert dep["schedules"] == [] and dep["work_pool_name"] == "certfleet"

    automations = {a["name"]: a for a in stack.http.post("/automations/filter", json={}).json()}
    assert {"certfleet-renew-on-critical-expiry", "certfleet-distribute-on-drift",
            "certfleet-slack-on-verification-failed"} <= set(automations)
    assert {"certfleet-alert-on-failed-run", "certfleet-alert-on-long-run", "certfleet-alert-on-long-monitor",
            "certfleet-alert-on-unreachable-endpoint", "certfleet-alert-on-budget-exhausted"} <= set(automations)
    assert automations["certfleet-alert-on-long-run"]["trigger"]["posture"] == "Proactive"
    assert automations["certfleet-alert-on-budget-exhausted"]["trigger"]["expect"] == ["certfleet.budget.exhausted"]
    # Entry points are module paths and nothing is pulled: a worker needs only the package.
    assert lifecycle["entrypoint"] == "certfleet.flows.lifecycle:lifecycle" and lifecycle["pull_steps"] in (None, [])
    assert lifecycle["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    renew = automations["certfleet-renew-on-critical-expiry"]
    assert renew["trigger"]["expect"] == ["certfleet.certificate.expiring"]
    assert renew["trigger"]["match"]["certfleet.severity"] == "critical"
    assert renew["actions"][0]["parameters"] == {"certificates": ["{{ event.resource['certfleet.certificate'] }}"]}


def test_drift_event_runs_distribute_for_that_certificate(stack, fleet_files):
    name, store = fleet_files["drift"], fleet_files["store"]
    issued = store.current(name).serial
    assert not fleet_files["target_pem"].exists()
    # Exactly the event the monitor emits for a target that does not hold the issued serial.
    [event] = fleet.events_for([fleet.target_row(name, store.current(name).info, "lb-1", None)])
    assert event.event == "certfleet.certificate.drift"

    t0 = time.monotonic()
    stack.emit(event)
    run = stack.wait_for_run(stack.deployment_id("distribute", "distribute"), name)
    print(f"\ndrift event → distribute run COMPLETED in {time.monotonic() - t0:.1f}s")
    assert run["state"]["type"] == "COMPLETED", stack.explain(run)
    assert run["parameters"]["certificates"] == [name]
    assert run["parameters"]["inventory"] == str(fleet_files["inventory"])
    held = pki.serial_hex(pki.order_chain(pki.load_certs(fleet_files["target_pem"].read_bytes()))[0])
    assert held == issued


def test_critical_expiring_event_runs_renew_for_that_certificate(stack, fleet_files):
    name, store = fleet_files["soon"], fleet_files["store"]
    before = store.current(name)
    now = datetime.now(timezone.utc)
    row = fleet.Row(certificate=name, kind="endpoint", location=f"{name}.shop.test@127.0.0.1:443",
                    status=fleet.Status.DUE, reason="3 days left", seen_serial=before.serial,
                    issued_serial=before.serial, not_after=before.info.not_after,
                    days_left=before.info.remaining(now) / 86400)
    [event] = fleet.events_for([row])
    assert event.event == "certfleet.certificate.expiring" and event.resource["certfleet.severity"] == "critical"

    t0 = time.monotonic()
    stack.emit(event)
    run = stack.wait_for_run(stack.deployment_id("renew", "renew"), name)
    print(f"\nexpiring event → renew run COMPLETED in {time.monotonic() - t0:.1f}s")
    assert run["state"]["type"] == "COMPLETED", stack.explain(run)
    assert run["parameters"]["certificates"] == [name]
    after = store.current(name)
    assert after.serial != before.serial
    assert after.info.not_after > before.info.not_after + timedelta(days=30)
    # Only that certificate was renewed: the drifting one still has one version.
    assert len(list(store.versions(fleet_files["drift"]))) == 1


def test_failed_run_raises_an_alert_without_slack(stack, fleet_files):
    """A renew run that ends Failed starts notify-alert, named after what failed; with no
    Slack block saved (this test runs before the Slack one) the alert run still completes."""
    dep = stack.deployment_id("renew", "renew")
    r = stack.http.post(f"/deployments/{dep}/create_flow_run", json={"parameters": {"certificates": ["no-such-cert"]}})
    r.raise_for_status()
    failed = stack.wait_for_run(dep, "no-such-cert")
    assert failed["state"]["type"] == "FAILED", stack.explain(failed)
    assert failed["name"] == "renew-no-such-cert"
    alerts = stack.deployment_id("notify-alert", "notify-alert")
    deadline = time.monotonic() + RUN_TIMEOUT
    mine = []
    while time.monotonic() < deadline:
        mine = [a for a in stack.runs_of(alerts) if "renew-no-such-cert" in a["parameters"].get("subject", "")
                and a["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED")]
        if mine:
            break
        time.sleep(1)
    assert mine, f"no alert run for the failed renew run;\nworker log:\n{_tail(stack.root / 'worker.log')}"
    [alert] = mine
    assert alert["state"]["type"] == "COMPLETED", stack.explain(alert)
    assert alert["parameters"]["subject"] == "renew run renew-no-such-cert ended Failed"
    assert "no-such-cert" in alert["parameters"]["detail"]


def test_verification_failed_event_posts_to_slack(stack, fleet_files):
    """The event → notify-verification-failed → the saved Slack block → Slack's API."""
    from tests.test_slack import TOKEN, Receiver

    slack = Receiver()
    try:
        save = ("from certfleet.blocks.notifiers.slack import SlackNotifier; "
                f"SlackNotifier(bot_token={TOKEN!r}, channel='C0TEST', base_url={slack.url + '/api/'!r})"
                ".save('certfleet-slack', overwrite=True)")
        out = subprocess.run([sys.executable, "-c", save], cwd=REPO, env=stack.env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]

        name = fleet_files["drift"]
        endpoint = f"www.{name}.shop.test@127.0.0.1:8443"
        row = fleet.Row(certificate=name, kind="endpoint", location=endpoint, status=fleet.Status.HOSTNAME_MISMATCH,
                        reason=f"{endpoint}: certificate does not cover www.{name}.shop.test")
        [event] = fleet.events_for([row])
        assert event.event == "certfleet.verification.failed"
        stack.emit(event)
        run = stack.wait_for_run(stack.deployment_id("notify-verification-failed", "notify-verification-failed"),
                                 name, key="certificate")
        assert run["state"]["type"] == "COMPLETED", stack.explain(run)
        assert run["parameters"] == {"certificate": name, "endpoint": endpoint, "reason": row.reason,
                                     "slack_block": "certfleet-slack"}
        [req] = slack.requests
        assert req["headers"]["authorization"] == f"Bearer {TOKEN}"
        body = json.loads(req["body"])
        assert body["channel"] == "C0TEST"
        assert body["blocks"][1]["text"]["text"] == f"• {name} @ {endpoint}: {row.reason}"
    finally:
        slack.close()
