"""Target block: files on this machine (nginx, HAProxy, anything that reads PEM files).

Deploy = back up what is there → write fullchain and key atomically (temp file + rename,
so a reader never sees half a file) → optional config test (``nginx -t``) → reload. If
the config test or the reload fails, the previous files are put back before the error
is raised. ``current()`` reads the serial of the certificate in ``fullchain_path``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field

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
    command_timeout: float = Field(60, description="Seconds a config test or reload may take")

    def _label(self) -> str:
        return f"file target '{self.fullchain_path}'"

    def _paths(self) -> list[tuple[Path, int]]:
        paths = [(Path(self.fullchain_path), self.key_mode if self.combined else self.cert_mode)]
        if self.key_path and not self.combined:
            paths.append((Path(self.key_path), self.key_mode))
        return paths

    def current(self) -> str | None:
        path = Path(self.fullchain_path)
        if not path.exists():
            return None
        try:
            certs = pki.load_certs(path.read_bytes())
            return pki.serial_hex(pki.order_chain(certs)[0]) if certs else None
        except (pki.PemError, OSError):
            return None  # unreadable or garbage: treat as "holds nothing we know", redeploy

    def deploy(self, bundle: DeployBundle) -> Receipt:
        contents = self._contents(bundle)
        with _server_lock(self.reload_command):
            try:
                backups = self._backup()
            except OSError as exc:
                raise TargetError(f"{self._label()}: cannot back up the current files: {exc.strerror} ({exc.filename}); nothing written") from None
            try:
                for (path, mode), data in zip(self._paths(), contents):
                    try:
                        atomic_write(path, data, mode)
                    except OSError as exc:
                        raise TargetError(f"{self._label()}: cannot write {path}: {exc.strerror}; previous files restored") from None
                self._run(self.config_test_command, "config test")
                self._run(self.reload_command, "reload")
            except BaseException:
                self._restore(backups)
                raise
        return Receipt(target=self.fullchain_path, certificate=bundle.certificate, serial=bundle.serial,
                       changed=True, detail="written and reloaded" if self.reload_command else "written",
                       at=datetime.now(timezone.utc))

    def rollback(self) -> str | None:
        """Put back the files the last deploy replaced; returns the serial now held.

        Refuses when the previous certificate has expired: an expired certificate is
        no better than a wrong one, and the new one stays for someone to look at.
        """
        pairs = [(path, mode, path.with_name(path.name + BACKUP_SUFFIX)) for path, mode in self._paths()]
        if not all(backup.exists() for _, _, backup in pairs):
            raise TargetError(f"{self._label()}: no previous certificate to roll back to")
        previous = pki.order_chain(pki.load_certs(pairs[0][2].read_bytes()))[0]
        info = pki.describe(previous)
        if info.not_after <= datetime.now(timezone.utc):
            raise TargetError(f"{self._label()}: previous certificate {info.serial} expired at {info.not_after:%Y-%m-%d %H:%M}Z; not rolled back")
        with _server_lock(self.reload_command):
            for path, mode, backup in pairs:
                atomic_write(path, backup.read_bytes(), mode)
            self._run(self.reload_command, "reload")
        return self.current()

    def _contents(self, bundle: DeployBundle) -> list[bytes]:
        if self.combined:
            return [bundle.key_pem + bundle.fullchain_pem]
        if not self.key_path:
            raise TargetError(f"{self._label()}: key_path is required unless combined is true")
        return [bundle.fullchain_pem, bundle.key_pem]

    def _backup(self) -> list[tuple[Path, Path | None]]:
        out = []
        for path, mode in self._paths():
            backup = path.with_name(path.name + BACKUP_SUFFIX)
            if path.exists():
                atomic_write(backup, path.read_bytes(), mode)
                out.append((path, backup))
            else:
                out.append((path, None))
        return out

    def _restore(self, backups) -> None:
        for path, backup in backups:
            with contextlib.suppress(OSError):
                if backup is None:
                    path.unlink(missing_ok=True)
                else:
                    shutil.copy2(backup, path)

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


@contextlib.contextmanager
def _server_lock(reload_command: list[str] | None):
    """One writer at a time per server (keyed by its reload command), across processes.

    A server reads every vhost's certificate and key when it reloads (``nginx -s
    reload`` even parses them before signalling). Two targets of one nginx written
    concurrently would let a reload see one target's new certificate beside its old key.
    """
    if not reload_command:
        yield
        return
    digest = hashlib.sha256("\0".join(reload_command).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"certfleet-reload-{digest}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
