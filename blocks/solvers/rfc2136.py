"""dns-01 through RFC 2136 dynamic updates (Knot, BIND, PowerDNS, Windows DNS...).

``present`` adds ``_acme-challenge.<domain> TXT <value>`` with a TSIG-signed
update over TCP, then polls the authoritative server until the value is
served (Knot may apply an update up to ~1 s after acknowledging it), so the
CA is only asked to validate once the record is really there.

The TSIG secret is unwrapped in ``_tsig_key`` only, into a key object whose
repr hides it; errors name the server and the key name, never the secret.
"""

from __future__ import annotations

import binascii
import ipaddress
import socket
import struct
from typing import Optional

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from certfleet.challenges import challenge_name  # the one dns-01 name (lego: GetChallengeInfo)
from certfleet.blocks.logs import block_logger
from certfleet.dns_check import (
    PropagationTimeout,
    ZoneNotFound,
    find_zone,
    wait_for_txt,
)

UPDATE_TIMEOUT = 10.0  # seconds for one update round trip; propagation has its own budget

# Algorithms dnspython can sign with, by their canonical names without the root dot.
TSIG_ALGORITHMS = {
    n.to_text(omit_final_dot=True).lower()
    for n in (
        dns.tsig.HMAC_SHA1,
        dns.tsig.HMAC_SHA224,
        dns.tsig.HMAC_SHA256,
        dns.tsig.HMAC_SHA256_128,
        dns.tsig.HMAC_SHA384,
        dns.tsig.HMAC_SHA384_192,
        dns.tsig.HMAC_SHA512,
        dns.tsig.HMAC_SHA512_256,
        dns.tsig.HMAC_MD5,
    )
}


class Rfc2136Error(RuntimeError):
    """An update or check failed; the message starts with the solver's server."""


class _RedactedKey(dns.tsig.Key):
    """dnspython's Key prints its secret in repr; this one does not."""

    def __repr__(self) -> str:
        return f"<DNS key name='{self.name}', algorithm='{self.algorithm}', secret=<redacted>>"

    __str__ = __repr__


class Rfc2136Solver(Block):
    """Publishes dns-01 TXT records on an authoritative server via RFC 2136 + TSIG."""

    _block_type_name = "certfleet rfc2136 solver"
    _description = (
        "dns-01 solver for any DNS server that accepts RFC 2136 dynamic updates signed "
        "with a TSIG key (Knot, BIND, PowerDNS). Checks propagation on the server itself."
    )

    nameserver: str = Field(
        description="Host name or IP address of the primary authoritative server that accepts updates."
    )
    port: int = Field(default=53, ge=1, le=65535, description="Port of that server (UDP and TCP).")
    zone: Optional[str] = Field(
        default=None,
        description=(
            "Zone the records are written into, e.g. 'example.com'. Leave empty to discover it "
            "by asking the server for the SOA of each challenge name."
        ),
    )
    tsig_name: str = Field(description="Name of the TSIG key the server knows, e.g. 'acme-key'.")
    tsig_secret: SecretStr = Field(description="Base64 TSIG secret shared with the server.")
    tsig_algorithm: str = Field(
        default="hmac-sha256",
        description="TSIG algorithm, e.g. 'hmac-sha256' (a trailing dot, as lego writes it, is accepted).",
    )
    propagation_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds to wait for the TXT record to be served by the authoritative server.",
    )
    ttl: int = Field(default=60, ge=0, description="TTL in seconds of the challenge TXT record.")

    @field_validator("tsig_algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        """Accept 'hmac-sha256' and 'HMAC-SHA256.' alike; reject typos before any update."""
        name = value.strip().rstrip(".").lower()
        if name not in TSIG_ALGORITHMS:
            raise ValueError(f"unknown TSIG algorithm {value!r}; use one of {sorted(TSIG_ALGORITHMS)}")
        return name

    @field_validator("zone")
    @classmethod
    def _normal_zone(cls, value: Optional[str]) -> Optional[str]:
        return value.strip().rstrip(".").lower() or None if value else None

    # --- the DnsSolver contract -------------------------------------------------

    def controls(self, domain: str) -> bool:
        """Can this solver publish the challenge for ``domain``? Ask before any ACME order."""
        try:
            self._zone_for(domain)
        except Rfc2136Error:
            return False
        return True

    def present(self, domain: str, value: str) -> None:
        """Add the challenge TXT value, then wait until the server serves it."""
        fqdn = challenge_name(domain)
        update = dns.update.UpdateMessage(self._zone_for(domain))
        update.add(fqdn + ".", self.ttl, _txt(value))
        self._send(update, f"add TXT {fqdn}")
        self._logger().debug("%s added TXT %s; waiting for it to be served", self._label(), fqdn)
        try:
            wait_for_txt(fqdn, value, [self._server()], timeout=self.propagation_timeout)
        except PropagationTimeout as exc:
            raise Rfc2136Error(f"{self._prefix()} update accepted but {exc}") from None

    def cleanup(self, domain: str, value: str) -> None:
        """Delete exactly this TXT value; other values at the same name stay (wildcard + base)."""
        fqdn = challenge_name(domain)
        update = dns.update.UpdateMessage(self._zone_for(domain))
        update.delete(fqdn + ".", _txt(value))
        self._send(update, f"delete TXT {fqdn}")
        self._logger().debug("%s removed one TXT value at %s", self._label(), fqdn)

    def timeout(self) -> tuple[float, float]:
        """(total, poll interval) for callers that poll on their side too."""
        return self.propagation_timeout, 0.05

    # --- private ------------------------------------------------------------------

    def _zone_for(self, domain: str) -> str:
        """The zone holding the challenge name, or a clear refusal."""
        fqdn = challenge_name(domain)
        if self.zone:
            if fqdn == self.zone or fqdn.endswith("." + self.zone):
                return self.zone
            raise Rfc2136Error(f"{self._prefix()} {domain!r} is outside the configured zone {self.zone!r}")
        try:
            return find_zone(fqdn, [self._server()])
        except ZoneNotFound as exc:
            raise Rfc2136Error(f"{self._prefix()} unknown zone for {domain!r}: {exc}") from None

    def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        """Sign, send over TCP, and turn every failure mode into one clear error."""
        zone = update.origin.to_text(omit_final_dot=True).lower()
        update.use_tsig(self._tsig_key())
        host, port = self._server()
        try:
            reply = _exchange_tcp(update, (host, port), UPDATE_TIMEOUT)
        except dns.tsig.PeerBadKey:
            raise self._error(what, f"server does not know TSIG key {self.tsig_name!r} "
                              f"with algorithm {self.tsig_algorithm} (BADKEY)") from None
        except dns.tsig.PeerBadSignature:
            raise self._error(what, f"TSIG signature with key {self.tsig_name!r} rejected "
                              "(BADSIG): tsig_secret or tsig_algorithm does not match the server") from None
        except dns.tsig.PeerBadTime:
            raise self._error(what, "TSIG time check failed (BADTIME): clocks differ") from None
        except (dns.exception.Timeout, TimeoutError):
            raise self._error(what, f"no answer within {UPDATE_TIMEOUT:g}s") from None
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            raise self._error(what, f"update failed: {exc.__class__.__name__}: {exc}") from None
        self._check_rcode(reply, what, zone)

    def _check_rcode(self, reply: dns.message.Message, what: str, zone: str) -> None:
        rcode = reply.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        key = repr(self.tsig_name)
        hints = {
            dns.rcode.NOTAUTH: f"server is not authoritative for zone {zone!r} or does not accept key {key}",
            dns.rcode.REFUSED: f"update refused for zone {zone!r}: the server's ACL does not let key {key} "
            "update TXT there, or the zone is not served",
            dns.rcode.NOTZONE: f"record name is not inside zone {zone!r}",
        }
        name = dns.rcode.to_text(rcode)
        raise self._error(what, f"{hints.get(rcode, 'update rejected')} ({name})")

    def _tsig_key(self) -> dns.tsig.Key:
        """The only place the secret is unwrapped."""
        try:
            return _RedactedKey(self.tsig_name, self.tsig_secret.get_secret_value(), self.tsig_algorithm)
        except (binascii.Error, ValueError):
            raise Rfc2136Error(f"{self._prefix()} tsig_secret of key {self.tsig_name!r} is not valid base64") from None

    def _server(self) -> tuple[str, int]:
        """dnspython wants an address; resolve a host name once per call."""
        try:
            ipaddress.ip_address(self.nameserver)
            return self.nameserver, self.port
        except ValueError:
            pass
        try:
            info = socket.getaddrinfo(self.nameserver, self.port, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            raise Rfc2136Error(f"{self._prefix()} cannot resolve nameserver: {exc}") from None
        return info[0][4][0], self.port

    def _error(self, what: str, detail: str) -> Rfc2136Error:
        return Rfc2136Error(f"{self._prefix()} {what}: {detail}")

    def _label(self) -> str:
        return f"rfc2136 solver '{self.nameserver}:{self.port}'"

    def _prefix(self) -> str:
        return self._label() + ":"

    def _logger(self):
        return block_logger("certfleet.solvers.rfc2136")



def _exchange_tcp(update: dns.message.Message, server: tuple[str, int], timeout: float) -> dns.message.Message:
    """``dns.query.tcp``, except that an unsigned *error* reply is still read for its rcode.

    A server answering for a zone it does not serve (NOTAUTH/REFUSED) does not
    sign its reply; dnspython would report only "response requires a TSIG".
    An unsigned NOERROR is still rejected: success must be authenticated.
    """
    wire = update.to_wire()
    with socket.create_connection(server, timeout=timeout) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        (length,) = struct.unpack("!H", _recv_exact(sock, 2))
        reply_wire = _recv_exact(sock, length)
    try:
        reply = dns.message.from_wire(reply_wire, keyring=update.keyring, request_mac=update.mac)
    except dns.exception.FormError:
        reply = dns.message.from_wire(reply_wire)
        if reply.rcode() == dns.rcode.NOERROR:
            raise
    if not update.is_response(reply):
        raise dns.query.BadResponse("reply does not match the update")
    return reply


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("server closed the connection")
        data += chunk
    return data


def _txt(value: str) -> dns.rdtypes.ANY.TXT.TXT:
    """Built directly, not parsed from text, so quotes or spaces in a value cannot break it."""
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [value.encode()])
