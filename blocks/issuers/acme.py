"""ACME issuer block: where the CA is, which account to use, how to prove control.

Configuration only plus two thin methods; the protocol lives in
``certfleet.acme_client`` so it can be tested and benchmarked without Prefect.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Union

from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, SecretStr

from blocks.solvers.challtestsrv import ChallTestSrvSolver
from blocks.solvers.rfc2136 import Rfc2136Solver
from certfleet.acme_client import AcmeClient, AcmeError, generate_account_key
from certfleet.contracts import IssuanceRequest, Issued

log = logging.getLogger(__name__)

# Every dns-01 solver block the issuer accepts; add new solver blocks to this Union.
SolverBlock = Union[ChallTestSrvSolver, Rfc2136Solver]


class AcmeIssuer(Block):
    """Issue and revoke certificates at one ACME CA with one account and one dns-01 solver."""

    _block_type_name = "certfleet acme issuer"
    _description = "An ACME CA (Let's Encrypt, Pebble, ...), the account key to use and the dns-01 solver."

    directory_url: str = Field(
        ...,
        description="ACME directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory.",
    )
    email: str | None = Field(
        default=None,
        description="Contact address registered with the account (expiry and policy mail from the CA).",
    )
    ca_bundle: str | None = Field(
        default=None,
        description="Path of a PEM bundle to trust for the ACME API's HTTPS (private or test CAs); "
        "empty means the system trust store.",
    )
    account_key_path: str = Field(
        ...,
        description="Path of the account's private key (PEM). Created with mode 0600 on first use "
        "and reused afterwards, so the account stays the same.",
    )
    solver: SolverBlock = Field(  # type: ignore[valid-type]
        ...,
        description="dns-01 solver that publishes the _acme-challenge TXT records.",
    )
    eab_kid: str | None = Field(
        default=None,
        description="External account binding key id, for CAs that require EAB (ZeroSSL, Google, ...).",
    )
    eab_hmac_key: SecretStr | None = Field(
        default=None,
        description="External account binding HMAC key (base64url), issued by the CA with eab_kid.",
    )

    _client: AcmeClient | None = PrivateAttr(default=None)

    def issue(self, request: IssuanceRequest) -> Issued:
        """Order a certificate for ``request`` (dns-01 through ``solver``)."""
        log.info("acme issuer '%s': issuing %s", self.directory_url, request.name)
        return self._guard(lambda: self._acme().issue(request, self.solver))

    def revoke(self, cert_pem: bytes, reason: int = 0) -> None:
        """Revoke a certificate issued to this account (RFC 5280 reason code)."""
        log.info("acme issuer '%s': revoking (reason %d)", self.directory_url, reason)
        self._guard(lambda: self._acme().revoke(cert_pem, reason))

    def _guard(self, fn):
        """Prefix every failure with this issuer; keep ``transient`` so callers can retry."""
        prefix = f"acme issuer '{self.directory_url}'"
        try:
            return fn()
        except AcmeError as exc:
            raise AcmeError(
                f"{prefix}: {exc}",
                transient=exc.transient,
                problem_type=exc.problem_type,
                detail=exc.detail,
                retry_after=exc.retry_after,
            ) from exc
        except Exception as exc:  # solver or key-file failure: name the issuer, keep the cause
            raise AcmeError(f"{prefix}: {exc}", transient=False) from exc

    def _acme(self) -> AcmeClient:
        """One client per block instance: the directory and account are fetched once."""
        if self._client is None:
            self._client = AcmeClient(
                self.directory_url,
                self._account_key(),
                email=self.email,
                verify=self.ca_bundle or True,
                eab_kid=self.eab_kid,
                eab_hmac_key=self.eab_hmac_key.get_secret_value() if self.eab_hmac_key else None,
            )
        return self._client

    def _account_key(self) -> bytes:
        """Read the account key, creating it (0600, exclusive create) if it is missing."""
        path = Path(self.account_key_path).expanduser()
        if not path.exists():
            _create_key_file(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("account key %s is readable by others (mode %o); expected 0600", path, mode)
        return path.read_bytes()


def _create_key_file(path: Path) -> None:
    """Write a new account key, complete and 0600, or keep the one another worker made.

    Written to a temporary name first and hard-linked into place, so a concurrent reader
    never sees a half-written file and two workers never end up with two accounts.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(generate_account_key())
    try:
        os.link(tmp, path)
        log.info("created ACME account key %s", path)
    except FileExistsError:
        pass  # another worker won the race; use its key
    finally:
        tmp.unlink(missing_ok=True)
