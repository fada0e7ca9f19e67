"""Start a throwaway OpenSSH server on loopback: the "fleet VM" tests deploy to over SSH.

Everything it needs (config, host key, user key, authorized_keys, known_hosts, pid file,
log) is generated inside ``workdir``, so runs never collide and cleanup is ``rm -rf``.
Keys are made with ``cryptography`` (OpenSSH format), not ``ssh-keygen``, so nothing
depends on the client tools being installed. No Prefect import.

Facts this relies on (Debian OpenSSH 9.2): sshd must be started by absolute path; it
refuses to start without its privilege-separation directory ``/run/sshd``; ``-D -e``
keeps it in the foreground (so we hold its PID) and ``-E`` sends its log to a file.
``StrictModes no`` because pytest's temp directories are not owned the way sshd wants
for ``authorized_keys``.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from certfleet_dev.ports import free_port
from certfleet_dev.process import stop_process

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
START_TIMEOUT = 10.0


class SshdStartError(RuntimeError):
    """sshd did not come up; the message carries the tail of its log."""


@dataclass
class Sshd:
    """A running sshd. Stop it with ``stop()`` or by leaving the ``with`` block."""

    port: int
    username: str
    host_key_pub: str  # "ssh-ed25519 AAAA..." as it appears in known_hosts
    user_key_path: Path  # OpenSSH private key the test user logs in with
    known_hosts_path: Path  # one line: "[127.0.0.1]:<port> <host_key_pub>"
    workdir: Path
    process: subprocess.Popen = field(repr=False)
    host: str = "127.0.0.1"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "sshd.pid"

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate by PID (never by name: the host may run its own sshd)."""
        stop_process(self.process, timeout)

    def __enter__(self) -> Sshd:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_sshd(workdir: Path) -> Sshd:
    """Generate keys and config in ``workdir``, start sshd, return once it accepts TCP.

    A port picked free can be taken before sshd binds it, so a failed start is retried
    on a new port a couple of times.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    host_key_pub = _write_keypair(workdir / "ssh_host_ed25519_key")
    user_key_pub = _write_keypair(workdir / "user_ed25519_key")
    (workdir / "authorized_keys").write_text(user_key_pub + "\n")
    username = pwd.getpwuid(os.getuid()).pw_name
    last_error: SshdStartError | None = None
    for _attempt in range(3):
        port = free_port()
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_key_pub}\n")
        process = _spawn(_write_config(workdir, port), workdir / "sshd.log")
        sshd = Sshd(port, username, host_key_pub, workdir / "user_ed25519_key", known_hosts, workdir, process)
        try:
            _wait_ready(sshd)
            return sshd
        except SshdStartError as exc:
            sshd.stop()
            last_error = exc
    assert last_error is not None
    raise last_error


def _write_keypair(path: Path) -> str:
    """Write an ed25519 private key (mode 0600, OpenSSH format); return the public line."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.with_name(path.name + ".pub").write_bytes(public + b"\n")
    return public.decode()


def _write_config(workdir: Path, port: int) -> Path:
    conf = workdir / "sshd_config"
    conf.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {workdir}/ssh_host_ed25519_key
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {workdir}/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
    return conf


def _spawn(conf: Path, log: Path) -> subprocess.Popen:
    # -D: stay in the foreground (we own the PID); -e -E: log to our file, not syslog.
    return subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(conf), "-E", str(log)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _wait_ready(sshd: Sshd) -> None:
    """Poll until sshd sends its SSH banner: accepting TCP alone could be someone else."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if sshd.process.poll() is not None:
            raise SshdStartError(f"sshd exited with {sshd.process.returncode}:\n{sshd.log_tail()}")
        try:
            with socket.create_connection((sshd.host, sshd.port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SshdStartError(f"sshd did not answer on port {sshd.port} within {START_TIMEOUT:g}s:\n{sshd.log_tail()}")


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
