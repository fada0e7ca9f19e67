"""ACME issuer block: where the CA is, which account to use, how to prove control.

Configuration only plus three thin methods (issue, revoke, renewal_info); the protocol
lives in ``certfleet.acme_client`` so it can be tested and benchmarked without Prefect.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Union

from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, SecretStr

from certfleet.blocks.solvers import dev_solver_kinds
from certfleet.blocks.solvers.cloudflare import CloudflareSolver
from certfleet.blocks.solvers.rfc2136 import Rfc2136Solver
from certfleet.blocks.solvers.route53 import Route53Solver
from certfleet.blocks.solvers.webroot import WebrootSolver
from certfleet.acme_client import AcmeClient, AcmeError, generate_account_key
from certfleet.challenges import ControlsDomains, describe
from certfleet.contracts import IssuanceRequest, Issued

log = logging.getLogger(__name__)

# Every solver block the issuer accepts (dns-01 and http-01); add new solver blocks here.
# Test-only solvers (challtestsrv) join only where certfleet-dev is installed.
SolverBlock = Union[(Rfc2136Solver, Route53Solver, CloudflareSolver, WebrootSolver, *dev_solver_kinds().values())]


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
        description="Solver that proves control of the domains: a dns-01 solver publishes "
        "_acme-challenge TXT records, an http-01 solver (webroot) serves files over HTTP.",
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
        """Order a certificate for ``request``, proving control through ``solver``."""
        log.debug("acme issuer '%s': issuing %s", self.directory_url, request.name)
        return self._guard(lambda: self._issue(request))

    def _issue(self, request: IssuanceRequest) -> Issued:
        self._refuse_uncontrolled(request)
        return self._acme().issue(request, self.solver)

    def _refuse_uncontrolled(self, request: IssuanceRequest) -> None:
        """Refuse a domain the solver cannot publish for, before any order is placed.

        An order for it could only end in a failed validation, which costs a CA request
        and counts against the CA's failed-validation rate limit. Solvers without
        ``controls`` (challtestsrv, webroot) cannot know, so they are not asked.
        """
        if not isinstance(self.solver, ControlsDomains):
            return
        for domain in request.domains:
            if not self.solver.controls(domain):
                raise AcmeError(
                    f"certificate '{request.name}': domain {domain!r} is not controlled by solver "
                    f"{describe(self.solver)}; no order placed",
                    transient=False,
                )

    def revoke(self, cert_pem: bytes, reason: int = 0) -> None:
        """Revoke a certificate issued to this account (RFC 5280 reason code)."""
        log.info("acme issuer '%s': revoking (reason %d)", self.directory_url, reason)
        self._guard(lambda: self._acme().revoke(cert_pem, reason))

    def renewal_info(self, cert_pem: bytes):
        """The CA's suggested renewal window (RFC 9773) as ``(start, end)``, ``None`` without ARI."""
        return self._guard(lambda: self._acme().renewal_info(cert_pem))

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
                order_url=exc.order_url,
                identifier=exc.identifier,
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
    # Unique per thread as well as per process: several tasks of one run may race here.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(generate_account_key())
    try:
        os.link(tmp, path)
        log.info("created ACME account key %s", path)
    except FileExistsError:
        pass  # another worker won the race; use its key
    finally:
        tmp.unlink(missing_ok=True)
