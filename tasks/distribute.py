"""Distribution tasks: one certificate serial onto one target. Thin: the work is core."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from certfleet.blocks import registry
from certfleet import distribution
from certfleet.models import Receipt
from certfleet.tasks.common import load_inventory, not_permanent, roots_for, store_for


def hostnames_for(inv, name: str) -> tuple[str, ...]:
    spec = inv.certificate(name)
    return tuple(dict.fromkeys(e.sni for e in spec.endpoint_list()))


@task(name="rollout", cache_policy=NO_CACHE, persist_result=False, retries=2,
      retry_delay_seconds=exponential_backoff(backoff_factor=1), retry_jitter_factor=0.5,
      retry_condition_fn=not_permanent,
      task_run_name="rollout {name}@{serial} → {target}")
def rollout_to_target(inventory_path: str, name: str, serial: str, target: str,
                      verify_deadline: float = 60.0) -> Receipt:
    """Deploy, verify the endpoints this target feeds, roll back if they do not verify."""
    inv = load_inventory(inventory_path)
    block = registry.target(inv, target)
    return distribution.rollout(
        name, serial, target, block, store_for(inv),
        hostnames=hostnames_for(inv, name), roots=roots_for(inv, name),
        endpoints=inv.certificate(name).endpoint_list(target), verify_deadline=verify_deadline,
        accepted_key_types=getattr(block, "accepted_key_types", None))


@task(name="find targets already current", cache_policy=NO_CACHE, persist_result=False)
def already_current(inventory_path: str, name: str, serial: str, targets: list[str]) -> list[str]:
    """The targets that hold ``serial`` *and* whose endpoints serve it, checked in bulk.

    A re-run must cost little: for these nothing would be written, so they get no
    rollout task run (the flow reports them as already current). Anything doubtful — a
    target that cannot be read, an endpoint that does not verify at the first probe —
    is left out, and the flow gives it a full rollout task (which retries and explains).
    """
    from concurrent.futures import ThreadPoolExecutor

    from certfleet.blocks.targets.file import FileTarget
    from certfleet.verification import verify

    inv = load_inventory(inventory_path)
    spec = inv.certificate(name)
    endpoints = {t: spec.endpoint_list(t) for t in targets}
    roots = roots_for(inv, name)

    def block(target: str):
        try:
            return registry.target(inv, target)
        except Exception:  # noqa: BLE001 - the rollout task will say what is wrong
            return None

    def holds(target_block) -> bool:
        try:
            return target_block is not None and target_block.current() == serial
        except Exception:  # noqa: BLE001 - the rollout task will say what is wrong
            return False

    # Inline configurations are built in line; saved blocks are loaded from the Prefect
    # API, so side by side. Reading a local file is cheaper in line than handed to a
    # thread (the parse holds the GIL); remote targets (S3, SSH, Kubernetes, ...) are
    # asked side by side.
    saved = [t for t in targets if "block" in inv.targets[t]]
    with ThreadPoolExecutor(max_workers=16) as pool:
        blocks = dict(zip(saved, pool.map(block, saved)))
        blocks.update((t, block(t)) for t in targets if t not in blocks)
        remote = [t for t, b in blocks.items() if not isinstance(b, FileTarget)]
        held = dict(zip(remote, pool.map(holds, (blocks[t] for t in remote))))
    held.update((t, holds(b)) for t, b in blocks.items() if isinstance(b, FileTarget))
    holding = [t for t in targets if held[t]]
    # Only endpoints of targets that hold the serial are probed: a first run (nobody
    # holds it yet) spends no handshakes here.
    flat = list(dict.fromkeys(e for t in holding for e in endpoints[t]))
    served = {v.endpoint: v.ok for v in verify(flat, serial, roots=roots, deadline=0)} if flat else {}
    return [t for t in holding if all(served.get(e, False) for e in endpoints[t])]
