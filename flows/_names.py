"""Run names that say what a run does, and how long each flow may run.

``flow_run_name`` callables read the run's parameters: ``renew-shop`` for one
certificate, ``renew-3-certs`` for three, ``renew-all`` for the whole inventory;
``rotate-keyCompromise-3-certs`` for an emergency rotation; ``dry-run-`` in front of a
rehearsal. A run list in the UI then reads like a log of what happened.

TIMEOUTS are each flow's ``timeout_seconds``: a run still going after that ends
Failed (TimedOut) instead of hanging, which also frees its deployment's concurrency
slot for the next scheduled run. The automations' "running longer than expected"
alerts (deployments/prefect.yaml) fire well before these.
"""

from __future__ import annotations

TIMEOUTS = {
    "lifecycle": 4 * 3600,
    "renew": 2 * 3600,
    "distribute": 2 * 3600,
    "verify": 1800,
    "monitor": 600,            # < its 15-minute schedule: a stuck monitor never overlaps the next
    "emergency-rotation": 2 * 3600,
    "notify": 300,
}


def _subject(params: dict) -> str:
    names = list(params.get("certificates") or ())
    extra = [params.get(k) for k in ("sharing_key_with", "issuer", "target") if params.get(k)]
    if len(names) == 1 and not extra:
        return names[0]
    if names and not extra:
        return f"{len(names)}-certs"
    if not names and not extra:
        return "all"
    return "selected"


def run_name(prefix: str):
    """A ``flow_run_name`` callable: ``<prefix>-<what>`` from the run's parameters."""

    def name() -> str:
        from prefect.runtime import flow_run

        params = dict(flow_run.parameters or {})
        dry = "dry-run-" if params.get("dry_run") else ""
        return f"{dry}{prefix}-{_subject(params)}"

    name.__name__ = f"{prefix}_run_name"
    return name


def rotation_name() -> str:
    """``rotate-<reason>-<n>-certs`` (or ``-<name>`` for one certificate)."""
    from prefect.runtime import flow_run

    params = dict(flow_run.parameters or {})
    dry = "dry-run-" if params.get("dry_run") else ""
    return f"{dry}rotate-{params.get('reason') or 'keyCompromise'}-{_subject(params)}"
