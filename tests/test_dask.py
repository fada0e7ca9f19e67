"""The distribution fan-out on Dask: the same distribute flow, rollouts on Dask workers.

A real ``distributed.LocalCluster`` (two worker processes) stands for a Dask cluster on
other machines: the flow connects to its scheduler address, as it would to
``tcp://scheduler:8786``. Every rollout must run on a Dask worker (the task stream says
where), every file target must end up holding the store's serial with the matching key,
and a second run must write nothing.
"""

from __future__ import annotations

import textwrap

import pytest
from cryptography.hazmat.primitives import serialization

from certfleet import pki
from certfleet.store import LocalStore

pytestmark = pytest.mark.services

TARGETS = {"api": ["api-1", "api-2", "api-3"], "intranet": ["intra-1", "intra-2"]}


@pytest.fixture(scope="module")
def dask_cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=4, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield cluster, client


@pytest.fixture
def file_fleet(tmp_path, local_ca):
    """Two certificates in a local-CA store, five file targets that hold nothing yet."""
    store = LocalStore(tmp_path / "store")
    serials = {}
    for name, domains in (("api", ["api.corp.test"]), ("intranet", ["intranet.corp.test", "wiki.corp.test"])):
        chain, key = local_ca.issue(domains)
        serials[name] = store.put(name, chain, key, issuer="local").serial
    targets, certificates = [], []
    for name, names in TARGETS.items():
        for t in names:
            (tmp_path / t).mkdir()
            targets.append(f"  {t}: {{kind: file, fullchain_path: {t}/fullchain.pem, key_path: {t}/privkey.pem}}")
        domains = ", ".join(["api.corp.test"] if name == "api" else ["intranet.corp.test", "wiki.corp.test"])
        certificates.append(f"  - {{name: {name}, domains: [{domains}], issuer: internal, targets: [{', '.join(names)}]}}")
    inv = tmp_path / "inventory.yaml"
    (tmp_path / "roots.pem").write_bytes(local_ca.root_pem)  # preflight validates the chain to it
    inv.write_text(textwrap.dedent(f"""\
        store: {{path: store}}
        trust_bundle: roots.pem
        issuers:
          internal: {{kind: local-ca, directory: {local_ca.directory}}}
        """) + "targets:\n" + "\n".join(targets) + "\ncertificates:\n" + "\n".join(certificates) + "\n")
    return {"inventory": inv, "dir": tmp_path, "serials": serials, "store": store}


def test_rollouts_fan_out_on_dask_workers_and_land_on_every_target(prefect_harness, dask_cluster, file_fleet):
    from distributed import get_task_stream

    from certfleet.flows.distribute_dask import distribute_on_dask

    cluster, client = dask_cluster
    flow = distribute_on_dask(cluster.scheduler_address)
    with get_task_stream(client) as stream:
        state = flow(inventory=str(file_fleet["inventory"]), verify_deadline=5, return_state=True)
    assert state.is_completed(), state.message
    assert state.message == "deployed 5, already current 0"

    # Every rollout ran on one of the cluster's worker processes, none in this process.
    ran = [t for t in stream.data if "rollout" in str(t["key"])]
    assert len(ran) == 5, [t["key"] for t in stream.data]
    assert {t["worker"] for t in ran} <= set(cluster.scheduler_info["workers"])

    for name, names in TARGETS.items():
        stored = file_fleet["store"].current(name)
        assert stored.serial == file_fleet["serials"][name]
        for t in names:
            chain = (file_fleet["dir"] / t / "fullchain.pem").read_bytes()
            leaf = pki.load_certs(chain)[0]
            assert pki.serial_hex(leaf) == stored.serial, f"{t} holds the wrong certificate"
            key_file = file_fleet["dir"] / t / "privkey.pem"
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            assert key.public_key().public_numbers() == leaf.public_key().public_numbers(), f"{t}: key does not match"
            assert key_file.stat().st_mode & 0o777 == 0o600

    # Idempotent on Dask too: nothing is written the second time.
    files = sorted(file_fleet["dir"].glob("*/fullchain.pem"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    state = flow(inventory=str(file_fleet["inventory"]), verify_deadline=5, return_state=True)
    assert state.is_completed(), state.message
    assert state.message.startswith("deployed 0, already current 5")
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_deployment_entrypoint_is_the_same_flow_on_a_dask_runner():
    """``flows/distribute_dask.py:distribute_dask`` is distribute, only the runner differs."""
    from prefect_dask import DaskTaskRunner

    from certfleet.flows.distribute import distribute
    from certfleet.flows.distribute_dask import distribute_dask

    assert distribute_dask.name == distribute.name
    assert distribute_dask.fn is distribute.fn
    assert isinstance(distribute_dask.task_runner, DaskTaskRunner)
    assert distribute_dask.parameters == distribute.parameters
