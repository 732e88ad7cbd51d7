"""The bootc status fixtures conform to bootc's own host-v1 schema (tests/fixtures/bootc/host-v1.schema.json)."""
import json
import os

import jsonschema
import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "bootc")


@pytest.mark.parametrize("name", ["status-composefs.json", "status-ostree-only-booted.json"])
def test_fixture_matches_bootc_schema(name):
    with open(os.path.join(FIXTURES, "host-v1.schema.json")) as handle:
        schema = json.load(handle)
    with open(os.path.join(FIXTURES, name)) as handle:
        jsonschema.validate(json.load(handle), schema)
