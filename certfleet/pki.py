"""X.509 helpers: parse, describe, order, match, cover, verify.

Everything here is pure: bytes and certificates in, facts or ``CheckResult`` out.
Chain validation uses ``cryptography.x509.verification`` (RFC 5280 path building, the
same rules a browser applies), so "valid" here means valid to a user.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certfleet.models import CertificateInfo, CheckResult

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.+?\r?\n-----END \1-----", re.DOTALL
)
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class PemError(ValueError):
    """A PEM bundle that cannot be used; the message says what is wrong with it."""


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def load_certs(pem: bytes | str) -> list[x509.Certificate]:
    """Every CERTIFICATE block in ``pem``, in file order. Raises PemError on garbage."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return []
    try:  # one call into the Rust loader: the common case, every block good
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        pass  # find the bad block and say which
    certs: list[x509.Certificate] = []
    for index, m in enumerate(_PEM_BLOCK.finditer(data)):
        if m.group(1) != b"CERTIFICATE":
            continue
        try:
            certs.append(x509.load_pem_x509_certificate(m.group(0)))
        except ValueError as exc:
            raise PemError(f"PEM block {index}: not a valid certificate ({exc})") from None
    return certs


def split_bundle(pem: bytes) -> tuple[list[x509.Certificate], list[bytes]]:
    """Split a bundle in any order into certificates and private-key PEM blocks."""
    certs = load_certs(pem)
    keys = [m.group(0) for m in _PEM_BLOCK.finditer(pem) if m.group(1).endswith(b"PRIVATE KEY")]
    if not certs and not keys:
        raise PemError("no PEM certificate or private key found")
    return certs, keys


def load_private_key(pem: bytes, password: bytes | None = None):
    try:
        return serialization.load_pem_private_key(pem, password=password)
    except (ValueError, TypeError) as exc:
        # The exception text of cryptography never contains the key, but keep ours short.
        raise PemError(f"private key cannot be loaded: {type(exc).__name__}") from None


def order_chain(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """Leaf first, then each issuer in turn. Raises PemError if there is no single leaf.

    Bundles arrive in any order (concatenated by hand, or root first). The leaf is the
    one certificate that issued none of the others.
    """
    if not certs:
        raise PemError("no certificate in bundle")
    unique: dict[bytes, x509.Certificate] = {}
    for c in certs:
        unique.setdefault(c.fingerprint(hashes.SHA256()), c)
    pool = list(unique.values())
    issuers = {c.issuer.public_bytes() for c in pool if c.issuer != c.subject}
    leaves = [c for c in pool if c.subject.public_bytes() not in issuers or not _is_ca(c)]
    leaves = [c for c in leaves if not _is_ca(c)] or leaves
    if len(leaves) != 1:
        raise PemError(f"bundle has {len(leaves)} leaf certificates, expected exactly one")
    chain = [leaves[0]]
    rest = [c for c in pool if c is not leaves[0]]
    while rest:
        parent = next((c for c in rest if c.subject == chain[-1].issuer), None)
        if parent is None:
            break
        chain.append(parent)
        rest.remove(parent)
    return chain


def leaf(certs: list[x509.Certificate]) -> x509.Certificate:
    """The leaf of a bundle in any order: what ``order_chain(certs)[0]`` returns.

    Cheap for the usual bundle (one end-entity certificate among CA certificates):
    no fingerprints, no name matching. Anything else takes the full ordering, and
    its errors. Asking 1,000 targets what they hold is 1,000 of these.
    """
    ends = [c for c in certs if not _is_ca(c)]
    return ends[0] if len(ends) == 1 else order_chain(certs)[0]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value.ca)
    except x509.ExtensionNotFound:
        return False


def _public_key_der(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_matches(cert: x509.Certificate, private_key) -> bool:
    """True when ``private_key`` is the key of ``cert`` (compares public keys)."""
    return _public_key_der(cert.public_key()) == _public_key_der(private_key.public_key())


def key_type_of(key) -> str:
    """'ec-p256', 'rsa-2048', ... for a public or private key."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(key.curve.name, f"ec-{key.curve.name}")
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"rsa-{key.key_size}"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    return type(key).__name__


def sans_of(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return ()
    names = [n.lower() for n in ext.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return tuple(names)


def describe(cert: x509.Certificate) -> CertificateInfo:
    spki = _public_key_der(cert.public_key())
    return CertificateInfo(
        serial=serial_hex(cert),
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=sans_of(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_type=key_type_of(cert.public_key()),
        public_key_sha256=hashlib.sha256(spki).hexdigest(),
        is_ca=_is_ca(cert),
        self_signed=cert.issuer == cert.subject,
    )


def common_name(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


def is_valid_dns_name(name: str, *, allow_wildcard: bool = True) -> bool:
    """RFC 1123 host name, optionally with one leading ``*.`` label."""
    if not name or len(name) > 253 or name != name.strip():
        return False
    labels = name.lower().rstrip(".").split(".")
    if allow_wildcard and labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            return False
    return all(_DNS_LABEL.match(label) for label in labels)


def san_covers(sans: tuple[str, ...] | list[str], hostname: str) -> bool:
    """Whether a certificate with ``sans`` is valid for ``hostname`` (RFC 6125).

    A wildcard covers exactly one left-most label: ``*.example.com`` covers
    ``a.example.com`` but neither ``example.com`` nor ``a.b.example.com``.
    """
    host = hostname.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        return str(ip) in sans
    except ValueError:
        pass
    for san in sans:
        san = san.lower().rstrip(".")
        if san == host:
            return True
        if san.startswith("*.") and "." in host:
            first, rest = host.split(".", 1)
            if first and rest == san[2:]:
                return True
    return False


def uncovered(sans, hostnames) -> list[str]:
    """The hostnames ``sans`` do not cover, in the order given."""
    return [h for h in hostnames if not san_covers(sans, h)]


def verify_chain(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    roots: list[x509.Certificate],
    hostname: str | None,
    at: datetime | None = None,
) -> CheckResult:
    """Validate ``leaf`` + ``intermediates`` to one of ``roots`` as a TLS client would.

    Returns a CheckResult whose ``reason`` is one of OK, EXPIRED, NOT_YET_VALID,
    SELF_SIGNED, HOSTNAME_MISMATCH, INCOMPLETE_CHAIN, UNTRUSTED_CHAIN. The checks that
    explain a failure best run first, so a user reads "expired", not "path error".
    """
    at = at or datetime.now(timezone.utc)
    info = describe(leaf)
    if at > info.not_after:
        return CheckResult(False, "EXPIRED", f"certificate {info.serial} expired at {info.not_after:%Y-%m-%d %H:%M:%SZ}")
    if at < info.not_before:
        return CheckResult(False, "NOT_YET_VALID", f"certificate {info.serial} is not valid before {info.not_before:%Y-%m-%d %H:%M:%SZ}")
    if hostname is not None and not san_covers(info.sans, hostname):
        return CheckResult(False, "HOSTNAME_MISMATCH", f"certificate {info.serial} (SANs {', '.join(info.sans) or 'none'}) does not cover {hostname}")
    root_fps = {r.fingerprint(hashes.SHA256()) for r in roots}
    if info.self_signed and leaf.fingerprint(hashes.SHA256()) not in root_fps:
        return CheckResult(False, "SELF_SIGNED", f"certificate {info.serial} is self-signed and not in the trust bundle")
    if not roots:
        return CheckResult(False, "UNTRUSTED_CHAIN", "no trust roots configured")
    builder = PolicyBuilder().store(Store(roots)).time(at)
    try:
        # Without a hostname we still validate as a TLS *server* certificate (serverAuth
        # EKU), naming the leaf's own first SAN: name coverage is a separate check.
        name = hostname if hostname is not None else (info.sans[0] if info.sans else None)
        if name is None:
            return CheckResult(False, "HOSTNAME_MISMATCH", f"certificate {info.serial} has no subjectAltName")
        builder.build_server_verifier(_subject_for(name.replace("*", "wildcard", 1))).verify(leaf, intermediates)
    except VerificationError as exc:
        if _issuer_missing(leaf, intermediates, roots):
            return CheckResult(False, "INCOMPLETE_CHAIN", f"certificate {info.serial}: the issuer '{leaf.issuer.rfc4514_string()}' is not served and not a trusted root (missing intermediate)")
        return CheckResult(False, "UNTRUSTED_CHAIN", f"certificate {info.serial}: {exc}")
    return CheckResult(True, "OK", f"certificate {info.serial} valid for {hostname or 'client use'} until {info.not_after:%Y-%m-%d %H:%M:%SZ}")


def _subject_for(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname.strip("[]")))
    except ValueError:
        return x509.DNSName(hostname.rstrip("."))


def _issuer_missing(leaf, intermediates, roots) -> bool:
    """True when the server sent only the leaf and its issuer is not a trusted root.

    That is the classic missing-intermediate outage. When intermediates are sent but
    lead to a root we do not trust, the chain is untrusted, not incomplete.
    """
    if intermediates:
        return False
    return leaf.issuer not in {r.subject for r in roots}


_system_roots: list | None = None


def system_roots() -> list[x509.Certificate]:
    """This machine's trust store (what clients of public CAs trust), parsed once.

    The OpenSSL default CA file (Debian: /etc/ssl/certs/ca-certificates.crt); a block
    that does not parse is skipped. Empty when the machine has no store.
    """
    global _system_roots
    if _system_roots is None:
        import ssl

        found: list[x509.Certificate] = []
        cafile = ssl.get_default_verify_paths().cafile
        try:
            data = open(cafile, "rb").read() if cafile else b""
        except OSError:
            data = b""
        import warnings

        try:
            with warnings.catch_warnings():  # old roots with negative serials: still usable
                warnings.simplefilter("ignore")
                found = x509.load_pem_x509_certificates(data) if data else []
        except ValueError:
            for m in _PEM_BLOCK.finditer(data):
                try:
                    found.append(x509.load_pem_x509_certificate(m.group(0)))
                except ValueError:
                    continue
        _system_roots = found
    return list(_system_roots)


def to_pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
