"""Benchmark: one call to ``emergency_rotation`` for a 100-certificate fleet.

Setup (all loopback): Pebble (its challtestsrv answers dns-01; default 5% nonce rejection
and 50% authorization reuse), one nginx with 100 SNI vhosts on one port, fed by 100 file
targets (fullchain + key + ``nginx -s reload``); 25 certificates also go to S3 (moto's
``ThreadedMotoServer``) and 25 others to Kubernetes TLS Secrets (kmock's
``KubernetesEmulator``, run outside pytest on its own event loop in a thread). The fleet
is first brought up by the ``lifecycle`` flow (not timed). Then, alternated with a
baseline, ``emergency_rotation(issuer="pebble", reason="keyCompromise")`` rotates all
100: new keys, issue, distribute to every target, verify every endpoint from outside,
then revoke the old serials.

Reported per rotation, from the flow's own timeline (``state.result()["timeline"]``):
seconds from start to "verified 100/100" and to "revoked 100/100"; plus the whole flow
call. Baselines for context (same Pebble, same solver, same account style): the same
100 issuances with the bare short-polling ``AcmeClient`` loop, sequential and one thread
per certificate — issuance only, no distribution, verification or revocation.

After the last rotation the bench checks from outside: every SNI name serves the
store's current serial (stdlib ssl, full verification), every old serial of that
rotation is revoked at Pebble, S3 objects and Secrets hold the new serials.

Run: ``.venv/bin/python bench/emergency.py [N] [REPEATS]``. The last line is machine-readable.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    bare_issue_all,
    bare_issue_concurrent,
    interleaved,
    kmock_server,
    machine_note,
    median,
    moto_server,
    new_account_key,
    prefect_server,
)

ZONE = "shop.test"
AWS_SECRET_ENV = "CERTFLEET_BENCH_AWS_SECRET"
BUCKET = "certfleet-bench"
_STEP = re.compile(r"\(\+([0-9.]+)s\) (.*)$")


def build_fleet(workdir: Path, n: int, pebble, s3_url: str | None, kube_url: str | None):
    from certfleet import localca
    from certfleet_dev.nginx import Vhost, free_port, start_nginx

    port = free_port()
    tls = workdir / "tls"
    tls.mkdir()
    vhosts = []
    for i in range(n):  # nginx needs files at start: self-signed placeholders, replaced by lifecycle
        chain, key = localca.self_signed([f"c{i}.{ZONE}"])
        (tls / f"c{i}.pem").write_bytes(chain)
        (tls / f"c{i}.key").write_bytes(key)
        vhosts.append(Vhost(f"c{i}", [f"c{i}.{ZONE}"], port, tls / f"c{i}.pem", tls / f"c{i}.key",
                            default_server=i == 0))
    nginx = start_nginx(workdir / "nginx", vhosts, worker_processes=1)
    reload = json.dumps(nginx.reload_command)
    kubeconfig = None
    if kube_url:
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": kube_url.rstrip("/")}}],
            "users": [{"name": "certfleet", "user": {"token": "bench-token"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "certfleet"}}],
        }))
    creds = {"region_name": "us-east-1", "aws_access_key_id": "testing",
             "aws_secret_access_key": {"env": AWS_SECRET_ENV}, "endpoint_url": s3_url}
    quarter = n // 4
    targets, certs, kinds = [], [], {"file": 0, "s3": 0, "kubernetes": 0}
    for i in range(n):
        targets.append(f"  file-{i}: {{kind: file, fullchain_path: tls/c{i}.pem, key_path: tls/c{i}.key, "
                       f"reload_command: {reload}}}")
        names = [f"file-{i}"]
        kinds["file"] += 1
        if s3_url and i < quarter:
            targets.append(f"  s3-{i}: {{kind: s3, bucket: {BUCKET}, key_prefix: c{i}/, credentials: {json.dumps(creds)}}}")
            names.append(f"s3-{i}")
            kinds["s3"] += 1
        if kubeconfig and quarter <= i < 2 * quarter:
            targets.append(f"  k8s-{i}: {{kind: kubernetes, secret_name: c{i}-tls, namespaces: [shop], "
                           f"kubeconfig_path: {kubeconfig}}}")
            names.append(f"k8s-{i}")
            kinds["kubernetes"] += 1
        certs.append(f"  - {{name: c{i}, domains: [c{i}.{ZONE}], issuer: pebble, targets: [{', '.join(names)}], "
                     f"endpoints: ['127.0.0.1:{port}']}}")
    (workdir / "roots.pem").write_bytes(pebble.roots_pem())
    inv = workdir / "inventory.yaml"
    inv.write_text(
        "store: {path: store}\ntrust_bundle: roots.pem\nissuers:\n"
        f"  pebble:\n    kind: acme\n    directory_url: {pebble.directory_url}\n    ca_bundle: {pebble.ca_cert_path}\n"
        f"    solver: {{kind: challtestsrv, url: \"{pebble.challtestsrv_url}\"}}\n"
        "    rate_limits: {certificates_per_domain: 100000, new_orders: 100000, "
        "certificates_per_name_set: 100000, failed_validations: 100000}\n"
        "targets:\n" + "\n".join(targets) + "\ncertificates:\n" + "\n".join(certs) + "\n")
    return inv, port, nginx, kinds


def served_serial(port: int, sni: str, cafile: Path) -> str:
    from cryptography import x509

    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


def step_seconds(timeline: list[str], prefix: str) -> float:
    for line in timeline:
        m = _STEP.search(line)
        if m and m.group(2).startswith(prefix):
            return float(m.group(1))
    raise AssertionError(f"no '{prefix}' step in timeline {timeline}")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3

    from certfleet_dev.pebble import start_pebble

    rotations: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="certfleet-bench-emergency-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        os.environ[AWS_SECRET_ENV] = "testing"
        kube_note = "kmock KubernetesEmulator (in-process, own event loop)"
        nginx = None
        with start_pebble(workdir / "pebble") as pebble, moto_server() as s3_url:
            import boto3

            s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
            s3.create_bucket(Bucket=BUCKET)
            try:
                kube_cm = kmock_server()
                kube_url = kube_cm.__enter__()
            except Exception as exc:  # noqa: BLE001 - reported; the bench goes on without k8s
                kube_cm, kube_url, kube_note = None, None, f"NO Kubernetes: kmock did not start ({exc})"
            try:
                inv, port, nginx, kinds = build_fleet(workdir, n, pebble, s3_url, kube_url)
                from certfleet_dev.challtestsrv import ChallTestSrvSolver
                from certfleet.store import LocalStore

                solver = ChallTestSrvSolver(url=pebble.challtestsrv_url)
                account = new_account_key()
                certs = [(f"b{i}", [f"c{i}.{ZONE}"]) for i in range(n)]
                store = LocalStore(workdir / "store")
                with prefect_server():
                    from certfleet.flows.emergency import emergency_rotation
                    from certfleet.flows.lifecycle import lifecycle

                    print(f"setup: pebble + moto + kmock + nginx({n} vhosts) + prefect API in "
                          f"{time.perf_counter() - t0:.1f}s; {machine_note()}; targets {kinds}; {kube_note}")
                    started = time.perf_counter()
                    state = lifecycle(inventory=str(inv), verify_deadline=120, return_state=True)
                    assert state.is_completed(), state.message
                    print(f"fleet brought up by lifecycle in {time.perf_counter() - started:.1f}s (not counted)")
                    started = time.perf_counter()
                    bare_issue_all(pebble.directory_url, pebble.ca_cert_path, account, solver, certs[:5])
                    print(f"warm-up bare loop (5): {time.perf_counter() - started:.1f}s (not counted)")

                    def rotate() -> None:
                        old = {f"c{i}": store.current(f"c{i}").serial for i in range(n)}
                        state = emergency_rotation(inventory=str(inv), issuer="pebble", reason="keyCompromise",
                                                   verify_deadline=120, return_state=True)
                        assert state.is_completed(), state.message
                        timeline = state.result()["timeline"]
                        rotations.append({"old": old, "timeline": timeline,
                                          "verified_s": step_seconds(timeline, f"verified {n}/{n}"),
                                          "revoked_s": step_seconds(timeline, f"revoked {n}/{n}"),
                                          "issued_s": step_seconds(timeline, f"issued {n}/{n}"),
                                          "distributed_s": step_seconds(timeline, "distributed")})

                    times = interleaved({
                        "bare-sequential": lambda: bare_issue_all(pebble.directory_url, pebble.ca_cert_path,
                                                                  account, solver, certs),
                        "bare-concurrent": lambda: bare_issue_concurrent(pebble.directory_url, pebble.ca_cert_path,
                                                                         account, solver, certs),
                        "emergency_rotation": rotate,
                    }, repeats)

                    # From outside certfleet, after the last rotation.
                    last = rotations[-1]
                    cafile = workdir / "roots.pem"
                    for i in range(n):
                        cur = store.current(f"c{i}").serial
                        assert cur != last["old"][f"c{i}"]
                        assert served_serial(port, f"c{i}.{ZONE}", cafile) == cur, f"c{i} not served"
                        assert pebble.cert_status(last["old"][f"c{i}"])["Status"] == "Revoked", f"c{i} old not revoked"
                    from certfleet import pki

                    for i in range(kinds["s3"]):
                        body = s3.get_object(Bucket=BUCKET, Key=f"c{i}/fullchain.pem")["Body"].read()
                        assert pki.serial_hex(pki.order_chain(pki.load_certs(body))[0]) == store.current(f"c{i}").serial
                    k8s_checked = 0
                    if kube_url:
                        import base64

                        from kubernetes import client as kclient
                        from kubernetes import config as kconfig

                        core = kclient.CoreV1Api(kconfig.new_client_from_config(str(workdir / "kubeconfig"),
                                                                                persist_config=False))
                        quarter = n // 4
                        for i in range(quarter, quarter + kinds["kubernetes"]):
                            secret = core.read_namespaced_secret(f"c{i}-tls", "shop")
                            crt = base64.b64decode(secret.data["tls.crt"])
                            assert pki.serial_hex(pki.order_chain(pki.load_certs(crt))[0]) == store.current(f"c{i}").serial
                            k8s_checked += 1
                    print(f"checked from outside: {n} endpoints serve the new serials, {n} old serials revoked, "
                          f"{kinds['s3']} S3 objects and {k8s_checked} Kubernetes Secrets current")
                    nginx_reloads = nginx.reload_count
            finally:
                if kube_cm is not None:
                    kube_cm.__exit__(None, None, None)
                if nginx is not None:
                    nginx.stop()
    print(f"\n{n} certificates, one emergency_rotation call each round (targets: {kinds}), "
          f"median of {repeats} alternated rounds; nginx reloads in total: {nginx_reloads}")
    print("last rotation's timeline:")
    for line in rotations[-1]["timeline"]:
        print(f"    {line}")
    keys = ("issued_s", "distributed_s", "verified_s", "revoked_s")
    med = {k: median([r[k] for r in rotations]) for k in keys}
    print(f"{'emergency_rotation':>20}: " + "  ".join(f"{k[:-2]} {med[k]:6.2f}s" for k in keys)
          + f"  | whole flow call {median(times['emergency_rotation']):6.2f}s")
    for k in keys:
        print(f"{'':>20}  {k[:-2]:>11}: runs " + " ".join(f"{r[k]:.2f}" for r in rotations))
    for name in ("bare-sequential", "bare-concurrent"):
        m = median(times[name])
        print(f"{name:>20}: {m:6.2f}s for {n} issuances only  (verified_s / this = {med['verified_s'] / m:.2f}x, "
              f"revoked_s / this = {med['revoked_s'] / m:.2f}x)  runs: {' '.join(f'{t:.2f}' for t in times[name])}")
    print(f"emergency: N={n} verified_s={med['verified_s']:.2f} revoked_s={med['revoked_s']:.2f}")


if __name__ == "__main__":
    main()
