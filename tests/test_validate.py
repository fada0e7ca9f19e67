"""`certfleet validate` finds what would fail at run time: one line per problem, exit 2.

Each case is what a new user ran into (issue 11): the CLI is called in-process, as a
user would, and the test reads what it printed on stderr.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from certfleet.cli import main

BASE = """\
store: {path: store}
issuers:
  ca: {kind: local-ca, directory: ca}
"""


def _write(tmp_path: Path, text: str, name: str = "inventory.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _validate(path: Path, capsys) -> tuple[int, list[str]]:
    rc = main(["validate", "-i", str(path)])
    err = capsys.readouterr().err
    return rc, [line for line in err.splitlines() if line.strip()]


def test_duplicate_yaml_key_is_refused_with_its_line(tmp_path, capsys):
    (tmp_path / "tls").mkdir()
    inv = _write(tmp_path, BASE + """\
targets:
  web-1: {kind: file, fullchain_path: tls/a.pem, key_path: tls/a.key}
  web-1: {kind: file, fullchain_path: tls/b.pem, key_path: tls/b.key}
certificates:
  - {name: shop, domains: [shop.test], issuer: ca, targets: [web-1]}
""")
    rc, lines = _validate(inv, capsys)
    assert rc == 2
    assert len(lines) == 1, lines
    assert "line 6: duplicate key 'web-1' (first at line 5)" in lines[0]


def test_ipv6_endpoint_without_brackets_gets_a_hint(tmp_path, capsys):
    inv = _write(tmp_path, BASE + """\
certificates:
  - {name: shop, domains: [shop.test], issuer: ca, endpoints: ["::1:443"]}
""")
    rc, lines = _validate(inv, capsys)
    assert rc == 2 and len(lines) == 1, lines
    assert "'[::1]:443'" in lines[0] and "certificates[0].endpoints" in lines[0]


def test_unset_env_in_an_issuers_solver_is_reported_under_issuers(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CERTFLEET_TEST_UNSET_TSIG", raising=False)
    inv = _write(tmp_path, """\
store: {path: store}
issuers:
  le:
    kind: acme
    directory_url: https://acme.invalid/directory
    email: ops@shop.test
    solver:
      kind: rfc2136
      nameserver: 127.0.0.1
      tsig_name: acme-key
      tsig_secret: {env: CERTFLEET_TEST_UNSET_TSIG}
certificates:
  - {name: shop, domains: [shop.test], issuer: le}
""")
    rc, lines = _validate(inv, capsys)
    assert rc == 2 and len(lines) == 1, lines
    assert "issuers.le.solver.tsig_secret: environment variable CERTFLEET_TEST_UNSET_TSIG is not set" in lines[0]
    assert "solvers." not in lines[0]


def test_error_prefix_is_the_path_given_with_i(tmp_path, capsys):
    sub = tmp_path / "fleet-a"
    sub.mkdir()
    inv = _write(sub, BASE + "certificates:\n  - {name: shop, domains: ['exa mple.com'], issuer: ca}\n")
    rc, lines = _validate(inv, capsys)
    assert rc == 2
    assert lines[0].startswith(f"certfleet: {inv}: certificates[0].domains[0]:"), lines


def test_store_section_gets_the_inline_secret_check(tmp_path, capsys):
    inv = _write(tmp_path, """\
store: {kind: s3, bucket: b, secret_access_key: AKIAxxxxINLINE}
issuers:
  ca: {kind: local-ca, directory: ca}
certificates:
  - {name: shop, domains: [shop.test], issuer: ca}
""")
    rc, lines = _validate(inv, capsys)
    assert rc == 2 and len(lines) == 1, lines
    assert "store.secret_access_key: secrets are never inline" in lines[0]
    assert "AKIAxxxxINLINE" not in lines[0]


def test_rotate_reason_choices_are_the_flows(capsys):
    from typing import get_args

    from certfleet import emergency
    from certfleet.flows.emergency import emergency_rotation

    # One source of truth: the flow's parameter type is the core's Literal.
    import typing

    flow_reason = typing.get_type_hints(emergency_rotation.fn)["reason"]
    assert get_args(flow_reason) == emergency.ACCEPTED_REASONS
    # A reason the flow would refuse once started is refused by the CLI up front, exit 2.
    rc = main(["rotate", "--emergency", "shop", "--reason", "cACompromise", "-i", "does-not-exist.yaml"])
    err = capsys.readouterr().err
    assert rc == 2 and "invalid choice: 'cACompromise'" in err
    for reason in emergency.ACCEPTED_REASONS:
        assert emergency.reason_code(reason) == emergency.REASONS[reason]
    with pytest.raises(emergency.SelectionError):
        emergency.reason_code("cACompromise")
    assert "cACompromise" not in (Path(__file__).parent.parent / "docs" / "cli.md").read_text()


def test_missing_trust_bundle_and_target_directory_fail_validate(tmp_path, capsys):
    inv = _write(tmp_path, BASE + """\
trust_bundle: nowhere/roots.pem
targets:
  web-1: {kind: file, fullchain_path: no-such-dir/a.pem, key_path: no-such-dir/a.key}
certificates:
  - {name: shop, domains: [shop.test], issuer: ca, targets: [web-1]}
""")
    rc, lines = _validate(inv, capsys)
    assert rc == 2
    assert any(line.endswith(f"trust_bundle: {tmp_path}/nowhere/roots.pem does not exist") for line in lines), lines
    assert any(f"targets.web-1.fullchain_path: directory {tmp_path}/no-such-dir does not exist" in line for line in lines), lines
    assert len(lines) == 3, lines  # one line each (fullchain_path, key_path, trust_bundle)


def test_register_blocks_with_the_api_unreachable_is_one_line(monkeypatch, capsys):
    import socket

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as s:  # a real closed port: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
            rc = main(["init", "--register-blocks"])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == 2, captured
    assert len(lines) == 1 and "cannot reach the Prefect API" in lines[0] and str(port) in lines[0], lines
    assert "Traceback" not in captured.err


def test_scaffold_with_its_endpoint_switched_on_passes_validate_and_status(tmp_path, capsys):
    from certfleet_dev.ports import free_port

    target = tmp_path / "fleet"
    assert main(["init", str(target)]) == 0
    path = target / "inventory.yaml"
    port = free_port()  # nothing listens: the endpoint row is UNREACHABLE, not a usage error
    text = path.read_text().replace('# endpoints: ["203.0.113.10:443", "www.example.internal@203.0.113.10:443"]',
                                    f'endpoints: ["127.0.0.1:{port}"]')
    assert f"127.0.0.1:{port}" in text
    path.write_text(text)
    capsys.readouterr()
    assert main(["validate", "-i", str(path)]) == 0, capsys.readouterr().err
    rc = main(["status", "-i", str(path), "--json", "--no-discovery"])
    captured = capsys.readouterr()
    assert rc == 1, captured  # attention (not issued / unreachable), never 2
    assert "trust bundle" not in captured.err
