"""What the Prefect UI shows for each flow: a typed form with a description per field."""

from __future__ import annotations

import pytest
from prefect.utilities.callables import parameter_schema

from certfleet.flows.distribute import distribute
from certfleet.flows.emergency import emergency_rotation
from certfleet.flows.lifecycle import lifecycle
from certfleet.flows.monitor import monitor
from certfleet.flows.renew import renew
from certfleet.flows.verify import verify


@pytest.mark.parametrize("flow", [lifecycle, monitor, renew, distribute, verify, emergency_rotation],
                         ids=lambda f: f.name)
def test_every_parameter_is_typed_and_described(flow):
    props = parameter_schema(flow.fn).model_dump()["properties"]
    assert props
    for name, prop in props.items():
        assert prop.get("description"), f"{flow.name}.{name} has no description"
        assert "type" in prop or "anyOf" in prop or "enum" in prop or "$ref" in prop or "allOf" in prop, f"{flow.name}.{name} is untyped"


def test_revocation_reason_is_a_choice_not_free_text():
    schema = parameter_schema(emergency_rotation.fn).model_dump()
    reason = schema["properties"]["reason"]
    choices = reason.get("enum") or next(iter(schema.get("definitions", {}).values()), {}).get("enum")
    assert choices and "keyCompromise" in choices and "superseded" in choices
