"""Renewal's bad days: a CA that is down, a budget that is spent, a contact the CA refuses.

Each gets a clear error naming the certificate, and leaves the current certificate
untouched (nothing stored, nothing deployed).
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from certfleet_dev.ports import free_port
from certfleet.store import LocalStore

pytestmark = pytest.mark.services


def write_inventory(tmp_path, pebble, *, directory_url=None, email="ops@shop.test", rate_limits=""):
    inv = tmp_path / "inventory.yaml"
    inv.write_text(textwrap.dedent(f"""
        store: {{path: store}}
        issuers:
          pebble:
            kind: acme
            directory_url: {directory_url or pebble.directory_url}
            email: "{email}"
            ca_bundle: {pebble.ca_cert_path}
            solver: {{kind: challtestsrv, url: "{pebble.challtestsrv_url}"}}
            rate_limits: {{{rate_limits}}}
        certificates:
          - {{name: shop, domains: [shop.test, www.shop.test], issuer: pebble}}
        """))
    return inv


def due_version(tmp_path, local_ca):
    """A current version in the store that is inside its renewal window."""
    now = datetime.now(timezone.utc)
    chain, key = local_ca.issue(["shop.test", "www.shop.test"], not_before=now - timedelta(days=80),
                                not_after=now + timedelta(days=10))
    return LocalStore(tmp_path / "store").put("shop", chain, key, issuer="pebble")


def test_ca_down_fails_after_retries_and_keeps_the_current_certificate(prefect_harness, tmp_path, pebble, local_ca):
    from certfleet.flows.renew import renew

    current = due_version(tmp_path, local_ca)
    inv = write_inventory(tmp_path, pebble, directory_url=f"https://127.0.0.1:{free_port()}/dir")
    state = renew(inventory=str(inv), return_state=True)
    assert state.is_failed()
    assert "shop" in state.message and "acme issuer" in state.message
    store = LocalStore(tmp_path / "store")
    assert store.current("shop").serial == current.serial
    assert [v.serial for v in store.versions("shop")] == [current.serial]


def test_budget_exhausted_stops_before_ordering(prefect_harness, tmp_path, pebble, issued_since):
    from certfleet.flows.renew import renew

    # Two per exact name set; one of them is held back for emergency rotation.
    inv = write_inventory(tmp_path, pebble, rate_limits="certificates_per_name_set: 2")
    first = renew(inventory=str(inv), return_state=True)
    assert first.is_completed(), first.message
    assert len(issued_since()) == 1
    second = renew(inventory=str(inv), force=True, return_state=True)
    assert second.is_failed()
    assert "rate limit 'new certificates per exact set of names'" in second.message
    assert "held back for emergency rotation" in second.message
    assert len(issued_since()) == 1, "no order may reach the CA once the budget is spent"


def test_invalid_contact_email_is_a_clear_permanent_error(prefect_harness, tmp_path, pebble, issued_since):
    from certfleet.flows.renew import renew

    inv = write_inventory(tmp_path, pebble, email="not an email")
    state = renew(inventory=str(inv), return_state=True)
    assert state.is_failed()
    assert "shop" in state.message and "invalidContact" in state.message
    assert issued_since() == []
