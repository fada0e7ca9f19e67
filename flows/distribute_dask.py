"""The distribute flow with its per-target fan-out on Dask instead of a thread pool.

Same flow, same body (``certfleet.flows.distribute.distribute``), another task runner: each
``rollout`` task runs on a Dask worker, so a fleet of thousands of targets spreads over
the cores (or machines) of a Dask cluster. Key material still never travels: a task
gets the inventory path, certificate name, serial and target name, and loads the key
from the store on the worker — so every Dask worker must see the inventory file, the
store and the targets' files or credentials, exactly as a Prefect worker must.

Two ways to use it:

* ``distribute_on_dask(address="tcp://scheduler:8786")(inventory=...)`` from code, or
  ``distribute_on_dask(n_workers=4)`` for a temporary local cluster per flow run;
* the module-level ``distribute_dask`` flow, as a deployment entrypoint
  (``flows/distribute_dask.py:distribute_dask``): it connects to the cluster named by
  ``CERTFLEET_DASK_ADDRESS`` when set on the worker that imports it, else starts a
  local cluster (``CERTFLEET_DASK_WORKERS`` processes, default 2) for the run.

Needs ``prefect-dask`` (and thereby ``dask[distributed]``) where the flow runs.
"""

from __future__ import annotations

import os
from typing import Any

from prefect_dask import DaskTaskRunner

from certfleet.flows.distribute import distribute

__all__ = ["dask_task_runner", "distribute_dask", "distribute_on_dask"]


def dask_task_runner(address: str | None = None, *, n_workers: int = 2, threads_per_worker: int = 8,
                     processes: bool = True, **cluster_kwargs: Any) -> DaskTaskRunner:
    """A ``DaskTaskRunner`` on an existing scheduler (``address``) or a temporary LocalCluster.

    ``threads_per_worker`` matters more than ``n_workers`` here: a rollout mostly waits
    (writes, reload commands, TLS handshakes), so several run per process.
    """
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": n_workers, "threads_per_worker": threads_per_worker,
                                          "processes": processes, "dashboard_address": None, **cluster_kwargs})


def distribute_on_dask(address: str | None = None, **runner_kwargs: Any):
    """``distribute`` with its rollouts on Dask (see ``dask_task_runner`` for the arguments)."""
    return distribute.with_options(task_runner=dask_task_runner(address, **runner_kwargs))


# Deployment entrypoint. Same flow name ("distribute"), so runs sit beside the thread-pool
# ones in the UI; give its deployment its own name (e.g. "distribute/dask").
distribute_dask = distribute_on_dask(
    os.environ.get("CERTFLEET_DASK_ADDRESS") or None,
    n_workers=int(os.environ.get("CERTFLEET_DASK_WORKERS", "2")),
)
