"""The midnight incident, reproduced end to end (the acceptance test of the foundation).

Production nginx serves a certificate that expires within a day; a staging directory
already holds a fresh certificate (the renewal that ran "on the wrong machine"). The
inventory says production is a target. One ``lifecycle`` run must get production
serving a new certificate — counted at Pebble, checked by our own TLS handshake — and a
second run must issue nothing and write nothing.
"""

from __future__ import annotations

import ssl

import pytest

from certfleet import pki
from tests.plugins.fleet import served_serial

pytestmark = pytest.mark.services


def test_midnight_incident_fixed_and_second_run_is_a_no_op(prefect_harness, fleet, pebble, issued_since):
    from certfleet.flows.lifecycle import lifecycle

    cafile = fleet["roots"]
    # Before: production serves the certificate that dies tonight (not from Pebble).
    with pytest.raises(ssl.SSLCertVerificationError):
        served_serial(fleet["port"], "shop.test", cafile)

    state = lifecycle(inventory=str(fleet["inventory"]), verify_deadline=20, return_state=True)
    assert state.is_completed(), state.message

    issued = issued_since()
    assert len(issued) == 1, f"Pebble issued {issued}"
    new_serial = issued[0]
    assert served_serial(fleet["port"], "shop.test", cafile) == new_serial
    assert served_serial(fleet["port"], "www.shop.test", cafile) == new_serial
    assert fleet["store"].current("shop").serial == new_serial
    # Staging was never a target: untouched.
    assert pki.serial_hex(pki.load_certs((fleet["staging"] / "shop.pem").read_bytes())[0]) != new_serial

    files = [fleet["prod"] / "shop.pem", fleet["prod"] / "shop.key"]
    mtimes = [f.stat().st_mtime_ns for f in files]
    reloads = fleet["nginx"].reload_count
    assert reloads >= 1

    state = lifecycle(inventory=str(fleet["inventory"]), verify_deadline=20, return_state=True)
    assert state.is_completed(), state.message
    assert issued_since() == [new_serial], "the second run must not issue"
    assert [f.stat().st_mtime_ns for f in files] == mtimes, "the second run must not write"
    assert fleet["nginx"].reload_count == reloads, "the second run must not reload"
    assert served_serial(fleet["port"], "shop.test", cafile) == new_serial
    assert (fleet["prod"] / "shop.key").stat().st_mode & 0o777 == 0o600


def test_run_fails_and_names_the_endpoint_that_does_not_verify(prefect_harness, fleet, pebble, tmp_path):
    """A target that reloads nothing (wrong machine!) leaves the endpoint on the old cert."""
    from certfleet.flows.lifecycle import lifecycle

    inv = fleet["inventory"]
    # Point the target somewhere nginx does not read: the renewal "lands on staging".
    inv.write_text(inv.read_text().replace("prod/shop.pem", "elsewhere/shop.pem").replace("prod/shop.key", "elsewhere/shop.key"))
    state = lifecycle(inventory=str(inv), verify_deadline=1, return_state=True)
    assert state.is_failed()
    assert f"shop.test@127.0.0.1:{fleet['port']}" in state.message
    assert fleet["old_serial"] in state.message
