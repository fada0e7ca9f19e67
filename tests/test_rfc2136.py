"""The RFC 2136 solver against a real Knot server (tests/plugins/knot.py).

Each test uses its own record names (uuid labels), so the session-scoped
server can be shared. Knot may apply an update up to ~1 s after it answers,
so reads that follow a cleanup poll instead of reading once.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
import uuid

import dns.message
import dns.query
import dns.rcode
import dns.tsig
import dns.update
import pytest

from certfleet.blocks.solvers import rfc2136
from certfleet.blocks.solvers.rfc2136 import Rfc2136Error, Rfc2136Solver, challenge_name
from certfleet.contracts import DnsSolver, SolverTimeout
from certfleet.dns_check import PropagationTimeout, find_zone, wait_for_txt

pytestmark = pytest.mark.services


def make_solver(knot, **overrides) -> Rfc2136Solver:
    fields = dict(
        nameserver=knot.host,
        port=knot.port,
        tsig_name=knot.tsig_name,
        tsig_secret=knot.tsig_secret,
        tsig_algorithm=knot.tsig_algorithm,
        propagation_timeout=5,
    )
    return Rfc2136Solver(**{**fields, **overrides})


def unique(zone: str = "shop.test") -> str:
    return f"t{uuid.uuid4().hex[:10]}.{zone}"


def served_txt(knot, domain: str) -> list[str]:
    """Ask the server directly, with our own query, what it serves now."""
    query = dns.message.make_query(challenge_name(domain) + ".", "TXT")
    reply = dns.query.tcp(query, knot.host, port=knot.port, timeout=2)
    return sorted(b"".join(r.strings).decode() for rrset in reply.answer for r in rrset)


def eventually(check, timeout: float = 3.0):
    """Poll ``check`` until truthy: Knot applies some updates a moment later."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return result


def test_solver_meets_the_contract(knot):
    solver = make_solver(knot)
    assert isinstance(solver, DnsSolver)
    assert isinstance(solver, SolverTimeout)
    assert solver.timeout() == (5, 0.05)
    assert all(f.description for f in Rfc2136Solver.model_fields.values())
    assert Rfc2136Solver.get_block_type_name() == "certfleet rfc2136 solver"


def test_present_makes_txt_visible_at_the_server(knot):
    domain = unique()
    make_solver(knot).present(domain, "token-1")
    assert served_txt(knot, domain) == ["token-1"]  # present returns only once served


def test_cleanup_removes_only_that_value(knot):
    base = unique()
    solver = make_solver(knot)
    solver.present(base, "base-value")
    solver.present(f"*.{base}", "wildcard-value")  # same record name as the base
    assert served_txt(knot, base) == ["base-value", "wildcard-value"]

    solver.cleanup(f"*.{base}", "wildcard-value")
    eventually(lambda: served_txt(knot, base) == ["base-value"])

    solver.cleanup(base, "base-value")
    eventually(lambda: served_txt(knot, base) == [])


def test_zone_is_discovered_when_not_configured(knot):
    domain = unique("example.test")
    assert find_zone(challenge_name(domain), [(knot.host, knot.port)]) == "example.test"
    make_solver(knot, zone=None).present(domain, "discovered")
    assert served_txt(knot, domain) == ["discovered"]


def test_trailing_dot_algorithm_spelling_is_accepted(knot):
    domain = unique()
    make_solver(knot, tsig_algorithm="hmac-sha256.").present(domain, "dotted")
    assert served_txt(knot, domain) == ["dotted"]


def test_unknown_algorithm_is_rejected_at_configuration(knot):
    with pytest.raises(ValueError, match="unknown TSIG algorithm"):
        make_solver(knot, tsig_algorithm="hmac-sha257")


def test_wrong_tsig_secret_is_a_clear_error_and_writes_nothing(knot, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = base64.b64encode(os.urandom(32)).decode()
    solver = make_solver(knot, tsig_secret=wrong)
    domain = unique()
    with pytest.raises(Rfc2136Error) as err:
        solver.present(domain, "never")
    message = str(err.value)
    assert message.startswith(f"rfc2136 solver '{knot.host}:{knot.port}':")
    assert "BADSIG" in message and "acme-key" in message
    for secret in (wrong, knot.tsig_secret):
        assert secret not in message and secret not in caplog.text and secret not in repr(solver)
    assert served_txt(knot, domain) == []


def test_unknown_tsig_key_name_is_a_clear_error(knot):
    with pytest.raises(Rfc2136Error, match=r"^rfc2136 solver '.*': .*key 'nobody'.*BADKEY"):
        make_solver(knot, tsig_name="nobody").present(unique(), "never")


def test_secret_that_is_not_base64_is_named_not_shown(knot):
    with pytest.raises(Rfc2136Error, match="not valid base64") as err:
        make_solver(knot, tsig_secret="!!not-base64!!").present(unique(), "never")
    assert "!!not-base64!!" not in str(err.value)


def test_domain_outside_configured_zone_is_refused_before_any_update(knot):
    solver = make_solver(knot, zone="shop.test")
    outside = unique("example.test")
    assert solver.controls(unique()) is True
    assert solver.controls("*.shop.test") is True
    assert solver.controls(outside) is False
    assert solver.controls("evilshop.test") is False  # suffix match is on labels
    with pytest.raises(Rfc2136Error, match=r"^rfc2136 solver '.*': .*outside the configured zone 'shop.test'"):
        solver.present(outside, "never")
    assert served_txt(knot, outside) == []


def test_domain_in_no_served_zone_is_refused(knot):
    solver = make_solver(knot, zone=None)
    assert solver.controls("www.unknown.test") is False
    with pytest.raises(Rfc2136Error, match=r"^rfc2136 solver '.*': unknown zone for 'www.unknown.test'"):
        solver.present("www.unknown.test", "never")


def test_configured_zone_the_server_does_not_serve_is_notauth(knot):
    solver = make_solver(knot, zone="unknown.test")
    with pytest.raises(Rfc2136Error, match=r"not authoritative for zone 'unknown.test'.*\(NOTAUTH\)"):
        solver.present("www.unknown.test", "never")


def test_refused_reply_is_explained(knot):
    """Knot answers REFUSED when its ACL denies the key; our fixture allows it, so fake the reply."""
    solver = make_solver(knot)
    reply = dns.message.make_response(dns.update.UpdateMessage("shop.test"))
    reply.set_rcode(dns.rcode.REFUSED)
    with pytest.raises(Rfc2136Error, match=r"^rfc2136 solver '.*': add TXT x: update refused .*ACL.*\(REFUSED\)"):
        solver._check_rcode(reply, "add TXT x", "shop.test")


def test_unreachable_server_is_a_clear_error(knot):
    solver = make_solver(knot, port=1, zone="shop.test")
    with pytest.raises(Rfc2136Error, match=r"^rfc2136 solver '127.0.0.1:1': add TXT .*update failed"):
        solver.present(unique(), "never")


def test_propagation_check_polls_until_the_record_appears(knot):
    """The record is written 0.3 s after the check starts: a single query would miss it."""
    domain = unique()
    writer = threading.Timer(0.3, lambda: make_solver(knot).present(domain, "late"))
    started = time.monotonic()
    writer.start()
    try:
        wait_for_txt(challenge_name(domain), "late", [(knot.host, knot.port)], timeout=5)
    finally:
        writer.join()
    assert 0.3 <= time.monotonic() - started < 3


def test_propagation_check_times_out_naming_record_and_server(knot):
    domain = unique()
    make_solver(knot).present(domain, "written")
    started = time.monotonic()
    with pytest.raises(PropagationTimeout) as err:
        wait_for_txt(challenge_name(domain), "never-written", [(knot.host, knot.port)], timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 2
    assert challenge_name(domain) in str(err.value)
    assert f"{knot.host}:{knot.port} (1 other value(s))" in str(err.value)


def test_solver_reports_propagation_timeout_clearly(knot, monkeypatch):
    """An update the server accepts but never serves (e.g. a hidden primary) ends in a named error."""
    real_wait = rfc2136.wait_for_txt
    monkeypatch.setattr(
        rfc2136, "wait_for_txt", lambda fqdn, value, servers, timeout: real_wait(fqdn, "other", servers, timeout)
    )
    with pytest.raises(Rfc2136Error, match=r"^rfc2136 solver '.*': update accepted but TXT _acme-challenge\..* not visible after 0.3s"):
        make_solver(knot, propagation_timeout=0.3).present(unique(), "value")
