"""No private key anywhere but the store and the key files targets exist to hold.

Run the lifecycle for real, then search everything Prefect recorded (its database:
flow and task parameters, states, logs, events, artifacts; its result storage), the
process's own log output, and every file certfleet wrote outside the store, for any
piece of any private key certfleet created or used. This test must stay green forever.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.services

_PEM_BODY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n(.+?)-----END", re.DOTALL)


def _secret_bytes(key) -> bytes:
    """The part of a key that is secret (the public half also sits in certificates)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        n = key.private_numbers().private_value
        return n.to_bytes((key.curve.key_size + 7) // 8, "big")
    if isinstance(key, rsa.RSAPrivateKey):
        d = key.private_numbers().d
        return d.to_bytes((d.bit_length() + 7) // 8, "big")
    raise TypeError(type(key))


def key_fragments(pem_files: list[Path]) -> set[bytes]:
    """Pieces that any leak of these keys contains: base64 runs of the PEM that encode
    only secret bytes, and the secret as hex. Public-key bytes are excluded on purpose:
    a PKCS#8 EC key carries its public point, which every certificate also shows."""
    import base64

    from certfleet import pki

    out: set[bytes] = set()
    for path in pem_files:
        pem = path.read_bytes()
        for body in _PEM_BODY.findall(pem):
            b64 = b"".join(body.split())
            der = base64.b64decode(b64)
            secret = _secret_bytes(pki.load_private_key(pem))
            start = der.find(secret)
            assert start >= 0
            end = start + len(secret)
            out.add(secret.hex().encode())
            width = 16
            for a in range(len(b64) - width):
                first, last = (6 * a) // 8, (6 * (a + width) - 1) // 8
                if start <= first and last < end:
                    out.add(b64[a:a + width])
    return out


def leaks_in(blob: bytes, fragments: set[bytes]) -> list[str]:
    found = []
    if b"PRIVATE KEY-----" in blob:
        found.append("a PEM private-key header")
    flat = blob.replace(b"\r", b"").replace(b"\n", b"").replace(b"\\n", b"")
    found += [f"key fragment {f[:8].decode()}..." for f in fragments if f in blob or f in flat]
    return found


def test_no_private_key_material_outside_the_store(prefect_harness, fleet, capfd, tmp_path):
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH

    from certfleet.flows.lifecycle import lifecycle

    state = lifecycle(inventory=str(fleet["inventory"]), verify_deadline=20, return_state=True)
    assert state.is_completed(), state.message

    store_root = tmp_path / "store"
    secrets = sorted(store_root.rglob("key.pem")) + sorted((store_root / "_accounts").glob("*.key"))
    assert len(secrets) >= 2, "expected the certificate key and the ACME account key"
    fragments = key_fragments(secrets)
    assert fragments

    # The files targets exist to hold keys in (and their backups) are the product.
    allowed = {fleet["prod"] / "shop.key", fleet["prod"] / "shop.key.certfleet-previous",
               fleet["staging"] / "shop.key"}
    places: dict[str, bytes] = {}
    for path in tmp_path.rglob("*"):
        if path.is_file() and store_root not in path.parents and path not in allowed:
            places[str(path)] = path.read_bytes()

    db = Path(urlparse(prefect_harness["db_url"].replace("sqlite+aiosqlite", "sqlite")).path)
    db_files = list(db.parent.glob(db.name + "*"))
    assert db_files, f"Prefect database not found at {db}"
    for path in db_files:
        places[f"prefect db {path.name}"] = path.read_bytes()
    for root in {Path(PREFECT_LOCAL_STORAGE_PATH.value()), Path(PREFECT_HOME.value())}:
        if root.exists():
            for path in root.rglob("*"):
                if path.is_file():
                    places[f"prefect {path}"] = path.read_bytes()
    out, err = capfd.readouterr()
    places["captured stdout"] = out.encode()
    places["captured stderr"] = err.encode()

    # The search must be able to find a leak: the database does hold our run's data.
    db_blob = b"".join(places[k] for k in places if k.startswith("prefect db"))
    assert b"lifecycle" in db_blob and b"production-lb" in db_blob

    problems = {where: leaks_in(blob, fragments) for where, blob in places.items()}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, f"private key material found in: {problems}"


def test_leak_detector_finds_a_planted_leak(tmp_path):
    """The detector itself works: a key pasted into a log is found."""
    from certfleet import keys

    key_file = tmp_path / "key.pem"
    key_file.write_bytes(keys.key_to_pem(keys.generate_key()))
    fragments = key_fragments([key_file])
    body = key_file.read_bytes().split(b"\n")[1]
    assert leaks_in(b"log line: oops " + body + b" end", fragments)
    assert not leaks_in(b"an innocent log line", fragments)
