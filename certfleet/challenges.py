"""Which ACME challenge a solver can answer, and how errors name a solver.

``certfleet.contracts.DnsSolver`` (``present``/``cleanup`` of a TXT value) stays the
dns-01 contract. http-01 needs different inputs — the token names the file, the key
authorization is its content — so it is a separate, equally small protocol rather
than a mode flag on the DNS one. A solver may implement both; the ACME client then
prefers dns-01, the only challenge that can prove a wildcard.

``ControlsDomains`` is the optional "can you publish for this name at all?" question,
asked before any order so a misconfigured domain costs no CA request (and no failed
validation against the CA's rate limits). No Prefect import.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from certfleet.contracts import DnsSolver

DNS01 = "dns-01"
HTTP01 = "http-01"


@dataclass(frozen=True)
class ChallengeInfo:
    """Where and what a dns-01 answer is (lego's ``dns01.GetChallengeInfo``)."""

    fqdn: str   # ``_acme-challenge.<domain>``: lower-case, no trailing dot, wildcard -> base name
    value: str  # the TXT value: base64url(SHA-256(key authorization)), unpadded (RFC 8555 §8.4)


def challenge_name(domain: str) -> str:
    """``_acme-challenge.<domain>``, lower-case, without the trailing dot; ``*.x`` validates at ``x``.

    The one place every dns-01 solver (RFC 2136, Route 53, Cloudflare, challtestsrv)
    gets its record name from.
    """
    base = domain.strip().rstrip(".").lower().removeprefix("*.")
    if not base:
        raise ValueError("dns-01: empty domain")
    return f"_acme-challenge.{base}"


def dns01_info(domain: str, key_authorization: str) -> ChallengeInfo:
    """The record name and TXT value for ``domain``'s dns-01 challenge, computed once, here."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    return ChallengeInfo(challenge_name(domain), base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii"))


@runtime_checkable
class HttpSolver(Protocol):
    """http-01: serve ``key_authorization`` at ``http://<domain>/.well-known/acme-challenge/<token>``."""

    def present_http(self, domain: str, token: str, key_authorization: str) -> None: ...

    def cleanup_http(self, domain: str, token: str, key_authorization: str) -> None: ...


@runtime_checkable
class ControlsDomains(Protocol):
    """Optional: ``controls(domain)`` is True when the solver can publish for ``domain``."""

    def controls(self, domain: str) -> bool: ...


def supported_types(solver: object) -> list[str]:
    """Challenge types ``solver`` can answer, most preferred first (dns-01 covers wildcards)."""
    types = []
    if isinstance(solver, DnsSolver):
        types.append(DNS01)
    if isinstance(solver, HttpSolver):
        types.append(HTTP01)
    return types


def describe(solver: object) -> str:
    """How an error names a solver: the label its own errors start with, else its kind.

    The solver blocks share a ``_label()`` convention ("route53 solver 'Z123'"), so an
    issuer's message names the solver exactly as the solver's own errors do.
    """
    label = getattr(solver, "_label", None)
    if callable(label):
        return str(label())
    kind = getattr(solver, "_block_type_name", None) or type(solver).__name__
    name = getattr(solver, "_block_document_name", None)
    return f"{kind} '{name}'" if name else str(kind)
