"""The ``certfleet`` command as a user (or cron) meets it: exit codes, messages, files.

Run in-process through ``main([...])``; stdout/stderr captured by pytest. Only the
flow-running test needs Prefect (the session harness); ``status`` needs only nginx.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from certfleet.cli import main
from certfleet.store import LocalStore


def write_inventory(tmp_path: Path, local_ca, certificates: str, extra: str = "") -> Path:
    (tmp_path / "roots.pem").write_bytes(local_ca.root_pem)
    inv = tmp_path / "inventory.yaml"
    inv.write_text(textwrap.dedent("""\
        store: {path: store}
        trust_bundle: roots.pem
        issuers:
          internal: {kind: local-ca, directory: %s}
        """) % local_ca.directory + extra + "certificates:\n" + textwrap.indent(textwrap.dedent(certificates), "  "))
    return inv


# -- usage --------------------------------------------------------------------------

def test_help_and_usage_errors(capsys):
    assert main(["--help"]) == 0
    assert "Exit codes" in capsys.readouterr().out
    assert main(["import", "--help"]) == 0
    assert "--from-endpoint" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    # Rotation is refused unless asked for in so many words; nothing is read or run.
    assert main(["rotate", "shop", "-i", "does-not-exist.yaml"]) == 2
    assert "--emergency" in capsys.readouterr().err


def test_validate_names_file_path_and_field(tmp_path, capsys):
    bad = tmp_path / "inventory.yaml"
    bad.write_text("issuers: {ca: {kind: local-ca, directory: ca}}\n"
                   "certificates:\n  - {name: shop, domains: ['exa mple.com'], issuer: ca}\n")
    assert main(["validate", "-i", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "inventory.yaml: certificates[0].domains[0]: 'exa mple.com' is not a valid DNS name" in err
    assert main(["validate", "-i", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read inventory" in capsys.readouterr().err


def test_init_writes_a_valid_inventory_and_never_overwrites(tmp_path, capsys):
    target = tmp_path / "fleet"
    assert main(["init", str(target)]) == 0
    path = target / "inventory.yaml"
    text = path.read_text()
    assert "kind: local-ca" in text and text.count("#") > 10  # commented, to be read
    assert main(["validate", "-i", str(path)]) == 0
    path.write_text(text + "# edited by hand\n")
    assert main(["init", str(target)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert path.read_text().endswith("# edited by hand\n")


# -- import -------------------------------------------------------------------------

@pytest.fixture
def adoptable(tmp_path, local_ca, tls_files):
    inv = write_inventory(tmp_path, local_ca, """\
        - {name: shop, domains: [shop.test, www.shop.test], issuer: internal}
        """)
    return inv, LocalStore(tmp_path / "store")


def test_import_adopts_a_matching_pair(adoptable, tls_files, capsys):
    inv, store = adoptable
    live = tls_files("shop", ["shop.test", "www.shop.test"])
    rc = main(["import", "-i", str(inv), "--name", "shop", "--cert", str(live.cert_path), "--key", str(live.key_path), "--json"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["imported"][0]["serial"] == live.serial
    assert store.current("shop").serial == live.serial
    assert store.load_key("shop", live.serial) == live.key_path.read_bytes()


def test_import_refuses_a_key_of_another_certificate(adoptable, tls_files, capsys):
    inv, store = adoptable
    live, other = tls_files("shop", ["shop.test", "www.shop.test"]), tls_files("other", ["shop.test", "www.shop.test"])
    rc = main(["import", "-i", str(inv), "--name", "shop", "--cert", str(live.cert_path), "--key", str(other.key_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "does not match certificate" in err and live.serial in err and "nothing written" in err
    assert store.current("shop") is None and store.versions("shop") == []


def test_import_refuses_a_certificate_that_does_not_cover_the_inventory_names(adoptable, tls_files, capsys):
    inv, store = adoptable
    narrow = tls_files("shop", ["shop.test"])
    rc = main(["import", "-i", str(inv), "--name", "shop", "--cert", str(narrow.cert_path), "--key", str(narrow.key_path)])
    assert rc == 2
    assert "does not cover www.shop.test" in capsys.readouterr().err
    assert store.versions("shop") == []
    # A name the inventory does not know, and the impossible --from-endpoint: both 2.
    assert main(["import", "-i", str(inv), "--name", "nope", "--cert", str(narrow.cert_path), "--key", str(narrow.key_path)]) == 2
    assert "no certificate named 'nope'" in capsys.readouterr().err
    assert main(["import", "-i", str(inv), "--from-endpoint", "shop.test:443"]) == 2
    assert "never its private key" in capsys.readouterr().err


# -- status against real nginx --------------------------------------------------------

@pytest.mark.services
def test_status_json_shows_served_serials_and_exits_1_on_drift(tmp_path, local_ca, tls_files, nginx_factory, capsys):
    from certfleet_dev.nginx import Vhost
    from certfleet_dev.ports import free_port

    store = LocalStore(tmp_path / "store")
    good = tls_files("good", ["good.shop.test"])
    issued_b, served_a = tls_files("b", ["drift.shop.test"]), tls_files("a", ["drift.shop.test"])
    store.put("good", good.fullchain_pem, good.key_path.read_bytes())
    store.put("drift", issued_b.fullchain_pem, issued_b.key_path.read_bytes())  # B issued ...
    port = free_port()
    nginx_factory([Vhost("good", ["good.shop.test"], port, good.cert_path, good.key_path, default_server=True),
                   Vhost("drift", ["drift.shop.test"], port, served_a.cert_path, served_a.key_path)])  # ... A served
    inv = write_inventory(tmp_path, local_ca, f"""\
        - {{name: good, domains: [good.shop.test], issuer: internal, endpoints: ["127.0.0.1:{port}"]}}
        - {{name: drift, domains: [drift.shop.test], issuer: internal, endpoints: ["127.0.0.1:{port}"]}}
        """)

    assert main(["status", "-i", str(inv), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    rows = {r["certificate"]: r for r in out["rows"]}
    assert rows["drift"]["status"] == "DRIFT" and rows["drift"]["serving"] == served_a.serial
    assert rows["drift"]["issued"] == issued_b.serial and issued_b.serial in rows["drift"]["reason"]
    assert rows["good"]["status"] == "OK" and rows["good"]["serving"] == good.serial
    assert out["ok"] is False

    assert main(["status", "good", "-i", str(inv), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["status", "good", "-i", str(inv)]) == 0  # the table, for people
    table = capsys.readouterr().out
    assert "good.shop.test@127.0.0.1" in table and "\033[" not in table  # no colour into a pipe


# -- a flow command, with Prefect -----------------------------------------------------

@pytest.mark.services
def test_renew_issues_once_then_nothing(prefect_harness, tmp_path, local_ca, capsys):
    inv = write_inventory(tmp_path, local_ca, """\
        - {name: internal-api, domains: [api.internal.test], issuer: internal}
        """)
    assert main(["renew", "internal-api", "-i", str(inv), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    serial = LocalStore(tmp_path / "store").current("internal-api").serial
    assert first["state"] == "COMPLETED" and first["data"]["issued"] == {"internal-api": serial}

    assert main(["renew", "internal-api", "-i", str(inv), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["data"]["issued"] == {} and second["data"]["serials"] == {"internal-api": serial}
    assert [v.serial for v in LocalStore(tmp_path / "store").versions("internal-api")] == [serial]
    # An unknown name is bad input: exit 2 before any flow runs.
    assert main(["renew", "nope", "-i", str(inv)]) == 2
    assert "no certificate named 'nope'" in capsys.readouterr().err


def test_every_block_kind_is_registered():
    from certfleet.blocks import registry
    from certfleet.cli.init import block_classes

    classes = block_classes()
    for kinds in (registry._issuer_kinds(), registry._solver_kinds(), registry._target_kinds(), registry._discovery_kinds()):
        assert set(kinds.values()) <= set(classes)
    slugs = [c.get_block_type_slug() for c in classes]
    assert len(set(slugs)) == len(slugs) and {"certfleet-s3-store", "certfleet-aws-credentials",
                                               "certfleet-secrets-manager-store", "certfleet-slack-notifier"} <= set(slugs)


@pytest.mark.services
def test_register_blocks(prefect_harness, monkeypatch, capsys):
    """Registration itself, on two kinds (each costs ~0.5 s; all of them is ~25)."""
    from prefect.client.orchestration import get_client

    from certfleet.blocks.stores.s3 import S3Store
    from certfleet.blocks.targets.file import FileTarget
    from certfleet import cli

    monkeypatch.setattr(cli.init, "block_classes", lambda: [FileTarget, S3Store])
    assert main(["init", "--register-blocks"]) == 0
    assert "certfleet-file-target" in capsys.readouterr().out
    with get_client(sync_client=True) as client:
        assert client.read_block_type_by_slug("certfleet-file-target").name == "certfleet file target"
        assert client.read_block_type_by_slug("certfleet-aws-credentials")  # nested in S3Store


@pytest.mark.services
def test_status_sorts_by_days_left_and_times_out_a_silent_endpoint(tmp_path, local_ca, tls_files, nginx_factory, capsys):
    """--sort days puts the soonest expiry first; --timeout bounds a server that accepts
    and never answers (a real listening socket); no progress output into a pipe."""
    import socket
    from datetime import datetime, timedelta, timezone

    from certfleet_dev.nginx import Vhost
    from certfleet_dev.ports import free_port

    now = datetime.now(timezone.utc)
    chain, key = local_ca.issue(["soon.shop.test"], not_before=now - timedelta(days=80), not_after=now + timedelta(days=3))
    (tmp_path / "soon.pem").write_bytes(chain)
    (tmp_path / "soon.key").write_bytes(key)
    later = tls_files("later", ["later.shop.test"])
    port = free_port()
    nginx_factory([Vhost("later", ["later.shop.test"], port, later.cert_path, later.key_path, default_server=True),
                   Vhost("soon", ["soon.shop.test"], port, tmp_path / "soon.pem", tmp_path / "soon.key")])
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (the kernel completes the TCP handshake), never speaks TLS
    try:
        inv = write_inventory(tmp_path, local_ca, f"""\
            - {{name: later, domains: [later.shop.test], issuer: internal, endpoints: ["127.0.0.1:{port}"]}}
            - {{name: soon, domains: [soon.shop.test], issuer: internal, endpoints: ["127.0.0.1:{port}"]}}
            - {{name: silent, domains: [silent.shop.test], issuer: internal, endpoints: ["127.0.0.1:{silent.getsockname()[1]}"]}}
            """)
        assert main(["status", "-i", str(inv), "--json", "--sort", "days", "--timeout", "0.5", "--no-targets"]) == 1
        captured = capsys.readouterr()
        rows = json.loads(captured.out)["rows"]
        assert [r["certificate"] for r in rows] == ["soon", "later", "silent"]
        assert rows[0]["days_left"] < 4 < rows[1]["days_left"]
        assert rows[2]["status"] == "UNREACHABLE" and "0.5s" in rows[2]["reason"]
        assert captured.err == ""  # no progress bar in a pipe

        assert main(["status", "-i", str(inv), "--sort", "days", "--timeout", "0.5", "--no-targets"]) == 1
        captured = capsys.readouterr()
        table = captured.out.splitlines()
        assert table[1].startswith("soon") and table[2].startswith("later")
        assert captured.err == "" and "\r" not in captured.out
        assert main(["status", "-i", str(inv), "--timeout", "0"]) == 2
        assert "--timeout must be a positive" in capsys.readouterr().err
    finally:
        silent.close()


def test_json_covers_errors_and_every_command(tmp_path, capsys):
    """Under --json an error is one JSON object on stdout (error, field, exit code);
    commands without a JSON rendering of their own wrap their output."""
    bad = tmp_path / "inventory.yaml"
    bad.write_text("issuers: {ca: {kind: local-ca, directory: ca}}\n"
                   "certificates:\n  - {name: shop, domains: ['exa mple.com'], issuer: ca}\n")
    assert main(["validate", "-i", str(bad), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["exit_code"] == 2
    assert out["field"] == "certificates[0].domains[0]" and "not a valid DNS name" in out["error"]

    assert main(["status", "-i", str(tmp_path / "missing.yaml"), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["exit_code"] == 2 and "cannot read inventory" in out["error"]

    assert main(["status", "--json", "--sort", "sideways"]) == 2  # a usage error, from argparse
    out = json.loads(capsys.readouterr().out)
    assert out["exit_code"] == 2 and "invalid choice" in out["error"]

    assert main(["rotate", "shop", "--json", "-i", str(bad)]) == 2
    assert "--emergency" in json.loads(capsys.readouterr().out)["error"]

    good = tmp_path / "fleet"
    assert main(["init", str(good), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"ok": True, "exit_code": 0, "output": out["output"]} and "wrote" in out["output"][0]
    assert main(["validate", "-i", str(good / "inventory.yaml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output"][0].endswith(": OK")


# -- restore: undo, against Pebble + nginx ------------------------------------------

@pytest.mark.services
def test_restore_puts_a_previous_version_back_and_refuses_revoked_or_expired(prefect_harness, fleet, local_ca, capsys):
    from datetime import datetime, timedelta, timezone

    from tests.plugins.fleet import served_serial

    inv, store, port = str(fleet["inventory"]), fleet["store"], fleet["port"]
    assert main(["run", "-i", inv, "--json"]) == 0, capsys.readouterr()
    first = store.current("shop").serial
    assert main(["renew", "shop", "--force", "-i", inv]) == 0
    assert main(["distribute", "shop", "-i", inv]) == 0
    second = store.current("shop").serial
    assert second != first and served_serial(port, "shop.test", fleet["roots"]) == second
    capsys.readouterr()

    assert main(["restore", "shop", "--serial", first, "-i", inv, "--json"]) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert out["restored"] == first and out["previous"] == second and out["ok"] is True
    assert store.current("shop").serial == first
    # An independent handshake (stdlib ssl), not certfleet's probe: nginx serves it again.
    assert served_serial(port, "shop.test", fleet["roots"]) == first
    assert served_serial(port, "www.shop.test", fleet["roots"]) == first

    # Refusals: one line, exit 2, nothing written (store pointer and target files untouched).
    pem = fleet["prod"] / "shop.pem"
    before = (pem.stat().st_mtime_ns, pem.read_bytes())
    store.record_revocation("shop", second, "keyCompromise")
    assert main(["restore", "shop", "--serial", second, "-i", inv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was revoked (keyCompromise" in err[0] and "nothing written" in err[0]
    now = datetime.now(timezone.utc)
    chain, key = local_ca.issue(["shop.test", "www.shop.test"], not_before=now - timedelta(days=2),
                                not_after=now - timedelta(hours=1))
    expired = store.put("shop", chain, key, make_current=False).serial
    assert main(["restore", "shop", "--serial", expired, "-i", inv, "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["exit_code"] == 2 and f"serial {expired} expired at" in out["error"]
    assert main(["restore", "shop", "--serial", "abc123", "-i", inv]) == 2
    assert "no stored version with serial abc123" in capsys.readouterr().err
    assert store.current("shop").serial == first
    assert (pem.stat().st_mtime_ns, pem.read_bytes()) == before
    assert served_serial(port, "shop.test", fleet["roots"]) == first


# -- certificates: the offline store listing ----------------------------------------

@pytest.mark.services
def test_certificates_lists_versions_renewal_time_and_last_attempt(prefect_harness, tmp_path, local_ca, capsys):
    from datetime import datetime, timedelta

    inv = write_inventory(tmp_path, local_ca, """\
        - {name: api, domains: [api.internal.test], issuer: internal}
        - {name: never, domains: [never.internal.test], issuer: internal}
        """)
    assert main(["renew", "api", "-i", str(inv)]) == 0
    assert main(["renew", "api", "--force", "-i", str(inv)]) == 0
    store = LocalStore(tmp_path / "store")
    first, second = [v.serial for v in store.versions("api")]
    store.record_revocation("api", first, "superseded")
    capsys.readouterr()

    assert main(["certificates", "-i", str(inv), "--json"]) == 1  # 'never' was never issued
    out = {c["certificate"]: c for c in json.loads(capsys.readouterr().out)["certificates"]}
    api = out["api"]
    assert api["current"] == second and [v["serial"] for v in api["versions"]] == [second, first]
    assert [v["state"] for v in api["versions"]] == ["current", "revoked"]
    assert api["versions"][1]["revoked"]["reason"] == "superseded"
    info = store.current("api").info
    assert datetime.fromisoformat(api["renew_at"]) == info.not_after - (info.not_after - info.not_before) / 3
    assert api["due"] is False and "renews at" in api["why"]
    assert api["last_attempt"]["result"] == "issued" and api["last_attempt"]["serial"] == second
    assert out["never"]["current"] is None and out["never"]["reason"] == "NOT_ISSUED"
    assert out["never"]["last_attempt"] is None

    # A second, not-due renewal is recorded as such; a persisted ARI time is what is shown.
    assert main(["renew", "api", "-i", str(inv)]) == 0
    chosen = (info.not_after - timedelta(days=5)).replace(microsecond=0)
    (tmp_path / "store" / "_ari").mkdir(exist_ok=True)
    (tmp_path / "store" / "_ari" / "api.json").write_text(json.dumps({second: chosen.isoformat()}))
    capsys.readouterr()
    assert main(["certificates", "api", "-i", str(inv), "--json"]) == 0
    api = json.loads(capsys.readouterr().out)["certificates"][0]
    assert api["last_attempt"]["result"] == "not due"
    assert datetime.fromisoformat(api["renew_at"]) == chosen and "ARI window (persisted)" in api["why"]
    assert main(["certificates", "-i", str(inv)]) == 1
    text = capsys.readouterr().out
    assert f"Current:  {second}" in text and "revoked (superseded)" in text and "Last attempt:" in text


# -- dry runs change nothing -----------------------------------------------------------

@pytest.mark.services
def test_dry_runs_say_what_and_why_and_change_nothing(fleet, issued_since, capsys):
    inv, store, pem = str(fleet["inventory"]), fleet["store"], fleet["prod"] / "shop.pem"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (pem, fleet["prod"] / "shop.key")}
    store_root = fleet["inventory"].parent / "store"

    assert main(["run", "--dry-run", "-i", inv]) == 0
    out = capsys.readouterr().out
    assert "would ORDER  shop from pebble: NOT_ISSUED" in out
    assert "would WRITE  shop → production-lb and RELOAD it" in out and fleet["old_serial"] in out
    assert main(["renew", "shop", "--dry-run", "--force", "-i", inv, "--json"]) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]
    assert steps == [{"certificate": "shop", "action": "order", "issuer": "pebble", "why": steps[0]["why"]}]
    assert main(["distribute", "shop", "--dry-run", "-i", inv, "--json"]) == 0
    [step] = json.loads(capsys.readouterr().out)["steps"]
    assert step["action"] == "skip" and "run renew first" in step["why"]

    assert issued_since() == []  # no order reached Pebble
    assert store.versions("shop") == [] and not (store_root / "shop").exists()  # nothing stored
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before} == before  # nothing written
