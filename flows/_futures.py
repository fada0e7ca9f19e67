"""Waiting on mapped futures without letting one failure stop the others."""

from __future__ import annotations


def settle(futures: dict) -> tuple[dict, dict]:
    """Wait for every future; return ({key: result}, {key: error sentence})."""
    done, failed = {}, {}
    for key, fut in futures.items():
        fut.wait()
        if fut.state.is_completed():
            done[key] = fut.result()
        else:
            failed[key] = error_of(fut)
    return done, failed


def error_of(fut) -> str:
    try:
        fut.result()
    except Exception as exc:  # noqa: BLE001 - reported, not handled
        return str(exc) or type(exc).__name__
    return f"ended {fut.state.type.value}"
