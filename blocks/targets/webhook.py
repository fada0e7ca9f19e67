"""Target block: POST the new certificate to an HTTP(S) endpoint that installs it itself.

For appliances and in-house services that expose "give me my new certificate" as an API.
The body is JSON ``{certificate, serial, fullchain_pem, not_after, sent_at}`` plus
``private_key_pem`` only when ``include_key`` is set (a receiver that generates its own
key, or only needs the chain, should never get ours). The receiver authenticates us with
``X-Certfleet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>.<url>.<body>">``:
the timestamp and the exact target URL are signed with the body, so a captured request
replayed later (outside the receiver's tolerance window) or to another URL fails the
check. ``include_key`` with an ``http://`` URL is refused, when the block is built and
again before anything is sent. 5xx answers and network
errors are retried with backoff; 4xx answers are not (they will not get better).

``current()``: with ``current_url`` it GETs ``{"serial": ...}`` from the receiver, so a
target that already holds the serial is not posted again. Without it ``current()``
returns ``None`` and every distribution run re-posts: we deliberately remember nothing
on our side (a memo would go stale the day someone restores the appliance from backup),
so such receivers must treat a repeated serial as a no-op.

The HMAC secret is unwrapped in ``_sign`` only. Errors name the URL without its query
string and never include key text, even if a receiver echoes the body back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import ssl
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator, model_validator

from certfleet.blocks.logs import block_logger
from certfleet.blocks.targets.file import TargetError
from certfleet import pki
from certfleet.contracts import DeployBundle
from certfleet.models import Receipt

SIGNATURE_HEADER = "X-Certfleet-Signature"
_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL)


class WebhookTargetError(TargetError):
    """A delivery failed; the message starts with ``webhook target '<url>':``."""


class WebhookTarget(Block):
    _block_type_name = "certfleet webhook target"
    _block_type_slug = "certfleet-webhook-target"
    _description = "POSTs the new certificate (and the key only if asked) as signed JSON to an HTTP endpoint."

    url: str = Field(description="Endpoint that receives the certificate (POST, JSON); https:// unless on a trusted network")
    hmac_secret: SecretStr = Field(description="Shared secret; 'X-Certfleet-Signature: t=<unix>,v1=<hex HMAC-SHA256 of \"t.url.body\">' is sent with every POST")
    include_key: bool = Field(False, description="Also send private_key_pem; leave off unless the receiver cannot hold its own key")
    ca_bundle: str | None = Field(None, description="PEM file of CAs trusted for the receiver's TLS certificate; empty = system trust store")
    timeout: float = Field(10, gt=0, description="Seconds one HTTP request may take")
    current_url: str | None = Field(None, description="Optional GET endpoint answering {\"serial\": \"<hex>\"}; without it every run re-posts")
    attempts: int = Field(3, ge=1, description="Deliveries tried in total when the receiver answers 5xx or cannot be reached")
    retry_backoff: float = Field(0.5, ge=0, description="Seconds before the second attempt; doubles after each further failure")

    @field_validator("url", "current_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _no_key_in_clear(self) -> "WebhookTarget":
        if self._key_over_http():
            raise ValueError(self._key_over_http())
        return self

    def _key_over_http(self) -> str | None:
        if self.include_key and urlsplit(self.url).scheme != "https":
            return ("include_key is true but url is not https://: a private key is never sent in clear text; "
                    "use an https:// URL or drop include_key")
        return None

    def _refuse_key_over_http(self) -> None:
        if self._key_over_http():
            raise WebhookTargetError(f"{self._prefix()} {self._key_over_http()}; nothing sent")

    def get_client(self) -> httpx.Client:
        """One client per operation; TLS verified against ``ca_bundle`` or the system store."""
        verify = ssl.create_default_context(cafile=self.ca_bundle) if self.ca_bundle else True
        return httpx.Client(verify=verify, timeout=self.timeout, follow_redirects=False,
                            headers={"User-Agent": "certfleet-webhook-target"})

    # --- the Target contract --------------------------------------------------------

    def current(self) -> str | None:
        """The serial the receiver reports, or ``None`` (always, without ``current_url``)."""
        if not self.current_url:
            return None
        with self.get_client() as http:
            response = self._send(http, "GET", self.current_url)
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise self._http_error("GET current serial", response, 1)
        try:
            serial = response.json().get("serial")
        except (ValueError, AttributeError):
            raise WebhookTargetError(f"{self._prefix()} current_url did not answer a JSON object with 'serial'") from None
        return _normal_serial(serial)

    def deploy(self, bundle: DeployBundle) -> Receipt:
        self._refuse_key_over_http()  # again at deploy time: a block may have been changed since it was built
        body = self._body(bundle)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: self._sign(body, int(time.time()))}
        with self.get_client() as http:
            for attempt in range(1, self.attempts + 1):
                last = attempt == self.attempts
                response = self._send(http, "POST", self.url, body, headers, last=last)
                if last or (response is not None and response.status_code < 500):
                    break
                self._logger().info("%s attempt %d/%d failed, retrying", self._label(), attempt, self.attempts)
                time.sleep(self.retry_backoff * 2 ** (attempt - 1))
        if response.status_code >= 300:
            raise self._http_error("POST", response, attempt)
        self._logger().info("%s accepted %s (%d)", self._label(), bundle.serial, response.status_code)
        return Receipt(target=self._label(), certificate=bundle.certificate, serial=bundle.serial, changed=True,
                       detail=f"posted ({response.status_code}){' with key' if self.include_key else ''}",
                       at=datetime.now(timezone.utc))

    # --- private ----------------------------------------------------------------------

    def _body(self, bundle: DeployBundle) -> bytes:
        """The exact bytes that are signed and sent (compact, sorted: stable for receivers)."""
        leaf = pki.order_chain(pki.load_certs(bundle.fullchain_pem))[0]
        payload = {
            "certificate": bundle.certificate,
            "serial": bundle.serial,
            "fullchain_pem": bundle.fullchain_pem.decode(),
            "not_after": pki.describe(leaf).not_after.isoformat(),
            "sent_at": datetime.now(timezone.utc).isoformat(),
        }
        if self.include_key:
            payload["private_key_pem"] = bundle.key_pem.decode()
        return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()

    def _sign(self, body: bytes, timestamp: int) -> str:
        """The only place the HMAC secret is unwrapped: ``t=<unix>,v1=<HMAC of "t.url.body">``."""
        message = f"{timestamp}.{self.url}.".encode() + body
        digest = hmac.new(self.hmac_secret.get_secret_value().encode(), message, hashlib.sha256).hexdigest()
        return f"t={timestamp},v1={digest}"

    def _send(self, http: httpx.Client, method: str, url: str, body: bytes | None = None,
              headers: dict | None = None, last: bool = True) -> httpx.Response | None:
        """One request; a network failure is ``None`` while retries remain, our error after."""
        try:
            return http.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            if not last:
                return None
            raise WebhookTargetError(f"{self._prefix()} {method} failed: {_transport_reason(exc)}") from None

    def _http_error(self, what: str, response: httpx.Response, attempts: int) -> WebhookTargetError:
        tail = _KEY_BLOCK.sub("<private key redacted>", response.text)[:200].strip()
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return WebhookTargetError(f"{self._prefix()} {what} answered {response.status_code} "
                                  f"{response.reason_phrase}{tries}{': ' + tail if tail else ''}")

    def _label(self) -> str:
        parts = urlsplit(self.url)
        return f"webhook target '{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}'"

    def _prefix(self) -> str:
        return self._label() + ":"

    def _logger(self):
        return block_logger("certfleet.targets.webhook")


def _normal_serial(value) -> str | None:
    """'0A:1b' or '0a1b' → 'a1b': the spelling certfleet compares serials in."""
    if not value:
        return None
    try:
        return format(int(str(value).replace(":", ""), 16), "x")
    except ValueError:
        return None  # not a serial we understand: redeploy


def _transport_reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return "TLS certificate of the receiver not trusted (set ca_bundle?)"
        return "connection refused" if "refused" in text.lower() else f"cannot connect: {text}"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
