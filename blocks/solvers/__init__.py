"""DNS-01 / HTTP-01 solver blocks, one module per kind.

Product kinds live here. Test-only kinds (``challtestsrv``, Pebble's fake DNS) ship
with the development tools (the certfleet-dev distribution) and are offered only when
it is installed: see :func:`dev_solver_kinds`.
"""

from __future__ import annotations

from functools import cache

# kind -> (module, class) of the solvers that come with certfleet-dev
DEV_SOLVERS = {"challtestsrv": ("certfleet_dev.challtestsrv", "ChallTestSrvSolver")}
DEV_INSTALL_HINT = "pip install certfleet-dev (from a checkout: pip install -e ./dev)"


@cache
def dev_solver_kinds() -> dict[str, type]:
    """The test-only solver kinds, when certfleet-dev is installed; else none."""
    import importlib

    kinds = {}
    for kind, (module, cls) in DEV_SOLVERS.items():
        try:
            kinds[kind] = getattr(importlib.import_module(module), cls)
        except ImportError:
            continue
    return kinds
