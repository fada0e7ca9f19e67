"""http-01 by writing the challenge file into a directory a web server already serves.

The certbot ``--webroot`` way: the web server for the domain (nginx, Apache, ...) serves
``<webroot>/.well-known/acme-challenge/`` as static files over plain HTTP on port 80, and
this solver only writes and removes files there. No web server is started or reloaded.

The file is written under a temporary name and renamed into place, so the CA never
reads half a key authorization; it is world-readable (0644) because the web server's
worker usually runs as another user. Wildcards cannot be proven by http-01: the ACME
client never asks this solver for one.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field

from certfleet.fsutil import atomic_write

log = logging.getLogger(__name__)

CHALLENGE_DIR = Path(".well-known") / "acme-challenge"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")  # base64url, RFC 8555 §8.3: nothing else may name a file


class WebrootError(RuntimeError):
    """Writing or removing a challenge file failed; the message names the webroot."""


class WebrootSolver(Block):
    """Publish http-01 key authorizations as files under a served web root."""

    _block_type_name = "certfleet webroot solver"
    _description = (
        "http-01 solver: writes <webroot>/.well-known/acme-challenge/<token> for a web server "
        "that serves that directory on port 80 of every domain it is used for."
    )

    webroot: str = Field(
        ...,
        description="Directory the web server serves as the document root of the domains over plain "
        "HTTP, e.g. /var/www/html; challenge files go under .well-known/acme-challenge/ inside it.",
    )
    file_mode: int = Field(
        default=0o644,
        description="Permission bits of the challenge files (the web server's user must be able to read them).",
    )

    def present_http(self, domain: str, token: str, key_authorization: str) -> None:
        """Write the key authorization where the CA will fetch it."""
        path = self._path(token)
        try:
            atomic_write(path, key_authorization.encode("ascii"), mode=self.file_mode)
        except OSError as exc:
            raise WebrootError(f"{self._prefix()} cannot write {path} for {domain}: {exc.strerror or exc}") from None
        log.info("%s wrote challenge file for %s", self._label(), domain)

    def cleanup_http(self, domain: str, token: str, key_authorization: str) -> None:
        """Remove the file again; a file already gone counts as removed."""
        path = self._path(token)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise WebrootError(f"{self._prefix()} cannot remove {path} for {domain}: {exc.strerror or exc}") from None
        log.info("%s removed challenge file for %s", self._label(), domain)

    def _path(self, token: str) -> Path:
        """The file for ``token``; a token that could escape the directory is refused."""
        if not _TOKEN.match(token):
            raise WebrootError(f"{self._prefix()} refusing token {token!r}: not base64url")
        return Path(self.webroot).expanduser() / CHALLENGE_DIR / token

    def _label(self) -> str:
        return f"webroot solver '{self.webroot}'"

    def _prefix(self) -> str:
        return self._label() + ":"
