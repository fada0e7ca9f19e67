"""The file target's options: PKCS#12 with a password, owner, a signal to a PID file."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from certfleet.blocks.targets.file import FileTarget, TargetError
from certfleet import pki
from certfleet.contracts import DeployBundle


@pytest.fixture
def bundle(local_ca):
    chain, key = local_ca.issue(["shop.test"])
    return DeployBundle("shop", pki.serial_hex(pki.load_certs(chain)[0]), chain, key)


def test_pkcs12_with_password_and_owner(tmp_path, bundle):
    target = FileTarget(fullchain_path=str(tmp_path / "shop.pem"), key_path=str(tmp_path / "shop.key"),
                        pkcs12_path=str(tmp_path / "shop.p12"), pkcs12_password="s3cret", owner="nobody")
    target.deploy(bundle)
    key, cert, extra = pkcs12.load_key_and_certificates((tmp_path / "shop.p12").read_bytes(), b"s3cret")
    assert pki.serial_hex(cert) == bundle.serial and len(extra) == 1
    assert pki.key_matches(cert, key)
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates((tmp_path / "shop.p12").read_bytes(), b"wrong")
    nobody = pwd.getpwnam("nobody").pw_uid
    for name, mode in (("shop.pem", 0o644), ("shop.key", 0o600), ("shop.p12", 0o600)):
        st = (tmp_path / name).stat()
        assert (st.st_uid, st.st_mode & 0o777) == (nobody, mode), name
    assert "s3cret" not in repr(target)


def test_unknown_owner_is_refused_before_any_write(tmp_path, bundle):
    target = FileTarget(fullchain_path=str(tmp_path / "shop.pem"), key_path=str(tmp_path / "shop.key"),
                        owner="no-such-user-here")
    with pytest.raises(TargetError, match="owner 'no-such-user-here'"):
        target.deploy(bundle)
    assert not (tmp_path / "shop.pem").exists()


def test_reload_by_signal_to_a_pid_file(tmp_path, bundle):
    marker = tmp_path / "reloaded"
    server = subprocess.Popen([sys.executable, "-c", (
        "import signal, sys, time, pathlib\n"
        f"signal.signal(signal.SIGHUP, lambda *a: pathlib.Path({str(marker)!r}).write_text('HUP'))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        (tmp_path / "server.pid").write_text(f"{server.pid}\n")
        target = FileTarget(fullchain_path=str(tmp_path / "shop.pem"), key_path=str(tmp_path / "shop.key"),
                            reload_signal="HUP", pid_file=str(tmp_path / "server.pid"))
        target.deploy(bundle)
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.read_text() == "HUP"
    finally:
        server.kill()
        server.wait()


def test_signal_to_a_dead_pid_restores_and_says_so(tmp_path, bundle, local_ca):
    old_chain, old_key = local_ca.issue(["shop.test"])
    (tmp_path / "shop.pem").write_bytes(old_chain)
    (tmp_path / "shop.key").write_bytes(old_key)
    (tmp_path / "server.pid").write_text("999999\n")
    target = FileTarget(fullchain_path=str(tmp_path / "shop.pem"), key_path=str(tmp_path / "shop.key"),
                        reload_signal="HUP", pid_file=str(tmp_path / "server.pid"))
    with pytest.raises(TargetError, match="cannot send SIGHUP"):
        target.deploy(bundle)
    assert (tmp_path / "shop.pem").read_bytes() == old_chain


def test_reload_options_are_checked():
    with pytest.raises(ValueError, match="not both"):
        FileTarget(fullchain_path="/x.pem", key_path="/x.key", reload_command=["true"], reload_signal="HUP", pid_file="/p")
    with pytest.raises(ValueError, match="go together"):
        FileTarget(fullchain_path="/x.pem", key_path="/x.key", reload_signal="HUP")
    with pytest.raises(ValueError, match="unknown signal"):
        FileTarget(fullchain_path="/x.pem", key_path="/x.key", reload_signal="NOPE", pid_file="/p")


def test_writes_of_one_server_share_its_lock_and_a_reload_excludes_them(tmp_path):
    """Targets of one nginx are written side by side; a reload waits for every write."""
    import threading

    from certfleet.blocks.targets.file import _server_lock

    command = ["true", str(tmp_path)]  # a reload command unique to this test
    with _server_lock(command, shared=True):
        other = threading.Event()

        def second_writer():
            with _server_lock(command, shared=True):
                other.set()

        threading.Thread(target=second_writer).start()
        assert other.wait(5), "a second target's write waited for the first"

        reloaded = threading.Event()

        def reload():
            with _server_lock(command):
                reloaded.set()

        threading.Thread(target=reload).start()
        assert not reloaded.wait(0.3), "a reload ran while a target was being written"
    assert reloaded.wait(5), "the reload never ran after the write finished"


# --- hostile filesystem: a symlink planted at a target path (issue 11) ----------------

@pytest.mark.parametrize("planted", ["shop.pem", "shop.key", "shop.pem.certfleet-previous", "shop.key.certfleet-previous"])
def test_symlink_at_a_target_path_is_refused_and_its_victim_untouched(tmp_path, bundle, local_ca, planted):
    """A symlink at fullchain_path, key_path or a backup is never read, copied or written through."""
    old_chain, old_key = local_ca.issue(["shop.test"])
    (tmp_path / "shop.pem").write_bytes(old_chain)
    (tmp_path / "shop.key").write_bytes(old_key)
    os.chmod(tmp_path / "shop.key", 0o600)
    victim = tmp_path / "victim-secret"
    victim.write_bytes(b"not yours\n")
    os.chmod(victim, 0o600)
    link = tmp_path / planted
    link.unlink(missing_ok=True)
    link.symlink_to(victim)
    before = {p.name: (p.read_bytes() if not p.is_symlink() else None) for p in tmp_path.iterdir()}
    target = FileTarget(fullchain_path=str(tmp_path / "shop.pem"), key_path=str(tmp_path / "shop.key"),
                        reload_command=["true", str(tmp_path)])
    with pytest.raises(TargetError, match=r"certificate 'shop'.*symbolic link.*nothing written") as err:
        target.deploy(bundle)
    field = "key_path" if "key" in planted else "fullchain_path"
    assert field in str(err.value) and str(tmp_path / "shop.pem") in str(err.value)
    assert victim.read_bytes() == b"not yours\n" and victim.stat().st_mode & 0o777 == 0o600
    assert link.is_symlink()
    after = {p.name: (p.read_bytes() if not p.is_symlink() else None) for p in tmp_path.iterdir()}
    assert after == before, "something was written"


def test_current_and_rollback_do_not_read_through_a_symlink(tmp_path, bundle, local_ca):
    victim_chain, _ = local_ca.issue(["shop.test"])
    victim = tmp_path / "elsewhere.pem"
    victim.write_bytes(victim_chain)
    (tmp_path / "shop.pem").symlink_to(victim)
    target = FileTarget(fullchain_path=str(tmp_path / "shop.pem"), key_path=str(tmp_path / "shop.key"))
    with pytest.raises(TargetError, match="fullchain_path .*symbolic link"):
        target.current()
    (tmp_path / "shop.pem").unlink()
    target.deploy(bundle)
    (tmp_path / "shop.key.certfleet-previous").symlink_to(victim)
    (tmp_path / "shop.pem.certfleet-previous").write_bytes(victim_chain)
    with pytest.raises(TargetError, match="key_path backup .*symbolic link"):
        target.rollback()
    assert pki.serial_hex(pki.load_certs((tmp_path / "shop.pem").read_bytes())[0]) == bundle.serial


def test_backup_of_the_key_keeps_the_key_mode(tmp_path, bundle, local_ca):
    old_chain, old_key = local_ca.issue(["shop.test"])
    (tmp_path / "shop.pem").write_bytes(old_chain)
    (tmp_path / "shop.key").write_bytes(old_key)
    os.chmod(tmp_path / "shop.key", 0o644)  # a loose key left by hand: its backup must not stay loose
    target = FileTarget(fullchain_path=str(tmp_path / "shop.pem"), key_path=str(tmp_path / "shop.key"))
    target.deploy(bundle)
    backup = tmp_path / "shop.key.certfleet-previous"
    assert backup.read_bytes() == old_key
    assert backup.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "shop.key").stat().st_mode & 0o777 == 0o600


def test_reload_lock_is_private_and_its_wait_is_bounded(tmp_path, bundle, monkeypatch):
    """Another real process holds the server's reload lock: the deploy gives up with a clear error."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    from certfleet.blocks.targets import file as file_mod

    command = ["true", str(tmp_path)]
    locks = tmp_path / "run" / "certfleet" / "locks"
    target = FileTarget(fullchain_path=str(tmp_path / "shop.pem"), key_path=str(tmp_path / "shop.key"),
                        reload_command=command, lock_timeout=0.5)
    with file_mod._server_lock(command):  # creates the lock file in the private directory
        pass
    assert locks.is_dir() and locks.stat().st_mode & 0o777 == 0o700
    [lock] = list(locks.iterdir())
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TargetError, match=r"file target .*shop\.pem.*waited 0\.5s for the reload lock.*nothing written"):
            target.deploy(bundle)
        assert not (tmp_path / "shop.pem").exists()
    finally:
        holder.kill()
        holder.wait()
    target.deploy(bundle)  # the holder is gone: the lock is free again
    assert (tmp_path / "shop.pem").exists()


def test_reload_lock_directory_that_is_not_private_is_refused(tmp_path, bundle, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run" / "certfleet" / "locks").mkdir(parents=True)
    os.chmod(tmp_path / "run" / "certfleet" / "locks", 0o777)
    target = FileTarget(fullchain_path=str(tmp_path / "shop.pem"), key_path=str(tmp_path / "shop.key"),
                        reload_command=["true", str(tmp_path)])
    with pytest.raises(TargetError, match="reload lock directory .* is not private"):
        target.deploy(bundle)
    assert not (tmp_path / "shop.pem").exists()
