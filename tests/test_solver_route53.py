"""Route 53 solver against a real moto server over HTTP (started by this module).

What the solver wrote is read back with a plain boto3 client, so the test checks Route
53's state, not the solver's opinion of it.
"""

from __future__ import annotations

import urllib.request
import uuid

import boto3
import pytest

from certfleet.blocks.aws import AwsCredentials
from certfleet.blocks.solvers.route53 import Route53Error, Route53Solver, ZoneNotFoundError
from certfleet.contracts import DnsSolver, SolverTimeout
from certfleet_dev.ports import free_port

pytestmark = pytest.mark.services

REGION = "us-east-1"


@pytest.fixture
def route53(moto_server):
    """A plain boto3 client on an empty moto account (state reset before each test)."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10).close()
    return boto3.client("route53", region_name=REGION, endpoint_url=moto_server,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def credentials(moto_server) -> AwsCredentials:
    return AwsCredentials(region_name=REGION, aws_access_key_id="testing",
                          aws_secret_access_key="testing", endpoint_url=moto_server)


def make_zone(route53, name: str, private: bool = False) -> str:
    kwargs = {}
    if private:
        kwargs = {"HostedZoneConfig": {"PrivateZone": True},
                  "VPC": {"VPCRegion": REGION, "VPCId": "vpc-12345678"}}
    zone = route53.create_hosted_zone(Name=name, CallerReference=uuid.uuid4().hex, **kwargs)["HostedZone"]
    return zone["Id"].rsplit("/", 1)[-1]


def txt(route53, zone_id: str, fqdn: str) -> list[str] | None:
    """Values of the TXT set at ``fqdn`` as Route 53 stores them (quoted), None when absent."""
    page = route53.list_resource_record_sets(HostedZoneId=zone_id)
    for rrset in page["ResourceRecordSets"]:
        if rrset["Name"] == fqdn + "." and rrset["Type"] == "TXT":
            return sorted(r["Value"] for r in rrset["ResourceRecords"])
    return None


def test_solver_meets_the_contract(credentials):
    solver = Route53Solver(credentials=credentials)
    assert isinstance(solver, DnsSolver) and isinstance(solver, SolverTimeout)
    assert all(f.description for f in Route53Solver.model_fields.values())
    assert Route53Solver(hosted_zone_id="/hostedzone/Z1").hosted_zone_id == "Z1"


def test_record_created_in_longest_matching_zone_then_removed(route53, credentials):
    make_zone(route53, "example.test")
    shop = make_zone(route53, "shop.example.test")
    make_zone(route53, "shop.example.test", private=True)  # the CA cannot see private zones
    solver = Route53Solver(credentials=credentials)

    solver.present("www.shop.example.test", "value-1")
    assert txt(route53, shop, "_acme-challenge.www.shop.example.test") == ['"value-1"']

    solver.cleanup("www.shop.example.test", "value-1")
    assert txt(route53, shop, "_acme-challenge.www.shop.example.test") is None
    solver.cleanup("www.shop.example.test", "value-1")  # already gone: no error


def test_two_values_at_one_name_coexist(route53, credentials):
    zone = make_zone(route53, "shop.test")
    solver = Route53Solver(hosted_zone_id=zone, credentials=credentials)
    name = "_acme-challenge.shop.test"

    solver.present("shop.test", "base-value")
    solver.present("*.shop.test", "wildcard-value")  # same _acme-challenge name
    assert txt(route53, zone, name) == ['"base-value"', '"wildcard-value"']

    solver.cleanup("shop.test", "base-value")
    assert txt(route53, zone, name) == ['"wildcard-value"']
    solver.cleanup("*.shop.test", "wildcard-value")
    assert txt(route53, zone, name) is None


def test_unknown_zone_is_refused(route53, credentials):
    zone = make_zone(route53, "shop.test")
    auto = Route53Solver(credentials=credentials)
    assert auto.controls("www.shop.test")
    assert not auto.controls("www.other.test")
    with pytest.raises(ZoneNotFoundError, match=r"^route53 solver 'auto': no hosted zone holds 'www.other.test'"):
        auto.present("www.other.test", "v")

    pinned = Route53Solver(hosted_zone_id=zone, credentials=credentials)
    assert not pinned.controls("notshop.test"), "a suffix match must end at a label boundary"
    with pytest.raises(ZoneNotFoundError, match=rf"^route53 solver '{zone}': 'a.other.test' is outside"):
        pinned.present("a.other.test", "v")
    assert route53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"][-1]["Type"] != "TXT"


def test_aws_errors_are_raised_not_taken_for_no(route53, credentials):
    missing = Route53Solver(hosted_zone_id="ZNOSUCHZONE", credentials=credentials)
    with pytest.raises(Route53Error, match=r"^route53 solver 'ZNOSUCHZONE': get hosted zone ZNOSUCHZONE: NoSuchHostedZone"):
        missing.controls("shop.test")


def test_nameserver_check_runs_after_insync(route53, credentials):
    make_zone(route53, "shop.test")
    silent = f"127.0.0.1:{free_port(udp=True)}"  # nobody answers there
    solver = Route53Solver(credentials=credentials, nameservers=[silent], propagation_timeout=0.3)
    with pytest.raises(Route53Error, match=r"change INSYNC but TXT _acme-challenge.shop.test. = 'v' not visible"):
        solver.present("shop.test", "v")


def test_secret_never_appears_in_repr_or_errors(route53, moto_server):
    secret = "s3cr3t-" + uuid.uuid4().hex
    creds = AwsCredentials(region_name=REGION, aws_access_key_id="testing",
                           aws_secret_access_key=secret, endpoint_url=moto_server)
    solver = Route53Solver(hosted_zone_id="ZNOSUCHZONE", credentials=creds)
    assert secret not in repr(solver)
    with pytest.raises(Route53Error) as info:
        solver.present("shop.test", "v")
    assert secret not in str(info.value)


def test_insync_is_waited_for_by_boto3s_waiter(route53, credentials):
    """INSYNC polling is botocore's ``resource_record_sets_changed`` waiter (GetChange on moto)."""
    zone = make_zone(route53, "shop.test")
    solver = Route53Solver(hosted_zone_id=zone, credentials=credentials, poll_interval=0.2)
    calls = []
    client = solver._route53()
    client.meta.events.register("before-call.route53.GetChange", lambda **kw: calls.append(kw["params"]))
    original = client.get_waiter
    client.get_waiter = lambda name: calls.append(f"waiter {name}") or original(name)  # records, does not replace
    solver.present("shop.test", "v1")
    assert calls[0] == "waiter resource_record_sets_changed" and len(calls) >= 2, calls
    # (moto answers INSYNC for any change id, so a change that never syncs cannot be shown here.)
