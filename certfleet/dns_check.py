"""DNS checks for dns-01: has a TXT record reached every authoritative server?

We ask the authoritative servers themselves (recursion off) instead of a
resolver: a resolver may cache the NXDOMAIN it saw a moment ago for the
negative TTL, and the ACME CA validates against authoritative data anyway.
Polling starts fast (50 ms) because a local update is usually visible at once,
and backs off to 1 s so a slow secondary is not hammered. No blind sleeps:
we return the moment every server has the value. No Prefect import.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

Server = tuple[str, int]


class PropagationTimeout(TimeoutError):
    """The TXT value did not appear on every authoritative server in time."""

    def __init__(self, fqdn: str, value: str, missing: dict[Server, str], timeout: float):
        self.fqdn = fqdn
        self.value = value
        self.missing = missing
        servers = ", ".join(f"{h}:{p} ({why})" for (h, p), why in missing.items())
        super().__init__(f"TXT {fqdn} = {value!r} not visible after {timeout:g}s on: {servers}")


class ZoneNotFound(LookupError):
    """No configured server is authoritative for any ancestor of the domain."""


def wait_for_txt(
    fqdn: str,
    value: str,
    nameservers: Sequence[Server],
    timeout: float = 60,
    interval: float = 0.05,
    max_interval: float = 1.0,
) -> None:
    """Return once every server answers ``fqdn`` TXT with ``value``; else raise.

    Servers that already have the value are not asked again. The per-query
    timeout never exceeds the time left, so the call ends close to ``timeout``.
    """
    name = _absolute(fqdn)
    deadline = time.monotonic() + timeout
    missing: dict[Server, str] = {tuple(s): "not asked yet" for s in nameservers}
    while True:
        for server in list(missing):
            left = max(deadline - time.monotonic(), 0.05)
            seen, why = _has_txt(name, value, server, min(left, 1.0))
            if seen:
                del missing[server]
            else:
                missing[server] = why
        if not missing:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise PropagationTimeout(name.to_text(), value, missing, timeout)
        time.sleep(min(interval, left))
        interval = min(interval * 2, max_interval)


def find_zone(domain: str, nameservers: Sequence[Server], timeout: float = 2.0) -> str:
    """The zone (no trailing dot) a server is authoritative for that holds ``domain``.

    Walks up the labels asking SOA. A NOERROR/NXDOMAIN reply that carries the
    zone's SOA in the authority section names the zone at once, so usually a
    single query is enough. A referral (NS without AA) means the name is
    delegated away from these servers, which is a "not found", not the parent.
    """
    name = _absolute(domain)
    reasons: list[str] = []
    for server in nameservers:
        zone, why = _zone_at(name, tuple(server), timeout)
        if zone is not None:
            return zone
        reasons.append(f"{server[0]}:{server[1]}: {why}")
    raise ZoneNotFound(f"no authoritative zone for {name.to_text(True)} ({'; '.join(reasons)})")


def txt_values(fqdn: str, server: Server, timeout: float = 2.0) -> list[str]:
    """Every TXT string at ``fqdn`` on one server (multi-string records joined)."""
    reply = _ask(_absolute(fqdn), dns.rdatatype.TXT, server, timeout)
    return _txt_strings(reply, _absolute(fqdn))


def _has_txt(name: dns.name.Name, value: str, server: Server, timeout: float) -> tuple[bool, str]:
    """(seen, reason it is not) — the reason ends up in the timeout error."""
    try:
        reply = _ask(name, dns.rdatatype.TXT, server, timeout)
    except dns.exception.Timeout:
        return False, "no answer"
    except (OSError, dns.exception.DNSException) as exc:
        return False, f"query failed: {exc.__class__.__name__}"
    if reply.rcode() != dns.rcode.NOERROR:
        return False, dns.rcode.to_text(reply.rcode())
    values = _txt_strings(reply, name)
    if value in values:
        return True, ""
    return False, f"{len(values)} other value(s)" if values else "no TXT"


def _zone_at(name: dns.name.Name, server: Server, timeout: float) -> tuple[str | None, str]:
    candidate, why = name, "root zone"
    while candidate != dns.name.root:
        try:
            reply = _ask(candidate, dns.rdatatype.SOA, server, timeout)
        except (OSError, dns.exception.DNSException) as exc:
            return None, f"query failed: {exc.__class__.__name__}"
        zone = _soa_owner(reply, candidate)
        if zone is not None:
            return zone.to_text(True), ""
        if _is_referral(reply):
            return None, f"{candidate.to_text(True)} is delegated elsewhere"
        why = dns.rcode.to_text(reply.rcode())
        candidate = candidate.parent()
    return None, why


def _soa_owner(reply: dns.message.Message, candidate: dns.name.Name) -> dns.name.Name | None:
    """The zone apex a server names in an authoritative reply, if any."""
    if not reply.flags & dns.flags.AA or reply.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return None
    for rrset in (*reply.answer, *reply.authority):
        if rrset.rdtype == dns.rdatatype.SOA and candidate.is_subdomain(rrset.name):
            return rrset.name
    return None


def _is_referral(reply: dns.message.Message) -> bool:
    return not reply.flags & dns.flags.AA and any(r.rdtype == dns.rdatatype.NS for r in reply.authority)


def _ask(name: dns.name.Name, rdtype: int, server: Server, timeout: float) -> dns.message.Message:
    """One non-recursive query, UDP with TCP fallback on truncation."""
    query = dns.message.make_query(name, rdtype)
    query.flags &= ~dns.flags.RD
    reply, _ = dns.query.udp_with_fallback(query, server[0], timeout=timeout, port=server[1])
    return reply


def _txt_strings(reply: dns.message.Message, name: dns.name.Name) -> list[str]:
    values = []
    for rrset in reply.answer:
        if rrset.name == name and rrset.rdtype == dns.rdatatype.TXT:
            values += [b"".join(r.strings).decode(errors="replace") for r in rrset]
    return values


def _absolute(fqdn: str) -> dns.name.Name:
    return dns.name.from_text(fqdn.rstrip(".") + ".")
