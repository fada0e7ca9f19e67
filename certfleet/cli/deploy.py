"""``certfleet deploy``: the deployments and automations of deployments/prefect.yaml,
created against the Prefect server of $PREFECT_API_URL, from an install with no checkout.

The file ships in the wheel (``certfleet.deployments``); its entry points are module
paths (``certfleet.flows.lifecycle:lifecycle``) and it pulls no code, so a worker with
only the package installed runs them. This command checks the inventory, makes sure
the work pool exists (a ``process`` pool unless told otherwise), then runs Prefect's
own ``prefect deploy --all`` on that file: one source of truth, one deploy logic.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from certfleet.cli.base import EXIT_ATTENTION, EXIT_OK, UsageError, load_checked


def prefect_file() -> Path:
    """The packaged prefect.yaml (the repository's deployments/prefect.yaml)."""
    try:
        from importlib.resources import files

        path = Path(str(files("certfleet.deployments") / "prefect.yaml"))
        if path.is_file():
            return path
    except ModuleNotFoundError:  # an editable install made before the file was packaged
        pass
    return Path(__file__).resolve().parents[2] / "deployments" / "prefect.yaml"


def _prefect(args: list[str], env: dict, cwd: str, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=cwd, text=True,
                          capture_output=capture, timeout=600)


def cmd_deploy(args) -> int:
    from prefect.settings import PREFECT_API_URL

    inv = load_checked(args.inventory)
    api = PREFECT_API_URL.value()
    if not api:
        raise UsageError("deploy: PREFECT_API_URL is not set; point it at your Prefect server's API "
                         "(e.g. export PREFECT_API_URL=http://prefect.internal:4200/api) — deployments made "
                         "on a temporary server would vanish with it")
    inventory = str(Path(args.inventory).resolve())
    env = {**os.environ, "CERTFLEET_INVENTORY": inventory, "PREFECT_CLI_PROMPT": "false"}
    with tempfile.TemporaryDirectory(prefix="certfleet-deploy-") as cwd:  # no stray ./prefect.yaml is read
        if _prefect(["work-pool", "inspect", args.pool], env, cwd, capture=True).returncode != 0:
            if not args.create_pool:
                raise UsageError(f"deploy: work pool '{args.pool}' does not exist on {api} (create it, or drop --no-create-pool)")
            out = _prefect(["work-pool", "create", args.pool, "--type", "process"], env, cwd, capture=True)
            if out.returncode != 0:
                print(out.stdout[-2000:] + out.stderr[-2000:], file=sys.stderr)
                return EXIT_ATTENTION
            print(f"created work pool '{args.pool}' (type process)")
        cmd = ["--no-prompt", "deploy", "--prefect-file", str(prefect_file())]
        cmd += [a for n in args.name for a in ("--name", n)] if args.name else ["--all"]
        if args.pool != "certfleet":
            cmd += ["--pool", args.pool]
        print(f"deploying {prefect_file()} to {api} with inventory {inventory} ({len(inv.certificates)} certificates)")
        out = _prefect(cmd, env, cwd)
    if out.returncode != 0:
        return EXIT_ATTENTION
    print(f"next: prefect worker start --pool {args.pool}   (on a machine with certfleet installed and the inventory at {inventory})")
    return EXIT_OK


def register(add) -> None:
    sp = add("deploy", "create certfleet's deployments and automations on the Prefect server of $PREFECT_API_URL", """
        Examples:
          export PREFECT_API_URL=http://prefect.internal:4200/api
          certfleet deploy -i /etc/certfleet/inventory.yaml
          certfleet deploy -i /etc/certfleet/inventory.yaml --name lifecycle --name monitor
          prefect worker start --pool certfleet

        Runs `prefect deploy` on the prefect.yaml shipped in the package (schedules,
        concurrency, triggers, failure alerts; see docs/automations.md). The inventory's
        absolute path becomes every deployment's `inventory` parameter: it must be the
        same path on the workers. Deploying again updates everything in place.""", cmd_deploy)
    sp.add_argument("--pool", default="certfleet", help="work pool name (default certfleet; created as a process pool if missing)")
    sp.add_argument("--no-create-pool", dest="create_pool", action="store_false", help="fail if the work pool does not exist")
    sp.add_argument("--name", action="append", default=[], help="deploy only this deployment (repeatable; default all)")
