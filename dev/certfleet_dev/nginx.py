"""A real nginx on loopback for tests, the demo and benchmarks (no Prefect here).

nginx stands for the production load balancer that must end up serving the renewed
certificate, so tests drive it the way an operator would: a generated config with SNI
vhosts, ``nginx -s reload`` to activate a new certificate, the error log as the record
of what happened. Everything nginx writes (pid, logs, temp dirs) stays inside
``workdir``; the master runs in the foreground (``daemon off``) under ``Popen`` so it is
stopped by its own PID and never leaks into the next test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from certfleet_dev.process import stop_process

NGINX_BIN = "/usr/sbin/nginx"
_RELOAD_MARK = "(SIGHUP) received"  # "signal 1 (SIGHUP) received from 123, reconfiguring"


class NginxError(RuntimeError):
    """nginx refused to start or to reload; the message quotes its error log."""


@dataclass
class Vhost:
    """One ``server {}`` block. Vhosts sharing ``port`` (and ``listen``) differ by SNI.

    ``cert_path=None`` makes a plain-HTTP server: the "someone forgot ``ssl``" endpoint.
    ``listen`` is the address nginx binds: ``127.0.0.1`` or ``::1`` for IPv6.
    """

    name: str
    server_names: list[str]
    port: int
    cert_path: Path | None
    key_path: Path | None
    default_server: bool = False
    listen: str = "127.0.0.1"

    @property
    def tls(self) -> bool:
        return self.cert_path is not None

    def render(self) -> str:
        host = f"[{self.listen}]" if ":" in self.listen else self.listen
        flags = " ssl" if self.tls else ""
        flags += " default_server" if self.default_server else ""
        lines = [
            f"    # vhost {self.name}",
            "    server {",
            f"        listen {host}:{self.port}{flags};",
            f"        server_name {' '.join(self.server_names) or '_'};",
        ]
        if self.tls:
            lines += [
                f"        ssl_certificate {self.cert_path};",
                f"        ssl_certificate_key {self.key_path};",
            ]
        lines += [
            f"        location / {{ return 200 \"{self.name}\\n\"; }}",
            "    }",
        ]
        return "\n".join(lines)


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on ``host`` (IPv4 via the shared helper; IPv6 bound here)."""
    if ":" not in host:
        from certfleet_dev.ports import free_port as free_port4

        return free_port4(host)
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def ipv6_loopback_available() -> bool:
    """Whether ``::1`` can be bound here (containers often have IPv6 switched off)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@dataclass
class Nginx:
    """A running nginx master. Use as a context manager, or call :meth:`stop`."""

    workdir: Path
    vhosts: list[Vhost] = field(default_factory=list)
    worker_processes: int = 1
    process: subprocess.Popen | None = None

    @property
    def conf_path(self) -> Path:
        return self.workdir / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.workdir / "logs" / "error.log"

    @property
    def pid(self) -> int:
        assert self.process is not None, "nginx is not running"
        return self.process.pid

    @property
    def reload_command(self) -> list[str]:
        """What a file target runs to activate new certificates, as an operator would."""
        return [NGINX_BIN, "-p", str(self.workdir), "-c", str(self.conf_path),
                "-e", str(self.error_log), "-s", "reload"]

    @property
    def reload_count(self) -> int:
        """Reloads nginx itself logged, so a test can assert "no reload happened"."""
        if not self.error_log.exists():
            return 0
        return self.error_log.read_text(errors="replace").count(_RELOAD_MARK)

    def write_config(self) -> None:
        """Render the whole config from ``vhosts``; every path points into ``workdir``."""
        self.conf_path.write_text(_render_config(self))

    def add_vhost(self, vhost: Vhost, *, reload: bool = True) -> None:
        """Add a server block and (by default) reload so it is live on return."""
        self.vhosts.append(vhost)
        self.write_config()
        if reload and self.process is not None:
            self.reload()

    def reload(self, timeout: float = 10.0) -> None:
        """Run :attr:`reload_command` and return once new workers serve the new config.

        nginx's reload is asynchronous: the master re-reads the config, starts new
        workers and tells the old ones to finish. Waiting for a new worker PID (and for
        the old ones to stop accepting) makes "reload, then probe" deterministic.
        """
        old = _worker_pids(self.pid)
        log_offset = self.error_log.stat().st_size if self.error_log.exists() else 0
        run = subprocess.run(self.reload_command, capture_output=True, text=True)
        if run.returncode != 0:
            raise NginxError(f"nginx reload command failed: {run.stderr.strip()}")
        self._wait_for_new_workers(old, log_offset, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGTERM) of our master by PID; SIGKILL if it hangs."""
        stop_process(self.process, timeout)

    def __enter__(self) -> "Nginx":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_for_new_workers(self, old: set[int], log_offset: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._raise_on_emerg(log_offset)
            current = _worker_pids(self.pid)
            if current - old and not (old & _accepting_workers(current)):
                return
            time.sleep(0.01)
        raise NginxError(f"nginx did not apply the new config within {timeout}s: {self._log_tail(log_offset)}")

    def _raise_on_emerg(self, log_offset: int) -> None:
        """A bad config on reload keeps the old workers; nginx only says so in its log."""
        tail = self._log_tail(log_offset)
        for line in tail.splitlines():
            if "[emerg]" in line or "[alert]" in line:
                raise NginxError(f"nginx rejected the new config: {line}")

    def _log_tail(self, offset: int) -> str:
        if not self.error_log.exists():
            return ""
        with self.error_log.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")


def start_nginx(workdir: Path, vhosts: list[Vhost] = (), *, worker_processes: int = 1,
                timeout: float = 10.0) -> Nginx:
    """Write the config, start the master in the foreground, wait until workers run."""
    workdir = Path(workdir)
    for sub in ("logs", "temp"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    nginx = Nginx(workdir, list(vhosts), worker_processes)
    nginx.write_config()
    stderr = (workdir / "logs" / "stderr.log").open("ab")
    cmd = [NGINX_BIN, "-p", str(workdir), "-c", str(nginx.conf_path), "-e", str(nginx.error_log)]
    nginx.process = subprocess.Popen(cmd, stdout=stderr, stderr=stderr, stdin=subprocess.DEVNULL)
    stderr.close()
    _wait_until_serving(nginx, timeout)
    return nginx


def _wait_until_serving(nginx: Nginx, timeout: float) -> None:
    """Listening sockets are bound before workers fork, so a worker means "serving"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if nginx.process.poll() is not None:
            raise NginxError(f"nginx exited with {nginx.process.returncode}: {_startup_errors(nginx)}")
        if len(_worker_pids(nginx.pid)) >= nginx.worker_processes:
            return
        time.sleep(0.01)
    nginx.stop()
    raise NginxError(f"nginx did not start within {timeout}s: {_startup_errors(nginx)}")


def _startup_errors(nginx: Nginx) -> str:
    texts = []
    for path in (nginx.error_log, nginx.workdir / "logs" / "stderr.log"):
        if path.exists():
            texts.append(path.read_text(errors="replace").strip())
    return " | ".join(t for t in texts if t)[-2000:]


def _render_config(nginx: Nginx) -> str:
    w = nginx.workdir
    user = "user root root;" if os.geteuid() == 0 else ""  # read keys in 0700 tmp dirs
    temp = "\n".join(
        f"    {kind}_temp_path {w / 'temp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    servers = "\n".join(v.render() for v in nginx.vhosts)
    return f"""# generated by certfleet_dev.nginx
{user}
daemon off;
master_process on;
worker_processes {nginx.worker_processes};
worker_rlimit_nofile 16384;
pid {w / 'nginx.pid'};
error_log {nginx.error_log} notice;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
{temp}
    server_names_hash_max_size 65536;
    server_names_hash_bucket_size 128;
    ssl_session_cache off;
    ssl_session_tickets off;
{servers}
}}
"""


def _worker_pids(master: int) -> set[int]:
    """Children of ``master`` whose title says worker process (from /proc)."""
    pids = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == master and b"worker process" in Path(entry.path, "cmdline").read_bytes():
                pids.add(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _accepting_workers(pids: set[int]) -> set[int]:
    """Workers not yet in graceful shutdown (their title gains "is shutting down")."""
    accepting = set()
    for pid in pids:
        try:
            if b"shutting down" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                accepting.add(pid)
        except OSError:
            continue
    return accepting
