"""Discovery source: TLS endpoints, each asked for one or many SNI names (IPv4 or IPv6)."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field

from certfleet.fleet import Discovered
from certfleet.inventory import EndpointSpec
from certfleet.models import Endpoint
from certfleet.probe import probe_sync


class TlsDiscovery(Block):
    _block_type_name = "certfleet tls discovery"
    _block_type_slug = "certfleet-tls-discovery"
    _description = "Finds the certificates TLS endpoints serve for each of the given server names."

    endpoints: list[str] = Field(description="host:port or [v6]:port addresses to connect to")
    sni: list[str] = Field(description="Server names to ask each endpoint for")
    concurrency: int = Field(200, description="Handshakes in flight at once")
    timeout: float = Field(5.0, description="Seconds for connect and for handshake, each")

    def scan(self) -> list[Discovered]:
        targets = []
        for spec in self.endpoints:
            parsed = EndpointSpec.parse(spec)
            targets += [Endpoint(parsed["host"], parsed["port"], name) for name in self.sni]
        results = probe_sync(targets, roots=[], concurrency=self.concurrency,
                             connect_timeout=self.timeout, handshake_timeout=self.timeout)
        return [Discovered("tls", str(r.endpoint), r.leaf) for r in results if r.leaf is not None]
