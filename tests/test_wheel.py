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
