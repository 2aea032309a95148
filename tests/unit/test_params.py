"""Typed parameters as a table: the value checks, the spec check (bad defaults, required
without a default under a schedule), a run's overrides, and the schema's own consistency rules
(pydantic here; the same rules are CEL in the CRD)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bgjob import params
from bgjob.api import BackgroundJobSpec, ParameterSpec

TEMPLATE = {"spec": {"template": {"spec": {"containers": [{"name": "m", "image": "b"}]}}}}


def p(**kw: Any) -> ParameterSpec:
    return ParameterSpec.model_validate({"name": "x", **kw})


# (schema entry, value, the problem's start or None when valid)
VALUE_CASES = [
    ({}, "anything at all", None),
    ({"type": "Integer"}, "42", None),
    ({"type": "Integer"}, "-7", None),
    ({"type": "Integer"}, "4.2", "'4.2' is not an Integer (like 42)"),
    ({"type": "Integer"}, "", "'' is not an Integer"),
    ({"type": "Integer", "minimum": 1, "maximum": 10}, "0", "'0' is below the minimum 1"),
    ({"type": "Integer", "minimum": 1, "maximum": 10}, "11", "'11' is above the maximum 10"),
    ({"type": "Integer", "minimum": 1, "maximum": 10}, "10", None),
    ({"type": "Integer", "enum": ["1", "5"]}, "05", None),
    ({"type": "Integer", "enum": ["1", "5"]}, "4", "'4' is not one of 1, 5"),
    ({"type": "Number"}, "4.25", None),
    ({"type": "Number"}, "1e3", None),
    ({"type": "Number"}, "1e999", "'1e999' is out of range"),
    ({"type": "Number"}, "NaN", "'NaN' is not a Number"),
    ({"type": "Number", "maximum": 0.5}, "0.75", "'0.75' is above the maximum 0.5"),
    ({"type": "Boolean"}, "true", None),
    ({"type": "Boolean"}, "yes", "'yes' is not a Boolean (true or false)"),
    ({"type": "Date"}, "2026-12-01", None),
    ({"type": "Date"}, "2026-02-30", "'2026-02-30' is not a valid Date"),
    ({"type": "Date"}, "20261201", "'20261201' is not a Date (YYYY-MM-DD)"),
    ({"type": "DateTime"}, "2026-12-01T12:00:00Z", None),
    ({"type": "DateTime"}, "2026-12-01T12:00:00.5+01:00", None),
    ({"type": "DateTime"}, "2026-12-01 12:00", "'2026-12-01 12:00' is not a DateTime"),
    ({"type": "DateTime"}, "2026-12-01T25:00:00Z", "'2026-12-01T25:00:00Z' is not a valid"),
    ({"enum": ["light", "normal", "deep"]}, "deep", None),
    ({"enum": ["light", "normal", "deep"]}, "Deep", "'Deep' is not one of light, normal"),
    ({"pattern": "^[a-z]+$"}, "abc", None),
    ({"pattern": "^[a-z]+$"}, "ab1", "'ab1' does not match the pattern '^[a-z]+$'"),
    ({"pattern": "[0-9]"}, "a1b", None),  # OpenAPI: unanchored
]


@pytest.mark.parametrize(("entry", "value", "want"), VALUE_CASES,
                         ids=[f"{e or 'String'}={v!r}" for e, v, _ in VALUE_CASES])
def test_value_check(entry: dict[str, Any], value: str, want: str | None) -> None:
    got = params.value_problem(p(**entry), value)
    if want is None:
        assert got is None
    else:
        assert got is not None and got.startswith(want), got
        assert "\n" not in got


def spec(schedule: bool = False, **kw: Any) -> BackgroundJobSpec:
    doc: dict[str, Any] = {"template": TEMPLATE, **kw}
    if schedule:
        doc["schedule"] = {"cron": "0 3 * * *"}
    return BackgroundJobSpec.model_validate(doc)


LEVEL = {"name": "level", "type": "String", "enum": ["light", "deep"]}
DAYS = {"name": "days", "type": "Integer", "minimum": 1, "maximum": 30, "required": True}

# (spec fields, scheduled?, the InvalidSpec message or None)
SPEC_CASES = [
    ({"parameterSchema": [LEVEL], "parameters": {"level": "deep"}}, True, None),
    ({"parameterSchema": [LEVEL], "parameters": {"level": "medium"}}, True,
     "spec.parameters.level: 'medium' is not one of light, deep"),
    ({"parameterSchema": [DAYS], "parameters": {"days": "0"}}, False,
     "spec.parameters.days: '0' is below the minimum 1"),
    ({"parameterSchema": [DAYS]}, True,
     "spec.parameters.days: required, but a scheduled run has no overrides: set a default "
     "here or make it optional"),
    ({"parameterSchema": [DAYS]}, False, None),  # manual only: each run brings it
    ({"parameterSchema": [LEVEL], "parameters": {"untyped": "x"}}, True, None),
    ({"parameterSchema": [{"name": "id", "pattern": "("}]}, False,
     "spec.parameterSchema[name=id].pattern: not a valid regular expression"),
    ({"parameterSchema": [LEVEL, {**LEVEL, "enum": ["x"]}]}, False,
     "spec.parameterSchema[name=level]: the name is listed twice"),
]


@pytest.mark.parametrize(("fields", "scheduled", "want"), SPEC_CASES,
                         ids=[str(w)[:60] for _, _, w in SPEC_CASES])
def test_spec_check(fields: dict[str, Any], scheduled: bool, want: str | None) -> None:
    got = params.spec_problem(spec(scheduled, **fields))
    if want is None:
        assert got is None
    else:
        assert got is not None and got.startswith(want), got


FIELD = "metadata.annotations[bgjob.dev/run-parameters]"
RUN_CASES = [
    ({}, f"{FIELD}: parameter days: required, and no value was given"),
    ({"days": "7"}, None),
    ({"days": "7", "level": "deep"}, None),
    ({"days": "seven"}, f"{FIELD}: parameter days: 'seven' is not an Integer"),
    ({"days": "7", "level": "huge"}, f"{FIELD}: parameter level: 'huge' is not one of"),
    ({"days": "7", "other": "free text"}, None),  # not in the schema: an untyped string
]


@pytest.mark.parametrize(("overrides", "want"), RUN_CASES, ids=[str(o) for o, _ in RUN_CASES])
def test_run_check_names_the_parameter(overrides: dict[str, str], want: str | None) -> None:
    s = spec(parameterSchema=[LEVEL, DAYS], parameters={"level": "light"})
    got = params.run_problem(s, overrides, FIELD)
    if want is None:
        assert got is None
    else:
        assert got is not None and got.startswith(want), got


def test_a_bad_default_is_left_to_invalid_spec_not_blamed_on_the_run() -> None:
    s = spec(parameterSchema=[LEVEL], parameters={"level": "medium"})
    assert params.run_problem(s, {}, FIELD) is None
    assert params.run_problem_raw({"template": TEMPLATE, "parameterSchema": [LEVEL],
                                   "parameters": {"level": "x"}}, {}, "--param") is None
    assert params.run_problem_raw({"template": TEMPLATE, "parameterSchema": [LEVEL]},
                                  {"level": "x"}, "--param") == \
        "--param: parameter level: 'x' is not one of light, deep"


def test_layers_later_wins() -> None:
    assert params.effective([{"a": "1", "b": "1"}, {"b": "2"}, {"c": "3"}]) == \
        {"a": "1", "b": "2", "c": "3"}


# The schema contradicting itself: the same rules as the CRD's CEL (test_crd_cel below checks
# the CEL text says the same).
BAD_SCHEMAS = [
    ({"type": "Integer", "minimum": 5, "maximum": 1}, "minimum must not be above maximum"),
    ({"type": "String", "minimum": 1}, "minimum and maximum need type Integer or Number"),
    ({"type": "Date", "maximum": 1}, "minimum and maximum need type Integer or Number"),
    ({"type": "Integer", "pattern": "^1"}, "pattern needs type String"),
    ({"type": "Boolean", "enum": ["true"]}, "a Boolean has no enum"),
    ({"type": "Integer", "enum": ["1", "two"]}, "every enum value must be of the parameter's"),
    ({"type": "Date", "enum": ["2026-1-1"]}, "every enum value must be of the parameter's"),
]


@pytest.mark.parametrize(("entry", "why"), BAD_SCHEMAS, ids=[w for _, w in BAD_SCHEMAS])
def test_schema_contradicting_itself_is_refused(entry: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError) as err:
        spec(parameterSchema=[{"name": "x", **entry}])
    assert err.value.errors()[0]["msg"].startswith(f"parameter x: {why}")


def test_crd_cel_rules_cover_the_same_contradictions() -> None:
    from bgjob import crd
    root = crd.render()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema = root["properties"]["spec"]["properties"]["parameterSchema"]
    assert schema["x-kubernetes-list-type"] == "map"
    assert schema["x-kubernetes-list-map-keys"] == ["name"]
    messages = [r["message"] for r in schema["items"]["x-kubernetes-validations"]]
    for _, why in BAD_SCHEMAS:
        assert any(why in m for m in messages), why
