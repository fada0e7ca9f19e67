"""ACME Renewal Information (RFC 9773): the certificate identifier, the window, the chosen time.

Prefect-free and small. Three pieces:

* :func:`cert_id` — the identifier a CA knows a certificate by (RFC 9773 §4.1), used in
  the renewalInfo URL and as ``replaces`` in a new order;
* :func:`fetch_window` — GET ``<renewalInfo>/<certID>`` and parse ``suggestedWindow``;
  ``None`` when the CA's directory offers no ``renewalInfo``;
* :class:`ChosenTimes` — the time picked inside a window, persisted, so it is reused on
  every later check and re-picked only when the CA moves the window away from it
  (cert-manager's warning: re-rolling on every check drifts renewals to the window's start).
"""

from __future__ import annotations

import base64
import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from cryptography import x509

from certfleet import policy
from certfleet.fsutil import atomic_write
from certfleet.httputil import retry_after_seconds  # the one Retry-After parser

log = logging.getLogger(__name__)

KEEP_CHOICES = 10  # serials remembered per file: current, a rollback or two, and spare


class AriError(ValueError):
    """The certificate has no ARI identifier, or the CA's renewalInfo reply is unusable."""


@dataclass(frozen=True)
class AriWindow(policy.AriWindow):
    """The CA's suggested window, plus its hints: when to ask again, and why (if it says)."""

    retry_after: float | None = None  # seconds, from the Retry-After header
    explanation_url: str | None = None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _load(cert: x509.Certificate | bytes | str) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    data = cert.encode() if isinstance(cert, str) else cert
    try:
        return x509.load_pem_x509_certificates(data)[0]  # the leaf of a full chain
    except ValueError:
        raise AriError("not a PEM certificate") from None


def serial_octets(serial: int) -> bytes:
    """The content octets of the DER INTEGER: minimal two's complement, so a serial whose
    top bit is set gets a leading 0x00 (0x87654321 -> 00 87 65 43 21)."""
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big", signed=True)


def cert_id(cert: x509.Certificate | bytes | str) -> str:
    """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(serial DER content octets).

    Unpadded base64url on both halves. A certificate without an Authority Key Identifier
    (or one carrying only issuer+serial, no keyIdentifier) has no ARI identifier.
    """
    c = _load(cert)
    try:
        aki = c.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise AriError(f"certificate {c.serial_number:x} has no Authority Key Identifier") from None
    if not aki.key_identifier:
        raise AriError(f"certificate {c.serial_number:x}: Authority Key Identifier has no keyIdentifier")
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial_octets(c.serial_number))}"


def _when(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise AriError(f"renewalInfo: suggestedWindow.{what} missing")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise AriError(f"renewalInfo: suggestedWindow.{what} {value!r} is not an RFC 3339 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_window(body: Mapping[str, Any], retry_after: str | None = None) -> AriWindow:
    """``{"suggestedWindow": {"start", "end"}, "explanationURL"?}`` -> :class:`AriWindow`.

    An end not after its start is an invalid window (RFC 9773 §4.2): refused, so the
    caller falls back to its own timing instead of renewing at a nonsense time.
    """
    window = body.get("suggestedWindow") if isinstance(body, Mapping) else None
    if not isinstance(window, Mapping):
        raise AriError("renewalInfo: reply has no suggestedWindow")
    start, end = _when(window.get("start"), "start"), _when(window.get("end"), "end")
    if end <= start:
        raise AriError(f"renewalInfo: suggestedWindow ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    url = body.get("explanationURL")
    return AriWindow(start, end, retry_after_seconds(retry_after), url if isinstance(url, str) else None)


def renewal_info_url(directory: Mapping[str, Any], cert: x509.Certificate | bytes | str) -> str | None:
    """``<renewalInfo>/<certID>``, or ``None`` when the directory offers no renewalInfo."""
    base = directory.get("renewalInfo") if directory else None
    if not base:
        return None
    return f"{str(base).rstrip('/')}/{cert_id(cert)}"


def fetch_window(directory: Mapping[str, Any], cert: x509.Certificate | bytes | str,
                 http_get: Callable[[str], Any]) -> AriWindow | None:
    """The CA's suggested window for ``cert``, or ``None`` when the CA has no ARI.

    ``http_get(url)`` does the unauthenticated GET and returns a response with
    ``status_code``, ``headers`` and ``json()`` (requests and httpx both do); raising
    for HTTP errors and retrying is its business.
    """
    url = renewal_info_url(directory, cert)
    if url is None:
        return None
    response = http_get(url)
    if getattr(response, "status_code", 200) >= 400:
        raise AriError(f"renewalInfo: GET {url} answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise AriError(f"renewalInfo: GET {url} did not answer JSON") from None
    return parse_window(body, response.headers.get("Retry-After"))


class ChosenTimes:
    """A JSON document ``{serial: chosen ISO time}``: the renewal time picked inside a window.

    ``choose`` returns the stored time while the window still contains it, and picks
    (and stores) a new one only when there is none or the window moved away from it.
    The pick itself is ``policy.renewal_time`` — the one timing function.

    Kept in the storage seam (``ChosenTimes(storage=..., key=Keys.ari(name))``) so every
    worker sees one choice: a new one is written with compare-and-set, and a worker
    that lost the race reads the winner's and keeps it. ``ChosenTimes(path)`` is the
    same over a local file.
    """

    def __init__(self, path: str | Path | None = None, *, storage=None, key: str | None = None):
        from certfleet.storage import LocalStorage

        if storage is None:
            if path is None:
                raise ValueError("ari: give a path, or a storage and a key")
            path = Path(path)
            storage, key = LocalStorage(path.parent, label="ari"), path.name
        if not key:
            raise ValueError("ari: no storage key")
        self.storage, self.key = storage, key

    def _read(self) -> tuple[dict[str, str], str | None]:
        from certfleet.storage import NotFound, StoreError

        try:
            item = self.storage.read(self.key)
        except NotFound:
            return {}, None
        except StoreError as exc:
            log.warning("ari: ignoring unreadable %s (%s); choosing afresh", self.key, exc)
            return {}, None
        try:
            data = json.loads(item.value)
        except ValueError as exc:
            log.warning("ari: ignoring unreadable %s (%s); choosing afresh", self.key, exc)
            return {}, item.version
        return ({str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}), item.version

    @staticmethod
    def _parse(raw: str | None) -> datetime | None:
        if raw is None:
            return None
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            return None

    def get(self, serial: str) -> datetime | None:
        return self._parse(self._read()[0].get(serial))

    def choose(self, serial: str, window: policy.AriWindow, rng: random.Random | None = None) -> datetime:
        """The renewal time for ``serial`` in ``window``: kept if still inside, else re-picked."""
        from certfleet.storage import Conflict

        while True:
            data, version = self._read()
            before = self._parse(data.get(serial))
            chosen = policy.renewal_time(None, window, before, rng)  # type: ignore[arg-type]  # info unused with a window
            if chosen == before:
                return chosen
            data.pop(serial, None)
            data[serial] = chosen.isoformat()  # newest last; the oldest fall off
            data = dict(list(data.items())[-KEEP_CHOICES:])
            try:
                self.storage.put(self.key, (json.dumps(data, indent=2) + "\n").encode(),
                                 if_match=version, create_only=version is None)
            except Conflict:
                continue  # another worker chose meanwhile: read its choice (kept if inside the window)
            log.info("ari: serial %s renews at %s (window %s .. %s)%s", serial, chosen.isoformat(),
                     window.start.isoformat(), window.end.isoformat(),
                     f"; the window moved away from {before.isoformat()}" if before else "")
            return chosen
