"""Encryption at rest of the local store's private keys (AES-256-GCM envelope)."""

from __future__ import annotations

import base64
import os
import shutil

import pytest
from cryptography.hazmat.primitives import serialization

from certfleet import localca, pki
from certfleet.store import (
    ENCRYPTED_KEY_FILE,
    KEY_FILE,
    CertificateStore,
    KeyEnvelope,
    LocalStore,
    StoreError,
    key_id,
    parse_encryption_keys,
)

K1, K2 = os.urandom(32), os.urandom(32)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return localca.LocalCA.create(tmp_path_factory.mktemp("ca"))


def key_material(key_pem: bytes) -> list[bytes]:
    """Every spelling of the key a leak could take: PEM lines, DER, raw private value."""
    lines = [ln for ln in key_pem.splitlines() if ln and not ln.startswith(b"-----")]
    key = pki.load_private_key(key_pem)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    raw = key.private_numbers().private_value.to_bytes(32, "big")
    return lines + [der, raw, base64.b64encode(raw)]


def test_encrypted_round_trip_writes_no_key_material(tmp_path, ca):
    store = LocalStore(tmp_path, encryption_keys=[K1])
    chain, key = ca.issue(["shop.test"])
    v = store.put("shop", chain, key)
    assert isinstance(store, CertificateStore)
    assert store.load_key("shop", v.serial) == key
    assert not (v.path / KEY_FILE).exists()
    on_disk = (v.path / ENCRYPTED_KEY_FILE).read_bytes()
    assert (v.path / ENCRYPTED_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" not in on_disk and b"-----BEGIN" not in on_disk
    assert not any(m in on_disk for m in key_material(key))
    assert K1 not in on_disk and base64.b64encode(K1) not in on_disk
    assert store.load_fullchain("shop", v.serial).startswith(b"-----BEGIN CERTIFICATE-----")


def test_wrong_or_missing_key_is_a_clear_error(tmp_path, ca):
    chain, key = ca.issue(["shop.test"])
    v = LocalStore(tmp_path, encryption_keys=[K1]).put("shop", chain, key)
    with pytest.raises(StoreError) as wrong:
        LocalStore(tmp_path, encryption_keys=[K2]).load_key("shop", v.serial)
    msg = str(wrong.value)
    assert f"certificate 'shop' serial {v.serial}" in msg and "cannot decrypt" in msg
    assert key_id(K1) in msg and key_id(K2) in msg
    assert not any(m.decode("latin-1") in msg for m in key_material(key)) and "PRIVATE" not in msg
    with pytest.raises(StoreError, match=f"certificate 'shop' serial {v.serial}: .*no encryption key is configured"):
        LocalStore(tmp_path).load_key("shop", v.serial)


def test_key_file_copied_to_another_version_or_certificate_fails(tmp_path, ca):
    store = LocalStore(tmp_path, encryption_keys=[K1])
    v1 = store.put("shop", *ca.issue(["shop.test"]))
    v2 = store.put("shop", *ca.issue(["shop.test"]))
    other = store.put("blog", *ca.issue(["blog.test"]))
    shutil.copy(v1.path / ENCRYPTED_KEY_FILE, v2.path / ENCRYPTED_KEY_FILE)
    with pytest.raises(StoreError, match=f"serial {v2.serial}: cannot decrypt.*copied from another version"):
        store.load_key("shop", v2.serial)
    shutil.copy(v1.path / ENCRYPTED_KEY_FILE, other.path / ENCRYPTED_KEY_FILE)
    with pytest.raises(StoreError, match="certificate 'blog'"):
        store.load_key("blog", other.serial)


def test_rotation_first_key_encrypts_all_keys_decrypt(tmp_path, ca):
    (c1, k1), (c2, k2) = ca.issue(["shop.test"]), ca.issue(["shop.test"])
    v1 = LocalStore(tmp_path, encryption_keys=[K1]).put("shop", c1, k1)
    rotated = LocalStore(tmp_path, encryption_keys=[K2, K1])
    assert rotated.load_key("shop", v1.serial) == k1
    v2 = rotated.put("shop", c2, k2)
    assert key_id(K2).encode() in (v2.path / ENCRYPTED_KEY_FILE).read_bytes()
    only_new = LocalStore(tmp_path, encryption_keys=[K2])
    assert only_new.load_key("shop", v2.serial) == k2
    with pytest.raises(StoreError, match="cannot decrypt"):
        only_new.load_key("shop", v1.serial)


def test_plain_versions_stay_readable_after_encryption_is_switched_on(tmp_path, ca):
    chain, key = ca.issue(["shop.test"])
    v = LocalStore(tmp_path).put("shop", chain, key)
    assert (v.path / KEY_FILE).exists()
    assert LocalStore(tmp_path, encryption_keys=[K1]).load_key("shop", v.serial) == key


def test_encryption_key_text_is_parsed_without_echoing_it():
    b1, b2 = base64.b64encode(K1).decode(), base64.b64encode(K2).decode()
    assert parse_encryption_keys(f" {b1} , {b2} ") == [K1, K2]
    short = base64.b64encode(b"x" * 16).decode()
    with pytest.raises(StoreError, match=r"store key: key #2 is 16 bytes; AES-256 needs 32") as exc:
        parse_encryption_keys(f"{b1},{short}", "store key")
    assert short not in str(exc.value)
    with pytest.raises(StoreError, match="key #1 is not valid base64"):
        parse_encryption_keys("not*base64")
    with pytest.raises(StoreError, match="no key given"):
        parse_encryption_keys(" , ")
    with pytest.raises(StoreError, match="32 bytes"):
        KeyEnvelope([b"short"])
    assert b1 not in repr(KeyEnvelope([K1])) and key_id(K1) in repr(KeyEnvelope([K1]))
