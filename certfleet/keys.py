"""Private keys and CSRs. The only module that creates key bytes.

Key PEM is returned as ``bytes`` and handed straight to the store or a target; nothing
here logs, and nothing here returns a key inside a record that might be printed.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certfleet.models import KeyType


def generate_key(key_type: KeyType | str = KeyType.EC_P256):
    kt = KeyType(key_type)
    if kt is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if kt is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=int(kt.value.split("-")[1]))


def key_to_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_csr(key, domains: list[str] | tuple[str, ...]) -> bytes:
    """A CSR for ``domains`` (first one as CN, all as SANs), PEM encoded."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
        if len(domains[0]) <= 64
        else x509.Name([])
    ).add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
