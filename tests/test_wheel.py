"""The runtime package as a user installs it.

The test-only solver ``challtestsrv`` (Pebble's fake DNS) is offered only with the
development tools (certfleet-dev): without them an inventory naming it is refused,
naming the field and how to install them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


INVENTORY = textwrap.dedent("""
    store: {path: store}
    issuers:
      pebble:
        kind: acme
        directory_url: https://127.0.0.1:14000/dir
        solver: {kind: challtestsrv, url: "http://127.0.0.1:8055"}
    certificates:
      - {name: shop, domains: [shop.test], issuer: pebble}
""")


def _validate(tmp_path, hide_dev: bool) -> subprocess.CompletedProcess:
    inv = tmp_path / "inventory.yaml"
    inv.write_text(INVENTORY)
    # Hiding certfleet-dev from this one process stands for an install without it (the
    # wheel test below checks the same with a venv that really lacks it).
    code = ("import sys\n" + ("sys.modules['certfleet_dev'] = None\n" if hide_dev else "")
            + "from certfleet.cli import main\nsys.exit(main(['validate', '-i', sys.argv[1]]))")
    return subprocess.run([sys.executable, "-c", code, str(inv)], capture_output=True, text=True, timeout=120)


def test_challtestsrv_is_a_solver_kind_only_with_the_dev_tools(tmp_path):
    with_dev = _validate(tmp_path, hide_dev=False)
    assert with_dev.returncode == 0, with_dev.stderr
    without = _validate(tmp_path, hide_dev=True)
    assert without.returncode == 2
    assert "issuers.pebble.solver.kind: solver kind 'challtestsrv'" in without.stderr
    assert "pip install certfleet-dev" in without.stderr


# -- the wheel, installed the way the Dockerfile installs it, outside the checkout -------

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def dockerfile_script(root: Path, python: str) -> str:
    """The Dockerfile's COPY and RUN steps as a shell script rooted at ``root``.

    No Docker engine here: each stage's COPY becomes a copy into ``root/<stage>``, each
    RUN runs there, ``python`` is the fresh venv's, absolute image paths move under
    ``root``; ``useradd`` (image-only) is skipped.
    """
    lines, stage, cmds = (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines(), "build", []
    for line in lines:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        op = words[0].upper()
        if op == "FROM":
            stage = words[3] if len(words) > 3 else "final"
            cmds.append(f"mkdir -p {root}/{stage} && cd {root}/{stage}")
        elif op == "WORKDIR":
            continue
        elif op == "COPY":
            args = [w for w in words[1:] if not w.startswith("--from=")]
            *srcs, dest = args
            base = root / "build" if any(w.startswith("--from=") for w in words) else REPO
            dest = f"{root}{dest}" if dest.startswith("/") else dest
            for src in srcs:
                src_path = Path(src) if src.startswith("/") else base / src
                src_path = Path(f"{root}{src}") if src.startswith("/") else src_path
                if str(src_path) == dest:   # absolute image paths are shared by both stages here
                    continue
                cmds.append(f"mkdir -p {shlex.quote(str(Path(dest) if dest.endswith('/') else Path(dest).parent))} && "
                            f"cp -r {src_path} {dest}")
        elif op == "RUN":
            cmd = " ".join(words[1:])
            if "useradd" in cmd:
                continue
            cmd = re.sub(r"(?<![\w.])/(wheels|tmp/constraints\.txt)", lambda m: f"{root}/{m.group(1)}", cmd)
            cmds.append(cmd.replace("python -m pip", f"{python} -m pip"))
    return "set -ex\n" + "\n".join(cmds) + "\n"


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory):
    """A fresh venv in a temp dir holding no checkout, with certfleet installed by the
    Dockerfile's own steps (wheel built, then installed pinned by constraints.txt). Built
    once per session; certfleet-dev is NOT installed in it."""
    root = tmp_path_factory.mktemp("wheel")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # the build stage needs setuptools to build the wheel; the venv's pip brings none
    script = dockerfile_script(root / "image", str(venv / "bin" / "python"))
    (root / "dockerfile.sh").write_text(script)
    out = subprocess.run(["bash", str(root / "dockerfile.sh")], capture_output=True, text=True, timeout=1800,
                         env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    assert out.returncode == 0, f"Dockerfile steps failed:\n{script}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    work = root / "work"
    work.mkdir()
    return {"venv": venv, "work": work, "root": root}


def _run(wheel_venv, *args, env=None, timeout=600) -> subprocess.CompletedProcess:
    venv = wheel_venv["venv"]
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("PREFECT_")}
    clean["PATH"] = f"{venv / 'bin'}:{clean.get('PATH', '')}"
    clean["PREFECT_HOME"] = str(wheel_venv["root"] / "prefect-home")
    return subprocess.run(list(args), cwd=wheel_venv["work"], capture_output=True, text=True, timeout=timeout,
                          env={**clean, **(env or {})})


@pytest.mark.services
def test_wheel_installs_under_the_certfleet_namespace_only(wheel_venv):
    py = str(wheel_venv["venv"] / "bin" / "python")
    out = _run(wheel_venv, py, "-c", "import certfleet, sysconfig, sys; print(certfleet.__file__); print(sysconfig.get_paths()['purelib'])")
    assert out.returncode == 0, out.stderr
    where, site = out.stdout.split()
    assert where.startswith(site) and str(REPO) not in where   # imported from the venv, not the checkout
    top = {p.name for p in Path(site).iterdir()}
    assert not top & {"flows", "tasks", "blocks", "deployments", "certfleet_dev"}, sorted(top & {"flows", "tasks", "blocks"})
    assert (Path(site) / "certfleet" / "deployments" / "prefect.yaml").is_file()
    # every entry point of the shipped prefect.yaml imports from the installed package
    code = ("import yaml, importlib.resources as r; from prefect.utilities.importtools import import_object\n"
            "d = yaml.safe_load((r.files('certfleet.deployments') / 'prefect.yaml').read_text())\n"
            "for dep in d['deployments']: print(dep['name'], import_object(dep['entrypoint']).name)")
    out = _run(wheel_venv, py, "-c", code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "lifecycle lifecycle" in out.stdout and "notify-alert notify-alert" in out.stdout


@pytest.mark.services
def test_cli_from_the_wheel_help_init_validate(wheel_venv, tmp_path):
    certfleet = str(wheel_venv["venv"] / "bin" / "certfleet")
    out = _run(wheel_venv, certfleet, "--help")
    assert out.returncode == 0 and "deploy" in out.stdout and "init" in out.stdout, out.stderr
    fleet_dir = wheel_venv["work"] / "fleet"
    out = _run(wheel_venv, certfleet, "init", str(fleet_dir))
    assert out.returncode == 0, out.stderr
    out = _run(wheel_venv, certfleet, "validate", "-i", str(fleet_dir / "inventory.yaml"))
    assert out.returncode == 0 and ": OK" in out.stdout, out.stderr
    # no dev tools in this venv: the test solver is not a product kind
    inv = tmp_path / "inventory.yaml"
    inv.write_text(INVENTORY)
    out = _run(wheel_venv, certfleet, "validate", "-i", str(inv))
    assert out.returncode == 2
    assert "issuers.pebble.solver.kind: solver kind 'challtestsrv'" in out.stderr and "pip install certfleet-dev" in out.stderr
    out = _run(wheel_venv, certfleet, "demo")
    assert out.returncode == 2 and "pip install certfleet-dev" in out.stderr
