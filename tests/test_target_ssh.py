"""The SSH target against a real sshd on loopback (tests/plugins/sshd.py).

Nothing is faked: the block connects with paramiko, checks the host key against the
known_hosts file the launcher wrote, uploads over SFTP and runs the reload command in a
real shell. sshd runs on this machine, so the test reads the results with plain ``open``
— what an operator logged into the VM would see.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from certfleet.blocks.targets.ssh import BACKUP_SUFFIX, SshTarget, SshTargetError
from certfleet import pki
from certfleet.contracts import DeployBundle, RollbackCapable, Target
from certfleet_dev.ports import free_port
from certfleet_dev.sshd import _write_keypair, start_sshd
from certfleet.localca import LocalCA

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCA:
    return LocalCA.create(tmp_path_factory.mktemp("ca"))


def bundle(ca: LocalCA, name: str = "shop") -> DeployBundle:
    chain, key = ca.issue(["shop.test"])
    serial = pki.serial_hex(pki.load_certs(chain)[0])
    return DeployBundle(name, serial, chain, key)


def make_target(sshd, tmp_path: Path, **overrides) -> SshTarget:
    fields = dict(
        host=sshd.host, port=sshd.port, username=sshd.username,
        private_key=sshd.user_key_path.read_text(), known_hosts_path=str(sshd.known_hosts_path),
        fullchain_path=str(tmp_path / "tls" / "fullchain.pem"), key_path=str(tmp_path / "tls" / "key.pem"),
        connect_timeout=5, command_timeout=10,
    )
    (tmp_path / "tls").mkdir(exist_ok=True)
    return SshTarget(**{**fields, **overrides})


def serial_in(path: Path) -> str:
    return pki.serial_hex(pki.load_certs(path.read_bytes())[0])


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_no_key_text(message: str, *pems: bytes | str) -> None:
    """No line of any private key (SSH login key or TLS key) may appear in an error."""
    for pem in pems:
        text = pem.decode() if isinstance(pem, bytes) else pem
        for line in text.splitlines():
            if "PRIVATE KEY" not in line and len(line) > 16:
                assert line not in message


def test_satisfies_the_target_contract(sshd, tmp_path):
    target = make_target(sshd, tmp_path)
    assert isinstance(target, Target) and isinstance(target, RollbackCapable)
    assert "PRIVATE KEY" not in repr(target)


def test_deploy_writes_files_with_serial_and_modes_and_reloads(sshd, tmp_path, ca):
    marker = tmp_path / "reloaded"
    target = make_target(sshd, tmp_path, reload_command=f"touch {marker}")
    assert target.current() is None
    b = bundle(ca)
    receipt = target.deploy(b)
    fullchain, key = Path(target.fullchain_path), Path(target.key_path)
    assert receipt.serial == b.serial and receipt.changed
    assert serial_in(fullchain) == b.serial == target.current()
    assert key.read_bytes() == b.key_pem
    assert mode_of(fullchain) == 0o644 and mode_of(key) == 0o600
    assert marker.exists(), "reload command did not run"
    assert not list(fullchain.parent.glob(".*.tmp")), "temp files left behind"


def test_second_deploy_backs_up_previous_and_rollback_restores_it(sshd, tmp_path, ca):
    target = make_target(sshd, tmp_path, key_mode=0o640)
    first, second = bundle(ca), bundle(ca)
    target.deploy(first)
    target.deploy(second)
    key_backup = Path(target.key_path + BACKUP_SUFFIX)
    assert serial_in(Path(target.fullchain_path + BACKUP_SUFFIX)) == first.serial
    assert key_backup.read_bytes() == first.key_pem and mode_of(key_backup) == 0o640
    assert target.current() == second.serial
    assert target.rollback() == first.serial
    assert Path(target.key_path).read_bytes() == first.key_pem


def test_failing_reload_restores_previous_files(sshd, tmp_path, ca):
    target = make_target(sshd, tmp_path)
    good, bad = bundle(ca), bundle(ca)
    target.deploy(good)
    failing = make_target(sshd, tmp_path, reload_command="echo 'nginx: [emerg] cannot load certificate' >&2; exit 3")
    with pytest.raises(SshTargetError) as err:
        failing.deploy(bad)
    message = str(err.value)
    assert message.startswith(f"ssh target '{sshd.username}@127.0.0.1:{sshd.port}':")
    assert "exit 3" in message and "cannot load certificate" in message and "restored" in message
    assert target.current() == good.serial
    assert Path(target.key_path).read_bytes() == good.key_pem
    assert_no_key_text(message, good.key_pem, bad.key_pem, sshd.user_key_path.read_text())


def test_failing_reload_on_first_deploy_leaves_no_files(sshd, tmp_path, ca):
    target = make_target(sshd, tmp_path, reload_command="exit 1")
    with pytest.raises(SshTargetError, match=r"exit 1"):
        target.deploy(bundle(ca))
    assert not Path(target.fullchain_path).exists() and not Path(target.key_path).exists()


def test_unknown_host_key_is_refused(sshd, tmp_path, ca):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    target = make_target(sshd, tmp_path, known_hosts_path=str(empty))
    with pytest.raises(SshTargetError, match=r"unknown host key.*refusing"):
        target.deploy(bundle(ca))
    assert empty.read_text() == "", "the host key must never be auto-added"
    assert not Path(target.fullchain_path).exists()


def test_changed_host_key_is_refused(sshd, tmp_path, ca):
    other = _write_keypair(tmp_path / "impostor_key")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    target = make_target(sshd, tmp_path, known_hosts_path=str(known))
    with pytest.raises(SshTargetError, match=r"host key mismatch"):
        target.current()


def test_wrong_user_key_fails_authentication_without_showing_it(sshd, tmp_path):
    _write_keypair(tmp_path / "stranger_key")
    stranger = (tmp_path / "stranger_key").read_text()
    target = make_target(sshd, tmp_path, private_key=stranger)
    with pytest.raises(SshTargetError, match=r"authentication failed") as err:
        target.current()
    assert_no_key_text(str(err.value), stranger)


def test_garbage_private_key_is_a_clear_error_without_its_text(sshd, tmp_path):
    marker = "OPENSSH " + "PRIVATE KEY"  # assembled: no key-shaped block sits in the repository
    garbage = f"-----BEGIN {marker}-----\nbm90IGEga2V5IGF0IGFsbCwganVzdCB0ZXh0Cg==\n-----END {marker}-----\n"
    target = make_target(sshd, tmp_path, private_key=garbage)
    with pytest.raises(SshTargetError, match=r"private_key is not an unencrypted") as err:
        target.current()
    assert_no_key_text(str(err.value), garbage)


def test_stopped_sshd_is_a_clear_error(tmp_path, ca):
    with start_sshd(tmp_path / "gone") as server:
        target = make_target(server, tmp_path)
    # Leaving the block stopped it (by PID): the port now refuses connections.
    with pytest.raises(SshTargetError) as err:
        target.deploy(bundle(ca))
    assert str(err.value) == (f"ssh target '{server.username}@127.0.0.1:{server.port}': "
                              "cannot connect: connection refused (is sshd running on that port?)")


def test_key_source_is_required():
    with pytest.raises(ValueError, match="private_key or private_key_path"):
        SshTarget(host="h", username="u", known_hosts_path="/k", fullchain_path="/a", key_path="/b")


def test_private_key_path_works(sshd, tmp_path, ca):
    target = make_target(sshd, tmp_path, private_key=None, private_key_path=str(sshd.user_key_path))
    b = bundle(ca)
    assert target.deploy(b).serial == target.current() == b.serial


def test_unused_port_is_refused(sshd, tmp_path):
    target = make_target(sshd, tmp_path, port=free_port())
    with pytest.raises(SshTargetError, match="connection refused"):
        target.current()


# --- hostile remote filesystem (issue 11) -------------------------------------------------

@pytest.mark.parametrize("planted", ["fullchain.pem", "key.pem", "key.pem.certfleet-previous"])
def test_symlink_at_a_remote_target_path_is_refused(sshd, tmp_path, ca, planted):
    target = make_target(sshd, tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours\n")
    os.chmod(victim, 0o600)
    link = tmp_path / "tls" / planted
    link.symlink_to(victim)
    with pytest.raises(SshTargetError, match=r"\(certificate 'shop'\): (fullchain_path|key_path).* symbolic link on the remote host.*nothing written") as err:
        target.deploy(bundle(ca))
    assert ("key_path" if planted.startswith("key") else "fullchain_path") in str(err.value)
    assert victim.read_bytes() == b"not yours\n" and mode_of(victim) == 0o600
    assert link.is_symlink()
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == [planted], "something was written"


def test_upload_never_leaves_a_file_reachable_by_others(sshd, tmp_path, ca):
    """Watch the remote directory during deploys: every entry we did not ask for is a 0700 directory."""
    import threading

    target = make_target(sshd, tmp_path)
    tls = tmp_path / "tls"
    final = {"fullchain.pem", "key.pem", "fullchain.pem.certfleet-previous", "key.pem.certfleet-previous"}
    seen: dict[str, int] = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for entry in os.scandir(tls):
                if entry.name not in final:
                    try:
                        seen.setdefault(entry.name, os.lstat(entry.path).st_mode)
                    except FileNotFoundError:
                        pass

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(5):
            target.deploy(bundle(ca))
    finally:
        stop.set()
        watcher.join()
    assert seen, "the watcher never saw a temporary entry"
    for name, st_mode in seen.items():
        assert stat.S_ISDIR(st_mode) and stat.S_IMODE(st_mode) == 0o700, f"{name}: {stat.filemode(st_mode)}"
    assert sorted(p.name for p in tls.iterdir()) == sorted(final), "staging left behind"
    assert mode_of(tls / "key.pem") == 0o600 and mode_of(tls / "key.pem.certfleet-previous") == 0o600
