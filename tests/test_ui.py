"""What an operator sees in the Prefect UI after a lifecycle run, in a real browser.

A real ``prefect server start`` (its own PREFECT_HOME, SQLite, a free loopback port), a
process work pool, the ``lifecycle`` flow deployed from this checkout and run by a
``prefect worker start --run-once`` — the path a scheduled run takes in production —
against a small Pebble + nginx fleet. Then headless Chromium (Debian ``chromium``)
loads the flow run page and the verification artifact's page; the rendered DOM must name
the run, its state, each certificate and the serial every endpoint now serves, and the
screenshots must be real pictures.

Everything Prefect runs in subprocesses with an explicit environment, so the session's
in-process test harness (``prefect_harness``) never sees, or is seen by, this server.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from certfleet_dev.nginx import Vhost
from certfleet_dev.ports import free_port
from certfleet.store import LocalStore

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags Chromium needs on these machines (closed network, root, no GPU).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1280,900"]
# Settings that would point a subprocess at another Prefect (the session harness, a profile).
FOREIGN_PREFECT = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_HOME", "PREFECT_PROFILES_PATH",
                   "PREFECT_PROFILE", "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_UI_API_URL",
                   "PREFECT_SERVER_API_HOST", "PREFECT_SERVER_API_PORT", "PREFECT_UI_URL")


# -- a real Prefect server ---------------------------------------------------------------

@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """``prefect server start`` on a free port; yields its URLs and the env for clients."""
    home = tmp_path_factory.mktemp("prefect-ui-home")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_PREFECT}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_API_URL=f"{base}/api",   # else the UI's browser code calls :4200
               PREFECT_LOGGING_LEVEL="INFO", PYTHONUNBUFFERED="1")
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen([PYTHON, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=home)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited {proc.returncode}:\n{(home / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server not healthy after 180 s:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"url": base, "api": f"{base}/api", "home": home,
               "env": {**env, "PREFECT_API_URL": f"{base}/api"}}
    finally:
        _stop_group(proc)
        log.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the process group this fixture started (server + its uvicorn children)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _run(cmd: list[str], env: dict, timeout: float, log: Path) -> str:
    """Run a Prefect CLI/Python subprocess; its output goes to ``log`` and is returned."""
    with log.open("wb") as out:
        # Own process group: a worker's flow-run child must not outlive a timeout.
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            pytest.fail(f"{' '.join(cmd[:4])}… still running after {timeout:.0f} s:\n{log.read_text(errors='replace')[-4000:]}")
    text = log.read_text(errors="replace")
    assert rc == 0, f"{' '.join(cmd[:4])}… exited {rc}:\n{text[-4000:]}"
    return text


# -- a small fleet (as in test_incident: Pebble issues, nginx serves) ---------------------

@pytest.fixture
def small_fleet(tmp_path, pebble, local_ca, nginx_factory):
    """Two certificates on one nginx, both serving certificates that expire tonight."""
    now = datetime.now(UTC)
    live = tmp_path / "live"
    live.mkdir()
    port = free_port()
    vhosts = []
    for name, domains in (("shop", ["shop.test", "www.shop.test"]), ("api", ["api.shop.test"])):
        chain, key = local_ca.issue(domains, not_before=now - timedelta(days=89), not_after=now + timedelta(hours=12))
        (live / f"{name}.pem").write_bytes(chain)
        (live / f"{name}.key").write_bytes(key)
        vhosts.append(Vhost(name, domains, port, live / f"{name}.pem", live / f"{name}.key", default_server=name == "shop"))
    nginx = nginx_factory(vhosts)
    roots = tmp_path / "roots.pem"
    roots.write_bytes(pebble.roots_pem())
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(textwrap.dedent(f"""
        store: {{path: store}}
        trust_bundle: roots.pem
        issuers:
          pebble:
            kind: acme
            directory_url: {pebble.directory_url}
            email: ops@shop.test
            ca_bundle: {pebble.ca_cert_path}
            solver: {{kind: challtestsrv, url: "{pebble.challtestsrv_url}"}}
        targets:
          shop-lb:
            kind: file
            fullchain_path: live/shop.pem
            key_path: live/shop.key
            reload_command: {nginx.reload_command!r}
          api-lb:
            kind: file
            fullchain_path: live/api.pem
            key_path: live/api.key
            reload_command: {nginx.reload_command!r}
        certificates:
          - name: shop
            domains: [shop.test, www.shop.test]
            issuer: pebble
            targets: [shop-lb]
            endpoints: ["shop.test@127.0.0.1:{port}", "www.shop.test@127.0.0.1:{port}"]
          - name: api
            domains: [api.shop.test]
            issuer: pebble
            targets: [api-lb]
            endpoints: ["api.shop.test@127.0.0.1:{port}"]
    """).replace("'", '"'))
    return {"inventory": inventory, "port": port, "roots": roots, "store": LocalStore(tmp_path / "store")}


def served_serial(port: int, sni: str, cafile: Path) -> str:
    """An independent handshake (stdlib ssl, full verification): what a browser gets."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            ctx.wrap_socket(sock, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


# -- the browser -------------------------------------------------------------------------

def chromium(args: list[str], workdir: Path, timeout: float = 120) -> str:
    """One headless Chromium run with a new empty profile; returns stdout."""
    profile = workdir / f"chromium-profile-{time.monotonic_ns()}"
    done = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, timeout=timeout, check=False)
    shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}"
    return done.stdout.decode(errors="replace")


def rendered_text(url: str, workdir: Path, must_contain: list[str], attempts: int = 3) -> str:
    """The page's visible text after the app has fetched its data (DOM after JS ran)."""
    text = ""
    for _ in range(attempts):
        dom = chromium(["--virtual-time-budget=20000", "--dump-dom", url], workdir)
        dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.DOTALL)
        # Table cells are rendered as Markdown: "sni@host:port" becomes a mailto link
        # around "sni@host". Inline links join their neighbours; other tags separate.
        dom = re.sub(r"</?a\b[^>]*>", "", dom)
        text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))
        if all(s in text for s in must_contain):
            return text
        time.sleep(2)   # the UI can render before the API answered on a loaded machine
    return text


def screenshot(url: str, path: Path) -> Path:
    chromium(["--virtual-time-budget=20000", f"--screenshot={path}", url], path.parent)
    assert path.exists(), f"chromium wrote no screenshot for {url}"
    return path


def png_colours(path: Path) -> tuple[int, int, int, Counter]:
    """(width, height, distinct colours, colour counts) of an 8-bit RGB/RGBA PNG.

    A few lines of zlib + the five PNG row filters, so no imaging library is needed.
    """
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = ihdr
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, f"unexpected PNG layout {ihdr}"
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    counts: Counter = Counter()
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif ftype == 3:
            for i in range(stride):
                line[i] = (line[i] + (((line[i - bpp] if i >= bpp else 0) + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        counts.update(bytes(line[i:i + bpp]) for i in range(0, stride, bpp))
        prev = line
    return width, height, len(counts), counts


# -- the test ----------------------------------------------------------------------------

DEPLOY_AND_RUN = """
import sys
from prefect import flow
from prefect.deployments import run_deployment
repo, pool, inventory = sys.argv[1:4]
lifecycle = flow.from_source(source=repo, entrypoint="flows/lifecycle.py:lifecycle")
deployment_id = lifecycle.deploy(name="ui-test", work_pool_name=pool, build=False, push=False,
                                 print_next_steps=False,
                                 parameters={"inventory": inventory, "verify_deadline": 30})
run = run_deployment(deployment_id, timeout=0)
print("FLOW_RUN_ID", run.id)
"""


def test_lifecycle_run_and_its_artifact_as_seen_in_the_ui(prefect_server, small_fleet, issued_since, tmp_path):
    assert CHROMIUM, "headless Chromium is missing: install the Debian packages chromium + chromium-driver (make system-packages)"
    env, api, ui = prefect_server["env"], prefect_server["api"], prefect_server["url"]
    logs = tmp_path / "logs"
    logs.mkdir()

    # Deploy the lifecycle from this checkout to a process pool; a worker runs it once.
    pool = "certfleet-ui-test"
    _run([PYTHON, "-m", "prefect", "--no-prompt", "work-pool", "create", pool, "--type", "process"], env, 120,
         logs / "pool.log")
    out = _run([PYTHON, "-c", DEPLOY_AND_RUN, str(REPO), pool, str(small_fleet["inventory"])], env, 180,
               logs / "deploy.log")
    flow_run_id = re.search(r"FLOW_RUN_ID (\S+)", out).group(1)
    worker_log = _run([PYTHON, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process", "--run-once"],
                      env, 420, logs / "worker.log")

    run = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()
    assert run["state_type"] == "COMPLETED", f"{run['state_type']}: {run['state']['message']}\n{worker_log[-4000:]}"
    assert run["deployment_id"] and run["work_pool_name"] == pool

    # The fleet really changed: Pebble issued two certificates and nginx serves them.
    store, port, roots = small_fleet["store"], small_fleet["port"], small_fleet["roots"]
    serials = {name: store.current(name).serial for name in ("shop", "api")}
    assert sorted(issued_since()) == sorted(serials.values())
    assert served_serial(port, "shop.test", roots) == serials["shop"]
    assert served_serial(port, "api.shop.test", roots) == serials["api"]

    # The verification table the verify subflow of this run published.
    children = httpx.post(f"{api}/flow_runs/filter", timeout=10, json={
        "flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}}).json()
    assert len(children) == 3, [c["name"] for c in children]   # renew, distribute, verify
    artifacts = httpx.post(f"{api}/artifacts/filter", timeout=10, json={
        "artifacts": {"key": {"any_": ["fleet-verification"]},
                      "flow_run_id": {"any_": [c["id"] for c in children]}}}).json()
    assert len(artifacts) == 1, artifacts
    artifact = artifacts[0]

    # In the browser: the flow run page names the run and shows it Completed...
    shots = tmp_path / "screenshots"
    shots.mkdir()
    run_url = f"{ui}/runs/flow-run/{flow_run_id}"
    text = rendered_text(run_url, shots, [run["name"], "Completed"])
    assert run["name"] in text and "Completed" in text and "lifecycle" in text, text[:3000]
    assert "Can't connect to Server API" not in text

    # ...and the artifact page shows the table: every endpoint, with the served serial.
    art_url = f"{ui}/artifacts/artifact/{artifact['id']}"
    text = rendered_text(art_url, shots, [serials["shop"], serials["api"]])
    assert "fleet-verification" in text, text[:3000]
    for column in ("certificate", "endpoint", "expected", "served", "status"):
        assert column in text, f"column {column!r} missing from the rendered table: {text[:3000]}"
    for name, sni in (("shop", "shop.test"), ("shop", "www.shop.test"), ("api", "api.shop.test")):
        assert f"{sni}@127.0.0.1:{port}" in text, f"endpoint {sni} missing: {text[:3000]}"
        assert serials[name] in text, f"served serial of {name} missing: {text[:3000]}"
    assert "3 Items" in text or "3 items" in text.lower(), text[:3000]

    # Screenshots a person can look at (kept under tmp_path); each is a real picture.
    for page, url in (("flow-run", run_url), ("artifact", art_url)):
        png = screenshot(url, shots / f"{page}.png")
        width, height, colours, counts = png_colours(png)
        assert (width, height) == (1280, 900), (width, height)
        top_share = counts.most_common(1)[0][1] / (width * height)
        assert colours > 50 and top_share < 0.97, f"{png} looks blank: {colours} colours, top colour {top_share:.0%}"
