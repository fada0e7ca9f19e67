"""``certfleet import``: adopt certificates already in service into the store."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from certfleet.cli.base import EXIT_OK, Progress, UsageError, dump

@dataclasses.dataclass
class _Adoption:
    name: str
    cert_file: str
    key_file: str
    fullchain: bytes
    key: bytes
    info: Any
    note: str


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read {what} ({exc.strerror})") from None


def _check_adoption(inv, store, name: str, cert_file: str, key_file: str, now: datetime) -> _Adoption:
    """Every check before anything is written; errors name the certificate and the file."""
    from certfleet import pki, policy

    try:
        spec = inv.certificate(name)
    except KeyError:
        known = ", ".join(c.name for c in inv.certificates)
        raise UsageError(f"{inv.source}: no certificate named '{name}' (known: {known}); add it to the inventory first") from None
    label = f"import '{name}'"
    pem, key_pem = _read(cert_file, "the certificate"), _read(key_file, "the private key")
    try:
        certs = pki.load_certs(pem)
    except pki.PemError as exc:
        raise UsageError(f"{label}: {cert_file}: {exc}") from None
    if not certs:
        raise UsageError(f"{label}: {cert_file}: no PEM certificate in it")
    try:
        chain = pki.order_chain(certs)
    except Exception as exc:  # noqa: BLE001 - a bundle with two leaves, say
        raise UsageError(f"{label}: {cert_file}: {exc}") from None
    try:
        key = pki.load_private_key(key_pem)
    except pki.PemError as exc:
        raise UsageError(f"{label}: {key_file}: {exc} (an encrypted key must be decrypted first)") from None
    leaf = chain[0]
    serial = pki.serial_hex(leaf)
    info = pki.describe(leaf)
    # The one "safe to ship?" chain (certfleet.policy): the same checks renewal and
    # preflight apply. Roots: the inventory's trust bundle, else this machine's store.
    from certfleet import distribution

    bundle = inv.trust_bundle_for(spec)
    try:
        roots = distribution.load_roots(bundle)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{label}: trust bundle {bundle}: cannot read ({getattr(exc, 'strerror', None) or exc}); nothing written") from None
    check = policy.safe_to_ship(policy.DistributeInput(
        certificate=name, fullchain_pem=pem, key_pem=key_pem, hostnames=tuple(d.lower() for d in spec.domains),
        roots=None if roots is None else tuple(roots), now=now))
    if not check.ok:
        hint = " (run `certfleet renew` instead)" if check.reason == "EXPIRED" else ""
        which = key_file if check.reason == "KEY_MISMATCH" else cert_file
        raise UsageError(f"{label}: {which}: {check.reason}: {check.message}{hint}; nothing written")
    cur = store.current(name)
    if cur is not None and cur.serial != serial:
        raise UsageError(f"{label}: the store already has version {cur.serial} of '{name}' as current; "
                         "import adopts certificates certfleet does not manage yet; nothing written")
    check = policy.needs_reissue(policy.ReissueInput(tuple(spec.domains), str(spec.key_type), info, now))
    note = f"next renewal: {check.message}" if check.ok else f"the next `certfleet renew` reissues it ({check.reason}: {check.message})"
    return _Adoption(name, cert_file, key_file, pki.to_pem(chain), key_pem, info, note)


def cmd_import(args) -> int:
    if args.from_endpoint:
        raise UsageError("--from-endpoint is not possible: a TLS handshake gives the certificate, never its private key. "
                         "Import from the PEM files the server reads (--cert FILE --key FILE --name NAME), "
                         "or let `certfleet renew` issue a new certificate")
    names, certs, keys = args.name or [], args.cert or [], args.key or []
    if not names or not (len(names) == len(certs) == len(keys)):
        raise UsageError("import needs --name, --cert and --key, once per certificate (got "
                         f"{len(names)} --name, {len(certs)} --cert, {len(keys)} --key)")
    from certfleet.blocks import registry
    from certfleet import inventory

    inv = inventory.load(args.inventory)
    store = registry.store(inv)
    now = datetime.now(timezone.utc)
    total = len(names)
    bar = Progress(total * 2) if total > 1 else None
    plan = []
    for i, (n, c, k) in enumerate(zip(names, certs, keys), 1):  # every check first: all or nothing
        plan.append(_check_adoption(inv, store, n, c, k, now))
        if bar:
            bar.step(i, f"checked {n}")
    dupes = sorted({a.name for a in plan if [p.name for p in plan].count(a.name) > 1})
    if dupes:
        raise UsageError(f"import: {', '.join(dupes)} given more than once")
    results = []
    for i, a in enumerate(plan, 1):
        version = store.put(a.name, a.fullchain, a.key, issuer=f"imported:{Path(a.cert_file).name}")
        results.append({"certificate": a.name, "serial": version.serial, "not_after": a.info.not_after,
                        "sans": list(a.info.sans), "note": a.note})
        if bar:
            bar.step(total + i, f"stored {a.name}")
    if bar:
        bar.close()
    if args.json:
        dump({"imported": results})
    else:
        for r in results:
            print(f"imported '{r['certificate']}' serial {r['serial']} (expires {r['not_after']:%Y-%m-%d %H:%M}Z); {r['note']}")
    return EXIT_OK


def register(add) -> None:
    sp = add("import", "adopt certificates already in service: put their PEM files into the store", """
        Examples:
          certfleet import --name shop --cert /etc/nginx/tls/shop.pem --key /etc/nginx/tls/shop.key
          certfleet import --name shop --cert shop.pem --key shop.key --name api --cert api.pem --key api.key

        Every pair is checked before anything is written: the key matches the
        certificate and is strong enough (RSA >= 2048, EC P-256/P-384), NAME is in the
        inventory, the certificate is inside its validity window, its chain validates
        to the trust bundle (else this machine's trust store), its names cover every
        domain the inventory lists for it and are valid names, and the store has no
        other current version of it. Any failure: one line, exit 2, nothing written.

        There is no --from-endpoint: a TLS handshake yields the certificate, never its
        private key. To watch certificates you cannot import, list their endpoints (or
        a discovery source) and use `certfleet status`. See docs/adopting.md.""",
        cmd_import, json_=True)
    sp.add_argument("--name", action="append", metavar="NAME", help="inventory certificate name (repeatable, paired in order with --cert/--key)")
    sp.add_argument("--cert", action="append", metavar="FILE", help="PEM certificate, or full chain leaf first")
    sp.add_argument("--key", action="append", metavar="FILE", help="PEM private key (unencrypted)")
    sp.add_argument("--from-endpoint", metavar="HOST:PORT", help="not possible (no private key over the wire); exits 2 saying so")
