"""Target block: PEM files on a remote machine reached over SSH (fleet VMs), then a reload.

Deploy = one SSH connection → back up the files there to ``<path>.certfleet-previous`` →
upload each file to a temp name in the same directory, chmod it, and posix-rename it over
the old one (atomic: nginx never reads half a key) → run ``reload_command`` remotely. If
the reload fails, the previous files are put back before the error is raised, exactly as
the file target does locally.

Host keys are checked strictly against ``known_hosts_path``: an unknown or changed host
key is refused, never added — a target we cannot authenticate must not get a private key.
The SSH private key is unwrapped in ``_client_key`` only; errors name
``user@host:port``, never key text. Library: paramiko (sync, like the Target contract).
"""

from __future__ import annotations

import io
import posixpath
import secrets
import socket
import stat
from datetime import datetime, timezone
from pathlib import Path

import paramiko
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from certfleet.blocks.logs import block_logger
from certfleet.blocks.targets.file import TargetError
from certfleet import pki
from certfleet.contracts import DeployBundle
from certfleet.models import Receipt

BACKUP_SUFFIX = ".certfleet-previous"
_KEY_CLASSES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


class SshTargetError(TargetError):
    """A connection, transfer or reload failed; the message starts with ``ssh target 'user@host:port':``."""


class SshTarget(Block):
    _block_type_name = "certfleet ssh target"
    _block_type_slug = "certfleet-ssh-target"
    _description = "Uploads the full chain and key over SSH/SFTP (atomic rename), then runs a reload command remotely."

    host: str = Field(description="Host name or IP address of the machine to deploy to")
    port: int = Field(22, ge=1, le=65535, description="SSH port")
    username: str = Field(description="SSH user; needs write access to the certificate directory and the right to reload")
    private_key: SecretStr | None = Field(None, description="SSH private key (OpenSSH or PEM text, unencrypted); or use private_key_path")
    private_key_path: str | None = Field(None, description="Path on this machine to the SSH private key; used when private_key is empty")
    known_hosts_path: str = Field(description="known_hosts file holding this host's key ('[host]:port' entry for a non-22 port); unknown or changed host keys are refused")
    fullchain_path: str = Field(description="Absolute remote path of the certificate chain (leaf first, then intermediates)")
    key_path: str = Field(description="Absolute remote path of the private key")
    cert_mode: int = Field(0o644, description="File mode of the remote certificate file")
    key_mode: int = Field(0o600, description="File mode of the remote key file; set before any key byte is written")
    reload_command: str | None = Field(None, description="Shell command run remotely after the upload, e.g. 'sudo systemctl reload nginx'; failure restores the previous files")
    connect_timeout: float = Field(10, gt=0, description="Seconds to wait for the TCP connection and SSH handshake")
    command_timeout: float = Field(60, gt=0, description="Seconds the reload command may take")

    @model_validator(mode="after")
    def _one_key(self) -> "SshTarget":
        """Exactly one key source: a missing key is a configuration error, not an auth failure."""
        if not self.private_key and not self.private_key_path:
            raise ValueError("one of private_key or private_key_path is required")
        for name in ("fullchain_path", "key_path"):
            if not posixpath.isabs(getattr(self, name)):
                raise ValueError(f"{name} must be an absolute remote path")
        return self

    # --- the Target contract --------------------------------------------------------

    def current(self) -> str | None:
        """Serial of the remote fullchain; ``None`` when absent or not a certificate."""
        with self._connect() as client, client.open_sftp() as sftp:
            self._refuse_links(sftp)
            data = _read_or_none(sftp, self.fullchain_path)
        return _serial_of(data)

    def deploy(self, bundle: DeployBundle) -> Receipt:
        files = [(self.fullchain_path, self.cert_mode, bundle.fullchain_pem), (self.key_path, self.key_mode, bundle.key_pem)]
        with self._connect() as client, client.open_sftp() as sftp:
            self._refuse_links(sftp, bundle.certificate)
            backups = [self._backup(sftp, path, mode) for path, mode, _ in files]
            try:
                for path, mode, data in files:
                    self._put_atomic(sftp, path, data, mode)
                self._logger().info("%s wrote %s and %s", self._label(), self.fullchain_path, self.key_path)
                self._reload(client)
            except BaseException:
                self._restore(sftp, backups)
                raise
        return Receipt(target=self._label(), certificate=bundle.certificate, serial=bundle.serial, changed=True,
                       detail="uploaded and reloaded" if self.reload_command else "uploaded",
                       at=datetime.now(timezone.utc))

    def rollback(self) -> str | None:
        """Put back the files the last deploy replaced, reload; returns the serial now held."""
        with self._connect() as client, client.open_sftp() as sftp:
            self._refuse_links(sftp)
            restored = False
            for path, mode in ((self.fullchain_path, self.cert_mode), (self.key_path, self.key_mode)):
                previous = _read_or_none(sftp, path + BACKUP_SUFFIX)
                if previous is not None:
                    self._put_atomic(sftp, path, previous, mode)
                    restored = True
            if not restored:
                raise SshTargetError(f"{self._prefix()} no previous certificate to roll back to")
            self._reload(client)
            return _serial_of(_read_or_none(sftp, self.fullchain_path))

    # --- private ----------------------------------------------------------------------

    def _connect(self) -> paramiko.SSHClient:
        """An authenticated client, or one clear error per failure mode."""
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(self.known_hosts_path)
        except OSError as exc:
            raise SshTargetError(f"{self._prefix()} cannot read known_hosts {self.known_hosts_path!r}: {exc.strerror}") from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())  # never trust on first use
        try:
            client.connect(self.host, port=self.port, username=self.username, pkey=self._client_key(),
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout, look_for_keys=False, allow_agent=False)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise SshTargetError(f"{self._prefix()} host key mismatch: server offered {exc.key.get_name()} "
                                 f"{exc.key.fingerprint}, known_hosts expects {exc.expected_key.fingerprint}; "
                                 "refusing to connect (possible man-in-the-middle)") from None
        except paramiko.AuthenticationException:
            client.close()
            raise SshTargetError(f"{self._prefix()} authentication failed: the server did not accept the configured key") from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise SshTargetError(f"{self._prefix()} unknown host key: no entry for this host in "
                                     f"{self.known_hosts_path!r}; refusing to connect") from None
            raise SshTargetError(f"{self._prefix()} SSH handshake failed: {exc}") from None
        except (OSError, socket.timeout) as exc:
            client.close()
            raise SshTargetError(f"{self._prefix()} cannot connect: {_os_reason(exc)}") from None
        return client

    def _client_key(self) -> paramiko.PKey:
        """The only place the SSH private key is unwrapped; parse errors never show its text."""
        if self.private_key:
            text = self.private_key.get_secret_value()
            source = "private_key"
        else:
            try:
                text = Path(self.private_key_path).expanduser().read_text()
            except OSError as exc:
                raise SshTargetError(f"{self._prefix()} cannot read private_key_path {self.private_key_path!r}: {exc.strerror}") from None
            source = f"private_key_path {self.private_key_path!r}"
        for cls in _KEY_CLASSES:
            try:
                return cls.from_private_key(io.StringIO(text))
            except (paramiko.SSHException, ValueError):
                continue
        raise SshTargetError(f"{self._prefix()} {source} is not an unencrypted ed25519, ECDSA or RSA private key")

    def _refuse_links(self, sftp: paramiko.SFTPClient, certificate: str | None = None) -> None:
        """A symlink at a remote target path or its backup is refused (SFTP lstat), never followed."""
        of = f" (certificate '{certificate}')" if certificate else ""
        for field in ("fullchain_path", "key_path"):
            path = getattr(self, field)
            for p, what in ((path, field), (path + BACKUP_SUFFIX, f"{field} backup")):
                try:
                    st = sftp.lstat(p)
                except (OSError, paramiko.SSHException):
                    continue  # absent (or unreachable: the write says so itself)
                if st.st_mode is not None and stat.S_ISLNK(st.st_mode):
                    raise SshTargetError(f"{self._prefix()[:-1]}{of}: {what} {p} is a symbolic link on the remote host; "
                                         "refusing to read, back up or write through it; nothing written")

    def _backup(self, sftp: paramiko.SFTPClient, path: str, mode: int) -> tuple[str, bytes | None]:
        """Copy the file being replaced to ``<path>.certfleet-previous``; remember its bytes."""
        data = _read_or_none(sftp, path)
        if data is not None:
            self._put_atomic(sftp, path + BACKUP_SUFFIX, data, mode)
        return path, data

    def _restore(self, sftp: paramiko.SFTPClient, backups: list[tuple[str, bytes | None]]) -> None:
        """Best effort: put the previous bytes back, remove files that did not exist before."""
        for path, data in backups:
            try:
                if data is None:
                    sftp.remove(path)
                else:
                    mode = self.key_mode if path == self.key_path else self.cert_mode
                    self._put_atomic(sftp, path, data, mode)
            except (OSError, paramiko.SSHException, SshTargetError):
                self._logger().warning("%s could not restore %s", self._label(), path)

    def _put_atomic(self, sftp: paramiko.SFTPClient, path: str, data: bytes, mode: int) -> None:
        """Write in a private staging directory beside ``path``, then posix-rename over it.

        SFTP creates a file with the server's default mode (umask) before any chmod, and
        a user who opens it in that moment keeps the descriptor after the chmod. So the
        temp file is created inside a fresh directory made with mode 0700 (checked), where
        no other user can reach it, chmodded before the first byte, then renamed out over
        ``path`` (same directory tree, so the rename stays atomic).
        """
        directory, name = posixpath.split(path)
        staging = posixpath.join(directory, f".certfleet-{secrets.token_hex(6)}")
        tmp = posixpath.join(staging, name)
        made = False
        try:
            sftp.mkdir(staging, mode=0o700)
            made = True
            st = sftp.lstat(staging)
            if not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o077:
                raise SshTargetError(f"{self._prefix()} staging directory {staging} is not private "
                                     f"(mode {stat.filemode(st.st_mode)}); nothing written")
            with sftp.open(tmp, "wb") as f:
                f.chmod(mode)  # before the first byte, and the directory keeps everyone else out
                f.write(data)
            sftp.posix_rename(tmp, path)
        except (OSError, paramiko.SSHException) as exc:
            raise SshTargetError(f"{self._prefix()} cannot write {path}: {_os_reason(exc)}") from None
        finally:
            if made:
                for cleanup in (lambda: sftp.remove(tmp), lambda: sftp.rmdir(staging)):
                    try:
                        cleanup()
                    except (OSError, paramiko.SSHException):
                        pass

    def _reload(self, client: paramiko.SSHClient) -> None:
        """Run ``reload_command``; a non-zero exit becomes an error with the stderr tail."""
        if not self.reload_command:
            return
        try:
            _stdin, stdout, stderr = client.exec_command(self.reload_command, timeout=self.command_timeout)
            channel = stdout.channel
            if not channel.status_event.wait(self.command_timeout):
                channel.close()
                raise SshTargetError(f"{self._prefix()} reload command timed out after {self.command_timeout:g}s; previous files restored")
            code = channel.recv_exit_status()
            err = stderr.read().decode(errors="replace") or stdout.read().decode(errors="replace")
        except (OSError, paramiko.SSHException) as exc:
            raise SshTargetError(f"{self._prefix()} reload command could not run: {_os_reason(exc)}; previous files restored") from None
        if code != 0:
            tail = " | ".join(err.strip().splitlines()[-3:])
            raise SshTargetError(f"{self._prefix()} reload command failed (exit {code}): {tail}; previous files restored")
        self._logger().info("%s reload command succeeded", self._label())

    def _label(self) -> str:
        return f"ssh target '{self.username}@{self.host}:{self.port}'"

    def _prefix(self) -> str:
        return self._label() + ":"

    def _logger(self):
        return block_logger("certfleet.targets.ssh")


def _read_or_none(sftp: paramiko.SFTPClient, path: str) -> bytes | None:
    try:
        with sftp.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _serial_of(data: bytes | None) -> str | None:
    if not data:
        return None
    try:
        certs = pki.load_certs(data)
        return pki.serial_hex(pki.leaf(certs)) if certs else None
    except pki.PemError:
        return None  # garbage there: treat as "holds nothing we know", redeploy


def _os_reason(exc: BaseException) -> str:
    """'connection refused' rather than '[Errno None] Unable to connect to port 22 on ...'."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        errors = {e.errno for e in exc.errors.values()}
        return "connection refused (is sshd running on that port?)" if errors <= {111} else str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is sshd running on that port?)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
