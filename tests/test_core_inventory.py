"""The inventory file: errors name the file, the path and the field."""

import pytest

from certfleet import inventory

GOOD = """
issuers:
  pebble: {kind: acme, directory_url: "https://127.0.0.1:14000/dir", solver: {kind: challtestsrv, url: "http://127.0.0.1:8055"}}
targets:
  prod: {kind: file, fullchain_path: /tmp/x.pem, key_path: /tmp/x.key}
certificates:
  - name: shop
    domains: [shop.test, www.shop.test]
    issuer: pebble
    targets: [prod]
    endpoints: ["127.0.0.1:8443", "www.shop.test@[::1]:8443"]
"""


def test_good_inventory_parses():
    inv = inventory.parse(GOOD)
    cert = inv.certificate("shop")
    eps = cert.endpoint_list()
    assert [(e.host, e.port, e.sni) for e in eps] == [("127.0.0.1", 8443, "shop.test"), ("::1", 8443, "www.shop.test")]
    assert str(cert.key_type) == "ec-p256"


def _errors(text):
    with pytest.raises(inventory.InventoryError) as exc:
        inventory.parse(text)
    return str(exc.value)


def test_bad_dns_name_names_file_path_and_field():
    text = GOOD.replace("[shop.test, www.shop.test]", "[shop.test, 'exa mple.com']")
    assert "inventory.yaml: certificates[0].domains[1]: 'exa mple.com' is not a valid DNS name" in _errors(text)


def test_unknown_issuer_and_target():
    text = GOOD.replace("issuer: pebble", "issuer: pebbel").replace("targets: [prod]", "targets: [prd]")
    err = _errors(text)
    assert "certificates[0].issuer: unknown issuer 'pebbel' (known: pebble)" in err
    assert "certificates[0].targets[0]: unknown target 'prd' (known: prod)" in err


def test_malformed_yaml_says_where():
    assert "inventory.yaml: line" in _errors("issuers: [\n  - a: b\n certificates")


def test_inline_secret_is_refused():
    text = GOOD.replace("kind: acme,", "kind: acme, eab_hmac_key: s3cr3t,")
    err = _errors(text)
    assert "issuers.pebble.eab_hmac_key: secrets are never inline" in err
    assert "s3cr3t" not in err


def test_secret_reference_is_accepted():
    inventory.parse(GOOD.replace("kind: acme,", "kind: acme, eab_hmac_key: {env: EAB_KEY},"))


def test_wrong_type_and_unknown_field():
    err = _errors(GOOD.replace("issuer: pebble", "issuer: pebble\n    colour: red").replace("key_type", "x"))
    assert "certificates[0].colour: Extra inputs are not permitted" in err
    err = _errors(GOOD.replace("domains: [shop.test, www.shop.test]", "domains: [shop.test]\n    key_type: dsa-1024"))
    assert "certificates[0].key_type:" in err


def test_endpoint_sni_not_covered():
    err = _errors(GOOD.replace("www.shop.test@", "api.other.test@"))
    assert "certificates[0].endpoints[1].sni: 'api.other.test' is not covered" in err


def test_missing_file(tmp_path):
    with pytest.raises(inventory.InventoryError, match="cannot read inventory"):
        inventory.load(tmp_path / "nope.yaml")
