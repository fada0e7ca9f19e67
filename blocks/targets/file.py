"""Target block: files on this machine (nginx, HAProxy, anything that reads PEM files).

Deploy = back up what is there → write fullchain and key atomically (temp file + rename,
so a reader never sees half a file) → optional config test (``nginx -t``) → reload. If
the config test or the reload fails, the previous files are put back before the error
is raised. ``current()`` reads the serial of the certificate in ``fullchain_path``.

Targets sharing one reload command (the vhosts of one nginx) share that server's lock:
their writes hold it shared (side by side), a reload or config test holds it alone, so
a reload never sees a target half written. Targets deployed at the same time share
reloads: one reload, run under the lock after their files are complete, activates them all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import signal
import stat
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from certfleet import pki
from certfleet.contracts import DeployBundle
from certfleet.fsutil import atomic_write
from certfleet.models import Receipt

BACKUP_SUFFIX = ".certfleet-previous"


class TargetError(RuntimeError):
    pass


class FileTarget(Block):
    _block_type_name = "certfleet file target"
    _block_type_slug = "certfleet-file-target"
    _description = "Writes the full chain and key to files, then runs a reload command."

    fullchain_path: str = Field(description="Where the certificate chain goes (leaf first, then intermediates)")
    key_path: str | None = Field(None, description="Where the private key goes (mode key_mode); omit for a combined PEM")
    combined: bool = Field(False, description="Write key + chain into fullchain_path as one PEM (HAProxy style)")
    cert_mode: int = Field(0o644, description="File mode of the certificate file")
    key_mode: int = Field(0o600, description="File mode of the key file")
    config_test_command: list[str] | None = Field(None, description="Run before reload, e.g. ['nginx', '-t']; failure restores the previous files")
    reload_command: list[str] | None = Field(None, description="Run after writing, e.g. ['nginx', '-s', 'reload']")
    reload_signal: str | None = Field(None, description="Instead of a command: send this signal (e.g. 'HUP', 'USR2') to the process in pid_file")
    pid_file: str | None = Field(None, description="PID file of the server that reload_signal goes to")
    owner: str | None = Field(None, description="'user' or 'user:group' to own the written files (default: the worker's user)")
    pkcs12_path: str | None = Field(None, description="Also write key + chain as PKCS#12 here (Java, Windows, appliances)")
    pkcs12_password: SecretStr | None = Field(None, description="Password of the PKCS#12 file; reference a Secret block ({block: NAME})")
    command_timeout: float = Field(60, description="Seconds a config test or reload may take")
    lock_timeout: float = Field(300, gt=0, description="Seconds to wait for the server's reload lock (held by another deploy of the same server) before giving up with an error")

    @model_validator(mode="after")
    def _one_reload(self) -> "FileTarget":
        if self.reload_signal and self.reload_command:
            raise ValueError("give reload_command or reload_signal, not both")
        if bool(self.reload_signal) != bool(self.pid_file):
            raise ValueError("reload_signal and pid_file go together")
        if self.reload_signal and not hasattr(signal, "SIG" + self.reload_signal.upper().removeprefix("SIG")):
            raise ValueError(f"unknown signal '{self.reload_signal}'")
        return self

    def _label(self, certificate: str | None = None) -> str:
        of = f" (certificate '{certificate}')" if certificate else ""
        return f"file target '{self.fullchain_path}'{of}"

    def _reload_key(self) -> list[str] | None:
        """What identifies the server to reload (for its lock and shared reloads)."""
        if self.reload_signal:
            return ["signal", self.reload_signal.upper(), str(self.pid_file)]
        return self.reload_command

    def _reload(self) -> None:
        if not self.reload_signal:
            self._run(self.reload_command, "reload")
            return
        name = "SIG" + self.reload_signal.upper().removeprefix("SIG")
        try:
            pid = int(Path(self.pid_file).read_text().split()[0])  # type: ignore[arg-type]
            os.kill(pid, getattr(signal, name))
        except (OSError, ValueError, IndexError) as exc:
            raise TargetError(f"{self._label()}: cannot send {name} to the process in {self.pid_file}: {exc}; previous files restored") from None

    def _paths(self) -> list[tuple[Path, int]]:
        return [(path, mode) for path, mode, _ in self._fields()]

    def _fields(self) -> list[tuple[Path, int, str]]:
        """(path, mode, field name) of every file this target writes."""
        paths = [(Path(self.fullchain_path), self.key_mode if self.combined else self.cert_mode, "fullchain_path")]
        if self.key_path and not self.combined:
            paths.append((Path(self.key_path), self.key_mode, "key_path"))
        if self.pkcs12_path:
            paths.append((Path(self.pkcs12_path), self.key_mode, "pkcs12_path"))
        return paths

    def _refuse_links(self, certificate: str | None = None) -> None:
        """Refuse a symlink at any path we read, back up or write (and at their backups).

        A link planted at a key path would have us copy its victim into a backup, or
        write our key wherever it points. ``lstat`` here, and ``O_NOFOLLOW`` on every read,
        so nothing is ever read or written through one.
        """
        for path, _mode, field in self._fields():
            for p, what in ((path, field), (_backup_of(path), f"{field} backup")):
                try:
                    st = os.lstat(p)
                except OSError:
                    continue  # absent, or its directory is not one: the write says so itself
                if stat.S_ISLNK(st.st_mode):
                    raise TargetError(f"{self._label(certificate)}: {what} {p} is a symbolic link (to {os.readlink(p)!r}); "
                                      "refusing to read, back up or write through it; nothing written")

    def current(self) -> str | None:
        self._refuse_links()
        try:
            data = _read_nofollow(Path(self.fullchain_path))
            if data is None:
                return None
            certs = pki.load_certs(data)
            return pki.serial_hex(pki.leaf(certs)) if certs else None
        except (pki.PemError, OSError):
            return None  # unreadable or garbage: "holds nothing we know", redeploy (the write says why)

    def deploy(self, bundle: DeployBundle) -> Receipt:
        self._refuse_links(bundle.certificate)
        contents = self._contents(bundle)
        if not (self._reload_key() and self._deploy_coalesced(contents)):
            self._deploy_alone(contents)
        return Receipt(target=self.fullchain_path, certificate=bundle.certificate, serial=bundle.serial,
                       changed=True, detail="written and reloaded" if self._reload_key() else "written",
                       at=datetime.now(timezone.utc))

    def _deploy_alone(self, contents: list[bytes]) -> None:
        """Backup, write, config test and reload, all under the server's lock."""
        with _server_lock(self._reload_key(), timeout=self.lock_timeout, label=self._label()):
            backups = self._backup_or_fail()
            try:
                self._write(contents)
                self._run(self.config_test_command, "config test")
                self._reload()
            except BaseException:
                self._restore(backups)
                raise

    def _deploy_coalesced(self, contents: list[bytes]) -> bool:
        """Write under the server's lock, then wait for one reload that covers the write.

        Targets of one server deployed at the same time (a fan-out) share reloads: a
        reload run under the lock after our files were complete activates them, however
        many other targets' files it activates too. nginx still never sees one target's
        new certificate beside its old key (writes and reloads both hold the lock), and
        200 targets of one nginx cost a handful of reloads instead of 200 back to back.

        Returns False when the shared reload failed: every target it covered has had its
        previous files put back (under the lock, before anyone goes on), and the caller
        redoes its deploy alone — so a target with bad files fails by itself, exactly as
        when every target reloaded on its own.
        """
        # Without a config test, writes of one server's targets only exclude its reloads,
        # not each other (each file is renamed whole; the reload takes the lock exclusively).
        # A config test reads every vhost, so it must not see another target half written.
        with _server_lock(self._reload_key(), shared=not self.config_test_command, timeout=self.lock_timeout, label=self._label()):
            backups = self._backup_or_fail()
            try:
                self._write(contents)
                self._run(self.config_test_command, "config test")
            except BaseException:
                self._restore(backups)
                raise
            ticket = _batcher(self._reload_key()).ticket(lambda: self._restore(backups))
        return _batcher(self._reload_key()).wait(ticket, self._reload)

    def _backup_or_fail(self) -> list[tuple[Path, Path | None]]:
        try:
            return self._backup()
        except OSError as exc:
            raise TargetError(f"{self._label()}: cannot back up the current files: {exc.strerror} ({exc.filename}); nothing written") from None

    def _owner(self) -> tuple[int | None, int | None]:
        if not self.owner:
            return None, None
        import grp
        import pwd

        user, _, group = self.owner.partition(":")
        try:
            pw = pwd.getpwnam(user)
            gid = grp.getgrnam(group).gr_gid if group else pw.pw_gid
        except KeyError as exc:
            raise TargetError(f"{self._label()}: owner '{self.owner}': no such user or group ({exc}); nothing written") from None
        return pw.pw_uid, gid

    def _write(self, contents: list[bytes]) -> None:
        uid, gid = self._owner()
        for (path, mode), data in zip(self._paths(), contents):
            try:
                atomic_write(path, data, mode, uid=uid, gid=gid)
            except OSError as exc:
                raise TargetError(f"{self._label()}: cannot write {path}: {exc.strerror}; previous files restored") from None

    def rollback(self) -> str | None:
        """Put back the files the last deploy replaced; returns the serial now held.

        Refuses when the previous certificate has expired: an expired certificate is
        no better than a wrong one, and the new one stays for someone to look at.
        """
        self._refuse_links()
        pairs = [(path, mode, _backup_of(path)) for path, mode in self._paths()]
        saved = [_read_nofollow(backup) for _, _, backup in pairs]
        if not all(data is not None for data in saved):
            raise TargetError(f"{self._label()}: no previous certificate to roll back to")
        previous = pki.order_chain(pki.load_certs(saved[0]))[0]
        info = pki.describe(previous)
        if info.not_after <= datetime.now(timezone.utc):
            raise TargetError(f"{self._label()}: previous certificate {info.serial} expired at {info.not_after:%Y-%m-%d %H:%M}Z; not rolled back")
        with _server_lock(self._reload_key(), timeout=self.lock_timeout, label=self._label()):
            self._refuse_links()
            for (path, mode, _backup), data in zip(pairs, saved):
                atomic_write(path, data, mode)
            self._reload()
        return self.current()

    def _contents(self, bundle: DeployBundle) -> list[bytes]:
        if self.combined:
            out = [bundle.key_pem + bundle.fullchain_pem]
        elif not self.key_path:
            raise TargetError(f"{self._label()}: key_path is required unless combined is true")
        else:
            out = [bundle.fullchain_pem, bundle.key_pem]
        if self.pkcs12_path:
            out.append(self._pkcs12(bundle))
        return out

    def _pkcs12(self, bundle: DeployBundle) -> bytes:
        """Key + leaf + intermediates as PKCS#12, encrypted with the password (AES-256)."""
        from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, NoEncryption, pkcs12

        chain = pki.order_chain(pki.load_certs(bundle.fullchain_pem))
        password = self.pkcs12_password.get_secret_value().encode() if self.pkcs12_password else None
        return pkcs12.serialize_key_and_certificates(
            bundle.certificate.encode(), pki.load_private_key(bundle.key_pem), chain[0], chain[1:] or None,
            BestAvailableEncryption(password) if password else NoEncryption())

    def _backup(self) -> list[tuple[Path, Path | None]]:
        out = []
        for path, mode in self._paths():
            backup = _backup_of(path)
            if os.path.lexists(path):
                # Backups get the mode of what they hold (a key's backup is key_mode, 0600,
                # whatever mode the replaced file had): never a readable copy of a key.
                if not _link_backup(path, backup, mode):
                    data = _read_nofollow(path)
                    if data is None:
                        raise OSError(errno.ENOENT, "vanished while backing up", str(path))
                    atomic_write(backup, data, mode)
                out.append((path, backup))
            else:
                out.append((path, None))
        return out

    def _restore(self, backups) -> None:
        modes = dict(self._paths())
        for path, backup in backups:
            with contextlib.suppress(OSError):
                if backup is None:
                    path.unlink(missing_ok=True)
                else:
                    data = _read_nofollow(backup)
                    if data is not None:  # renamed over path: never written through a link there
                        atomic_write(path, data, modes.get(path, self.key_mode))

    def _run(self, command: list[str] | None, what: str) -> None:
        if not command:
            return
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=self.command_timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TargetError(f"{self._label()}: {what} command {command[0]!r} could not run: {exc}") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise TargetError(f"{self._label()}: {what} command failed (exit {proc.returncode}): {' | '.join(tail)}; previous files restored")


def _backup_of(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def _read_nofollow(path: Path) -> bytes | None:
    """The file's bytes, ``None`` when absent; a symlink there raises (ELOOP), never followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _link_backup(path: Path, backup: Path, mode: int) -> bool:
    """Make ``backup`` a hard link to the file ``path`` holds now; False if it cannot.

    The deploy then renames a new file over ``path``, so the old inode lives on as the
    backup: no copy and no fsync of data that is already on disk. Only when the file
    already has the mode (and owner) a copy would get; anything else is copied.
    """
    try:
        st = os.lstat(path)
        if stat.S_IMODE(st.st_mode) != mode or st.st_uid != os.geteuid() or not stat.S_ISREG(st.st_mode):
            return False
        tmp = backup.with_name(f".{backup.name}.{os.getpid()}.{threading.get_ident()}")
        os.link(path, tmp)
    except OSError:
        return False
    try:
        os.replace(tmp, backup)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    return True


@contextlib.contextmanager
def _server_lock(reload_command: list[str] | None, *, shared: bool = False, timeout: float = 300.0,
                 label: str | None = None):
    """Per server (keyed by its reload command), across processes: reloads exclusive.

    A server reads every vhost's certificate and key when it reloads (``nginx -s
    reload`` even parses them before signalling). A reload running while a target is
    half written would see its new certificate beside its old key. So a reload (and a
    config test, and a deploy that reloads on its own) holds the lock exclusively, while
    target writes that leave the reload to the shared batcher hold it ``shared``: they
    exclude reloads, not each other, and 200 vhosts of one nginx are written in parallel.
    """
    if not reload_command:
        yield
        return
    digest = hashlib.sha256("\0".join(reload_command).encode()).hexdigest()[:16]
    path = lock_dir() / f"reload-{digest}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TargetError(f"{label or 'file target'}: waited {timeout:g}s for the reload lock of "
                                      f"{' '.join(reload_command)!r} ({path}), held by another deploy or reload; "
                                      "nothing written") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_dir() -> Path:
    """The private directory of reload locks: ``$XDG_RUNTIME_DIR/certfleet/locks``, else
    ``~/.cache/certfleet/locks``; mode 0700, owned by this user, refused otherwise.

    Not the shared temp directory: there another user could pre-create the lock file
    (and hold it forever) or plant a symlink at its predictable name.
    """
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "certfleet" / "locks"
    old = os.umask(0o077)
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    finally:
        os.umask(old)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise TargetError(f"reload lock directory {path} is not private (must be a directory owned by uid "
                          f"{os.geteuid()} with mode 0700, is {stat.filemode(st.st_mode)} uid {st.st_uid}); "
                          "refusing to use it")
    return path


class _ReloadBatcher:
    """Group commit for one server's reloads, within this process.

    ``ticket()`` is taken while holding the server lock, right after a target's files
    are complete. ``wait(ticket)`` returns once a reload that *started after* that
    ticket was issued has finished: the first waiter to find no reload running becomes
    the leader, takes the server lock (so no write is half done), runs the reload for
    every ticket issued so far, and hands the outcome to each of them. If the reload
    fails, the leader puts every covered target's previous files back, still under the
    lock, and each of them gets False (and redoes its deploy alone).
    """

    def __init__(self, reload_command: list[str]):
        self._command = reload_command
        self._cond = threading.Condition()
        self._issued = 0
        self._running = False
        self._restorers: dict[int, object] = {}
        self._outcomes: dict[int, bool] = {}

    def ticket(self, restore) -> int:
        with self._cond:
            self._issued += 1
            self._restorers[self._issued] = restore
            return self._issued

    def wait(self, ticket: int, reload) -> bool:
        """True: a reload covering ``ticket`` succeeded. False: it failed (files restored)."""
        with self._cond:
            while ticket not in self._outcomes:
                if not self._running:
                    self._running = True
                    break
                self._cond.wait()
            else:
                return self._outcomes.pop(ticket)
        batch: list[int] = []
        ok = False
        try:
            with _server_lock(self._command):
                with self._cond:
                    batch = sorted(self._restorers)  # every ticket issued so far, ours included
                    restorers = [self._restorers.pop(t) for t in batch]
                try:
                    reload()
                    ok = True
                except BaseException as exc:  # every covered target redoes its deploy alone
                    for restore in restorers:
                        restore()
                    if not isinstance(exc, Exception):
                        raise
        finally:
            with self._cond:
                for t in batch:
                    self._outcomes[t] = ok
                self._running = False
                self._cond.notify_all()
        with self._cond:
            return self._outcomes.pop(ticket, False)


_batchers: dict[tuple[str, ...], _ReloadBatcher] = {}
_batchers_lock = threading.Lock()


def _batcher(reload_command: list[str]) -> _ReloadBatcher:
    key = tuple(reload_command)
    with _batchers_lock:
        if key not in _batchers:
            _batchers[key] = _ReloadBatcher(list(reload_command))
        return _batchers[key]
