"""dns-01 through Amazon Route 53 (boto3).

``present`` merges the challenge value into the TXT record set at
``_acme-challenge.<domain>`` (UPSERT of old values + new one), so a wildcard and its
base name — or two certificates validating the same name — never clobber each other's
value. ``cleanup`` removes only its own value: it UPSERTs the rest, or DELETEs the
record set when its value was the last one.

Propagation is checked, never slept: first Route 53's own ``GetChange`` until the change
is ``INSYNC`` (every Route 53 server has it), then, when ``nameservers`` are given,
``wait_for_txt`` against them (e.g. a secondary that transfers the zone).

Known limit: Route 53 has no conditional write on a record set, so two *processes*
presenting at the same name at the same moment can still lose one value (read, merge,
write). certfleet renews each certificate from one issuer under a lock, which keeps
this to certificates that share a name and renew in the same second.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, field_validator

from certfleet.challenges import challenge_name  # the one dns-01 name (lego: GetChallengeInfo)
from certfleet.blocks.aws import AwsCredentials, aws_errors
from certfleet.dns_check import PropagationTimeout, wait_for_txt

log = logging.getLogger(__name__)

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


class Route53Error(RuntimeError):
    """A Route 53 call or check failed; the message starts with ``route53 solver '<zone>':``."""


class ZoneNotFoundError(Route53Error):
    """No hosted zone of this account holds the challenge name."""


class Route53Solver(Block):
    """Publish dns-01 TXT records in a Route 53 hosted zone and wait until they are in sync."""

    _block_type_name = "certfleet route53 solver"
    _description = (
        "dns-01 solver for Amazon Route 53: merges the challenge value into the TXT record, "
        "waits for the change to be INSYNC, optionally checks given nameservers."
    )

    hosted_zone_id: str | None = Field(
        default=None,
        description="Hosted zone to write into, e.g. 'Z0123456789ABC'. Leave empty to pick, per domain, the "
        "public zone whose name is the longest suffix of the challenge name.",
    )
    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials,
        description="How to reach AWS (region, keys or profile, endpoint_url for moto/LocalStack). "
        "Needs route53:ListHostedZonesByName, GetHostedZone, ListResourceRecordSets, "
        "ChangeResourceRecordSets and GetChange.",
    )
    ttl: int = Field(default=60, ge=0, description="TTL in seconds of the challenge TXT record.")
    propagation_timeout: float = Field(
        default=180.0,
        gt=0,
        description="Seconds to wait for the change to be INSYNC and, if nameservers are set, served by them.",
    )
    poll_interval: float = Field(
        default=2.0,
        gt=0,
        description="Longest pause in seconds between two GetChange calls (polling starts faster).",
    )
    nameservers: list[str] = Field(
        default_factory=list,
        description="Optional 'host:port' (or 'host') authoritative servers that must serve the value "
        "before present returns, checked after INSYNC. Empty: Route 53's INSYNC is enough.",
    )

    @field_validator("hosted_zone_id")
    @classmethod
    def _bare_zone_id(cls, value: str | None) -> str | None:
        """Accept '/hostedzone/Z123' (as the API returns it) and 'Z123' alike."""
        return _zone_id(value.strip()) or None if value else None

    _client: Any = PrivateAttr(default=None)
    _zones: dict[str, str] | None = PrivateAttr(default=None)  # zone id -> name, no trailing dot

    # --- the DnsSolver contract ---------------------------------------------------

    def controls(self, domain: str) -> bool:
        """Is there a hosted zone for ``domain``? API failures raise: "cannot ask" is not "no"."""
        try:
            self._zone_for(domain)
        except ZoneNotFoundError:
            return False
        return True

    def present(self, domain: str, value: str) -> None:
        """Add ``value`` to the TXT record (keeping other values), then wait until it is live."""
        zone_id = self._zone_for(domain)
        fqdn = challenge_name(domain)
        ttl, values = self._txt_record(zone_id, fqdn)
        if value not in values:
            values.append(value)
        change = self._change(zone_id, "UPSERT", fqdn, self.ttl, values, f"add TXT {fqdn}")
        log.info("%s upserted TXT %s (%d value(s)); waiting for INSYNC", self._label(zone_id), fqdn, len(values))
        self._wait_insync(zone_id, change)
        self._wait_served(zone_id, fqdn, value)

    def cleanup(self, domain: str, value: str) -> None:
        """Remove only ``value``: UPSERT the remaining values, or DELETE the record if none remain."""
        zone_id = self._zone_for(domain)
        fqdn = challenge_name(domain)
        ttl, values = self._txt_record(zone_id, fqdn)
        if value not in values:
            log.info("%s TXT %s no longer holds the value; nothing to remove", self._label(zone_id), fqdn)
            return
        rest = [v for v in values if v != value]
        if rest:
            self._change(zone_id, "UPSERT", fqdn, ttl, rest, f"remove one TXT value at {fqdn}")
        else:
            self._change(zone_id, "DELETE", fqdn, ttl, values, f"delete TXT {fqdn}")
        log.info("%s removed one TXT value at %s (%d left)", self._label(zone_id), fqdn, len(rest))

    def timeout(self) -> tuple[float, float]:
        """(total, poll interval) for callers that poll on their side too."""
        return self.propagation_timeout, self.poll_interval

    # --- zones --------------------------------------------------------------------

    def _zone_for(self, domain: str) -> str:
        """Id of the hosted zone holding the challenge name; a clear refusal otherwise."""
        fqdn = challenge_name(domain)
        zones = self._known_zones()
        if self.hosted_zone_id:
            name = zones[self.hosted_zone_id]
            if not _within(fqdn, name):
                raise ZoneNotFoundError(f"{self._prefix()} {domain!r} is outside hosted zone {name!r}")
            return self.hosted_zone_id
        matches = [(len(name), zone_id) for zone_id, name in zones.items() if _within(fqdn, name)]
        if not matches:
            known = ", ".join(sorted(zones.values())) or "none"
            raise ZoneNotFoundError(f"{self._prefix()} no hosted zone holds {domain!r} (public zones: {known})")
        return max(matches)[1]

    def _known_zones(self) -> dict[str, str]:
        """Zone id -> name: the configured zone, or every public zone; fetched once per block."""
        if self._zones is None:
            self._zones = self._fetch_configured_zone() if self.hosted_zone_id else self._fetch_public_zones()
        return self._zones

    def _fetch_configured_zone(self) -> dict[str, str]:
        with aws_errors(self._label(), f"get hosted zone {self.hosted_zone_id}", Route53Error):
            zone = self._route53().get_hosted_zone(Id=self.hosted_zone_id)["HostedZone"]
        return {self.hosted_zone_id: _bare(zone["Name"])}

    def _fetch_public_zones(self) -> dict[str, str]:
        """All public zones, page by page (private zones answer only inside a VPC: the CA never sees them)."""
        zones: dict[str, str] = {}
        kwargs: dict[str, str] = {}
        with aws_errors(self._label(), "list hosted zones", Route53Error):
            while True:
                page = self._route53().list_hosted_zones_by_name(**kwargs)
                for zone in page["HostedZones"]:
                    if not zone.get("Config", {}).get("PrivateZone"):
                        zones[_zone_id(zone["Id"])] = _bare(zone["Name"])
                if not page.get("IsTruncated"):
                    return zones
                kwargs = {"DNSName": page["NextDNSName"], "HostedZoneId": page["NextHostedZoneId"]}

    # --- records and changes --------------------------------------------------------

    def _txt_record(self, zone_id: str, fqdn: str) -> tuple[int, list[str]]:
        """(ttl, values) of the TXT record set at ``fqdn``; ``(ttl, [])`` when there is none."""
        with aws_errors(self._label(zone_id), f"read TXT {fqdn}", Route53Error):
            page = self._route53().list_resource_record_sets(
                HostedZoneId=zone_id, StartRecordName=fqdn + ".", StartRecordType="TXT", MaxItems="1"
            )
        for rrset in page["ResourceRecordSets"]:
            if _bare(rrset["Name"]) == fqdn and rrset["Type"] == "TXT":
                return int(rrset.get("TTL", self.ttl)), [_unquote(r["Value"]) for r in rrset["ResourceRecords"]]
        return self.ttl, []

    def _change(self, zone_id: str, action: str, fqdn: str, ttl: int, values: list[str], what: str) -> str:
        """One ChangeResourceRecordSets call; returns the change id to poll."""
        batch = {
            "Comment": f"certfleet dns-01 {action.lower()} {fqdn}",
            "Changes": [{
                "Action": action,
                "ResourceRecordSet": {
                    "Name": fqdn + ".",
                    "Type": "TXT",
                    "TTL": ttl,
                    "ResourceRecords": [{"Value": _quote(v)} for v in values],
                },
            }],
        }  # fmt: skip
        with aws_errors(self._label(zone_id), what, Route53Error):
            reply = self._route53().change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch=batch)
        return reply["ChangeInfo"]["Id"]

    def _wait_insync(self, zone_id: str, change_id: str) -> None:
        """Wait for INSYNC with boto3's own ``resource_record_sets_changed`` waiter.

        The waiter's default (30 s between GetChange calls, 60 tries) is tuned down to
        ``poll_interval`` and bounded by ``propagation_timeout``.
        """
        from botocore.exceptions import WaiterError

        delay = max(self.poll_interval, 0.1)
        attempts = max(1, math.ceil(self.propagation_timeout / delay) + 1)
        waiter = self._route53().get_waiter("resource_record_sets_changed")
        try:
            waiter.wait(Id=change_id, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})
        except WaiterError as exc:  # timeouts and API errors alike arrive as WaiterError
            status = (exc.last_response or {}).get("ChangeInfo", {}).get("Status")
            if status:
                raise Route53Error(
                    f"{self._prefix(zone_id)} change {change_id} still {status} after {self.propagation_timeout:g}s"
                ) from None
            error = (exc.last_response or {}).get("Error", {})
            raise Route53Error(f"{self._prefix(zone_id)} get change {change_id}: "
                               f"{error.get('Code', 'error')}: {error.get('Message', exc)}") from None

    def _wait_served(self, zone_id: str, fqdn: str, value: str) -> None:
        """After INSYNC, the optional check that the given nameservers serve the value."""
        if not self.nameservers:
            return
        try:
            wait_for_txt(fqdn, value, [_server(s) for s in self.nameservers], timeout=self.propagation_timeout)
        except PropagationTimeout as exc:
            raise Route53Error(f"{self._prefix(zone_id)} change INSYNC but {exc}") from None

    # --- plumbing -------------------------------------------------------------------

    def _route53(self):
        """One boto3 client per block instance (building one costs ~50 ms)."""
        if self._client is None:
            self._client = self.credentials.get_client("route53")
        return self._client

    def _label(self, zone_id: str | None = None) -> str:
        return f"route53 solver '{zone_id or self.hosted_zone_id or 'auto'}'"

    def _prefix(self, zone_id: str | None = None) -> str:
        return self._label(zone_id) + ":"



def _within(fqdn: str, zone: str) -> bool:
    return fqdn == zone or fqdn.endswith("." + zone)


def _bare(name: str) -> str:
    """Route 53 names end with a dot and may escape characters; compare them bare, lower-case."""
    return name.rstrip(".").lower().replace("\\052", "*")


def _zone_id(raw: str) -> str:
    """'/hostedzone/Z123' -> 'Z123' (the form GetHostedZone and the console show)."""
    return raw.rsplit("/", 1)[-1]


def _quote(value: str) -> str:
    """Route 53 wants TXT strings in double quotes, with quotes and backslashes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(raw: str) -> str:
    """Inverse of ``_quote``; several quoted strings (long values) are joined."""
    parts = _QUOTED.findall(raw)
    if not parts:
        return raw
    return "".join(re.sub(r"\\(.)", r"\1", p) for p in parts)


def _server(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":") if spec.count(":") == 1 else (spec, "", "53")
    return host, int(port or 53)
