"""Discovery source: certificates in local files (globs), e.g. /etc/nginx/tls/*.pem."""

from __future__ import annotations

import glob

from prefect.blocks.core import Block
from pydantic import Field

from certfleet import pki
from certfleet.fleet import Discovered


class FilesDiscovery(Block):
    _block_type_name = "certfleet files discovery"
    _block_type_slug = "certfleet-files-discovery"
    _description = "Finds certificates in local PEM files matching glob patterns."

    paths: list[str] = Field(description="Glob patterns of PEM files, e.g. ['/etc/nginx/tls/*.pem']; '**' recurses")

    def scan(self) -> list[Discovered]:
        found = []
        for pattern in self.paths:
            for path in sorted(glob.glob(pattern, recursive=True)):
                try:
                    with open(path, "rb") as f:
                        certs = pki.load_certs(f.read())
                    leaf = pki.leaf(certs) if certs else None
                except (OSError, pki.PemError):
                    continue  # not a certificate file (a key, a config): not ours to judge
                info = pki.describe(leaf) if leaf is not None else None
                if info is not None and not info.is_ca:  # a trust bundle is not a served certificate
                    found.append(Discovered("files", path, info))
        return found
