"""dns-01 through the Cloudflare v4 API (httpx).

``present`` creates one TXT record per challenge value (Cloudflare keeps several records
at one name side by side, so a wildcard and its base name never clobber each other);
``cleanup`` finds the record with that name *and* content and deletes only that one.

Requests are retried on 429 and 5xx (and connection errors), honouring Retry-After:
Cloudflare rate-limits per token (1200 requests / 5 min), and a busy fleet renewing many
names can hit it. Errors quote Cloudflare's own ``errors[].message``. The API token is
unwrapped in ``_http`` only, into a request header; it is never part of a URL, a log
line or an error message.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import httpx
from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, SecretStr

from certfleet.challenges import challenge_name  # the one dns-01 name (lego: GetChallengeInfo)
from certfleet.httputil import retry_after_seconds

log = logging.getLogger(__name__)

_RETRY_STATUS = {429, 500, 502, 503, 504}
_ALREADY_EXISTS = {81057, 81058}  # "record already exists" / "an identical record already exists"


class CloudflareError(RuntimeError):
    """An API call failed; the message starts with ``cloudflare solver '<zone>':``."""


class ZoneNotFoundError(CloudflareError):
    """The token sees no Cloudflare zone holding the domain."""


class CloudflareSolver(Block):
    """Publish dns-01 TXT records in a Cloudflare zone through the v4 API."""

    _block_type_name = "certfleet cloudflare solver"
    _description = (
        "dns-01 solver for Cloudflare DNS: one TXT record per challenge value, created and "
        "deleted through the v4 API with a scoped API token."
    )

    api_token: SecretStr = Field(
        ...,
        description="Cloudflare API token with Zone:Read and DNS:Edit on the zones used (not the global API key).",
    )
    zone_id: str | None = Field(
        default=None,
        description="Zone to write into (the 32-hex id on the zone's overview page). Leave empty to look the "
        "zone up by name (GET /zones?name=), trying the domain and then each parent.",
    )
    api_base: str = Field(
        default="https://api.cloudflare.com/client/v4",
        description="Base URL of the API; override only to point at a test server.",
    )
    ttl: int = Field(default=120, ge=1, description="TTL in seconds of the TXT record (1 = Cloudflare's 'automatic').")
    request_timeout: float = Field(default=15.0, gt=0, description="Seconds to wait for one API call.")
    max_attempts: int = Field(
        default=5, ge=1, description="Tries of one API call when Cloudflare answers 429/5xx or cannot be reached."
    )
    retry_delay: float = Field(
        default=1.0,
        ge=0,
        description="First backoff in seconds between tries when Cloudflare sends no Retry-After (doubles each try).",
    )
    max_retry_after: float = Field(
        default=60.0,
        ge=0,
        description="Longest Retry-After in seconds honoured by sleeping; a longer one fails the call at once.",
    )

    _client: httpx.Client | None = PrivateAttr(default=None)
    _zone_names: dict[str, str] = PrivateAttr(default_factory=dict)  # zone id -> name
    _zone_ids: dict[str, str] = PrivateAttr(default_factory=dict)  # domain -> zone id (found ones only)

    # --- the DnsSolver contract ---------------------------------------------------

    def controls(self, domain: str) -> bool:
        """Does the token see a zone holding ``domain``? API failures raise: "cannot ask" is not "no"."""
        try:
            self._zone_for(domain)
        except ZoneNotFoundError:
            return False
        return True

    def present(self, domain: str, value: str) -> None:
        """Create the TXT record; one that already exists with this content counts as created."""
        zone_id = self._zone_for(domain)
        fqdn = challenge_name(domain)
        body = {"type": "TXT", "name": fqdn, "content": _quote(value), "ttl": self.ttl}
        try:
            self._call(zone_id, "POST", f"/zones/{zone_id}/dns_records", f"add TXT {fqdn}", json=body)
        except _ApiError as exc:
            if not exc.codes & _ALREADY_EXISTS:
                raise CloudflareError(str(exc)) from None
        log.info("%s added TXT %s", self._label(zone_id), fqdn)

    def cleanup(self, domain: str, value: str) -> None:
        """Delete the record with this name and content; other values at the name stay."""
        zone_id = self._zone_for(domain)
        fqdn = challenge_name(domain)
        for record in self._txt_records(zone_id, fqdn):
            if _unquote(record.get("content", "")) == value:
                path = f"/zones/{zone_id}/dns_records/{record['id']}"
                self._request(zone_id, "DELETE", path, f"delete TXT {fqdn}")
                log.info("%s deleted TXT %s", self._label(zone_id), fqdn)
                return
        log.info("%s no TXT %s with that value; nothing to delete", self._label(zone_id), fqdn)

    # --- zones and records ----------------------------------------------------------

    def _zone_for(self, domain: str) -> str:
        """Id of the zone holding ``domain``: the configured one (checked), or found by name."""
        name = domain.strip().rstrip(".").lower().removeprefix("*.")
        if self.zone_id:
            zone_name = self._zone_name(self.zone_id)
            if name != zone_name and not name.endswith("." + zone_name):
                raise ZoneNotFoundError(f"{self._prefix()} {domain!r} is outside zone {zone_name!r}")
            return self.zone_id
        if name not in self._zone_ids:
            zone_id = self._lookup_zone(name)
            if zone_id is None:
                raise ZoneNotFoundError(f"{self._prefix()} no zone visible to the token holds {domain!r}")
            self._zone_ids[name] = zone_id
        return self._zone_ids[name]

    def _lookup_zone(self, name: str) -> str | None:
        """GET /zones?name= for the name, then each parent (never a bare TLD), longest first."""
        labels = name.split(".")
        for start in range(len(labels) - 1):
            candidate = ".".join(labels[start:])
            zones = self._request(None, "GET", "/zones", f"look up zone {candidate}", params={"name": candidate})
            if zones:
                self._zone_names[zones[0]["id"]] = candidate
                return zones[0]["id"]
        return None

    def _zone_name(self, zone_id: str) -> str:
        if zone_id not in self._zone_names:
            zone = self._request(zone_id, "GET", f"/zones/{zone_id}", "read zone")
            self._zone_names[zone_id] = zone["name"].rstrip(".").lower()
        return self._zone_names[zone_id]

    def _txt_records(self, zone_id: str, fqdn: str) -> list[dict[str, Any]]:
        """Every TXT record at ``fqdn`` (one page of 100 is far more than ACME ever leaves)."""
        params = {"type": "TXT", "name": fqdn, "per_page": "100"}
        return self._request(zone_id, "GET", f"/zones/{zone_id}/dns_records", f"find TXT {fqdn}", params=params)

    # --- HTTP -------------------------------------------------------------------------

    def _request(self, zone_id: str | None, method: str, path: str, what: str, **kwargs: Any) -> Any:
        """One API call; returns Cloudflare's ``result``; failures become :class:`CloudflareError`."""
        try:
            return self._call(zone_id, method, path, what, **kwargs)
        except _ApiError as exc:
            raise CloudflareError(str(exc)) from None

    def _call(self, zone_id: str | None, method: str, path: str, what: str, **kwargs: Any) -> Any:
        """Send with retries on 429/5xx/connection errors; raise ``_ApiError`` with Cloudflare's words."""
        where = f"{self._prefix(zone_id)} {what}"
        for attempt in range(self.max_attempts):
            last = attempt == self.max_attempts - 1
            try:
                response = self._http().request(method, self.api_base.rstrip("/") + path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise _ApiError(f"{where}: cannot reach {self.api_base} ({type(exc).__name__})", set()) from None
                self._sleep(attempt, None, where, type(exc).__name__)
                continue
            if response.status_code in _RETRY_STATUS and not last:
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                if wait is not None and wait > self.max_retry_after:
                    raise _failure(where, response)
                self._sleep(attempt, wait, where, f"HTTP {response.status_code}")
                continue
            return _result(where, response)
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int, retry_after: float | None, where: str, why: str) -> None:
        """Retry-After when given, else exponential backoff with jitter."""
        backoff = self.retry_delay * (2**attempt)
        wait = retry_after if retry_after is not None else backoff / 2 + random.uniform(0, backoff / 2)
        log.info("%s: %s, retry %d in %.2fs", where, why, attempt + 1, wait)
        time.sleep(wait)

    def _http(self) -> httpx.Client:
        """The one place the token is unwrapped: into the client's Authorization header."""
        if self._client is None:
            token = self.api_token.get_secret_value()
            self._client = httpx.Client(
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=self.request_timeout,
                verify=self.api_base.startswith("https://"),  # plain http (tests) needs no CA bundle load
            )
        return self._client

    def _label(self, zone_id: str | None = None) -> str:
        return f"cloudflare solver '{zone_id or self.zone_id or 'auto'}'"

    def _prefix(self, zone_id: str | None = None) -> str:
        return self._label(zone_id) + ":"


class _ApiError(Exception):
    """Internal: a failed call with Cloudflare's error codes, so present can accept 'already exists'."""

    def __init__(self, message: str, codes: set[int]) -> None:
        super().__init__(message)
        self.codes = codes


def _result(where: str, response: httpx.Response) -> Any:
    """Cloudflare's ``result`` when ``success`` is true, else its ``errors[].message``."""
    body = _json(response)
    if response.is_success and body.get("success"):
        return body.get("result")
    raise _failure(where, response)


def _failure(where: str, response: httpx.Response) -> _ApiError:
    body = _json(response)
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    detail = "; ".join(f"{e.get('message', 'error')} ({e.get('code')})" for e in errors)
    if not detail:
        detail = response.reason_phrase or "no error message"
    codes = {e["code"] for e in errors if isinstance(e.get("code"), int)}
    return _ApiError(f"{where}: HTTP {response.status_code}: {detail}", codes)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}



def _quote(value: str) -> str:
    """Cloudflare asks for TXT content in double quotes (it warns about unquoted content)."""
    return f'"{value}"'


def _unquote(content: str) -> str:
    """Record content as written by us or by someone who did not quote it."""
    if len(content) >= 2 and content[0] == content[-1] == '"':
        return content[1:-1]
    return content
