"""Trigger annotations: parameters, run-now decisions, cancel tokens."""

from __future__ import annotations

import pytest

from bgjob.api import ConcurrencyPolicy
from bgjob.triggers import (
    Action,
    TriggerError,
    decide_run_now,
    parse_parameters,
    parse_run_at,
    pending_cancel,
    trigger_problem,
)

RUN_NOW, FORCE = "bgjob.dev/run-now", "bgjob.dev/run-force"
PARAMS = "bgjob.dev/run-parameters"
ALLOW, FORBID = ConcurrencyPolicy.ALLOW, ConcurrencyPolicy.FORBID
REPLACE = ConcurrencyPolicy.REPLACE


@pytest.mark.parametrize(("text", "expect"), [
    (None, {}),
    ("", {}),
    ('{"level": "deep"}', {"level": "deep"}),
    ('{"n": 3, "f": 1.5, "on": true, "off": false}', {"n": "3", "f": "1.5", "on": "true",
                                                     "off": "false"}),
])
def test_parameters(text: str | None, expect: dict[str, str]) -> None:
    assert parse_parameters(text) == expect


@pytest.mark.parametrize(("text", "fragment"), [
    ("{level: deep}", "not valid JSON"),
    ('["a"]', "must be a JSON object"),
    ('"x"', "must be a JSON object"),
    ('{"a": {"b": 1}}', "parameter 'a' must be a string"),
    ('{"a": null}', "parameter 'a' must be a string"),
    ('{"": "x"}', "must not be empty"),
])
def test_bad_parameters_name_the_annotation(text: str, fragment: str) -> None:
    with pytest.raises(TriggerError) as err:
        parse_parameters(text)
    message = str(err.value)
    assert message.startswith("metadata.annotations[bgjob.dev/run-parameters]: ")
    assert fragment in message and "\n" not in message


@pytest.mark.parametrize(
    ("annotations", "handled", "exists", "active", "policy", "action"),
    [
        ({}, None, False, 0, FORBID, Action.NONE),
        ({RUN_NOW: "1"}, "1", False, 0, FORBID, Action.NONE),
        ({RUN_NOW: " "}, None, False, 0, FORBID, Action.NONE),
        ({RUN_NOW: "2"}, "1", False, 0, FORBID, Action.RUN),
        ({RUN_NOW: "2"}, "1", True, 1, FORBID, Action.ADOPT),
        ({RUN_NOW: "2"}, "1", False, 1, FORBID, Action.REJECT),
        ({RUN_NOW: "2", FORCE: "true"}, "1", False, 1, FORBID, Action.RUN),
        ({RUN_NOW: "2", FORCE: "false"}, "1", False, 1, FORBID, Action.REJECT),
        ({RUN_NOW: "2", FORCE: "no"}, "1", False, 1, FORBID, Action.INVALID),
        ({RUN_NOW: "2", FORCE: "maybe"}, "1", False, 0, FORBID, Action.INVALID),
        ({RUN_NOW: "2", FORCE: "True"}, "1", False, 1, ALLOW, Action.INVALID),
        ({RUN_NOW: "2", FORCE: ""}, "1", False, 0, ALLOW, Action.INVALID),
        ({RUN_NOW: "2", FORCE: "maybe"}, "1", True, 1, FORBID, Action.ADOPT),
        ({RUN_NOW: "1", FORCE: "maybe"}, "1", False, 0, FORBID, Action.NONE),
        ({RUN_NOW: "2", PARAMS: "{bad"}, "1", False, 0, FORBID, Action.INVALID),
        ({RUN_NOW: "", FORCE: "maybe"}, "1", False, 0, FORBID, Action.NONE),
        ({RUN_NOW: "2"}, "1", False, 1, ALLOW, Action.RUN),
        ({RUN_NOW: "2"}, "1", False, 1, REPLACE, Action.REPLACE),
        ({RUN_NOW: "2"}, "1", False, 0, REPLACE, Action.RUN),
    ],
)
def test_run_now(annotations: dict[str, str], handled: str | None, exists: bool, active: int,
                 policy: ConcurrencyPolicy, action: Action) -> None:
    assert decide_run_now(annotations, handled, exists, active, policy).action is action


def test_cancel_token_acts_once() -> None:
    assert pending_cancel({}, None) is None
    assert pending_cancel({"bgjob.dev/cancel": "a"}, None) == "a"
    assert pending_cancel({"bgjob.dev/cancel": "a"}, "a") is None
    assert pending_cancel({"bgjob.dev/cancel": "b"}, "a") == "b"


def test_decisions_carry_what_the_run_needs() -> None:
    run = decide_run_now({RUN_NOW: "7", FORCE: "true", PARAMS: '{"a": 1}'}, None, False, 1,
                         FORBID)
    assert (run.action, run.token, run.force, run.params) == (Action.RUN, "7", True, {"a": "1"})
    bad = decide_run_now({RUN_NOW: "7", FORCE: "maybe"}, None, False, 0, FORBID)
    assert (bad.action, bad.token, bad.force) == (Action.INVALID, "7", False)
    assert bad.problem == ('metadata.annotations[bgjob.dev/run-force]: must be "true" or '
                           "\"false\", not 'maybe'")
    bad_params = decide_run_now({RUN_NOW: "8", PARAMS: "[1]"}, None, False, 0, FORBID)
    assert bad_params.problem.startswith("metadata.annotations[bgjob.dev/run-parameters]: ")


@pytest.mark.parametrize(("annotations", "prefix"), [
    ({}, None),
    ({RUN_NOW: "1"}, None),
    ({RUN_NOW: "1", FORCE: "true"}, None),
    ({RUN_NOW: "1", FORCE: "false"}, None),
    ({RUN_NOW: "1", PARAMS: '{"a": "b"}'}, None),
    ({FORCE: "false"}, None),
    ({RUN_NOW: ""}, "metadata.annotations[bgjob.dev/run-now]: must not be empty"),
    ({RUN_NOW: "  "}, "metadata.annotations[bgjob.dev/run-now]: must not be empty"),
    ({RUN_NOW: "1", FORCE: "maybe"}, "metadata.annotations[bgjob.dev/run-force]: must be"),
    ({FORCE: "yes"}, "metadata.annotations[bgjob.dev/run-force]: must be"),
    ({RUN_NOW: "1", FORCE: ""}, "metadata.annotations[bgjob.dev/run-force]: must be"),
    ({RUN_NOW: "1", PARAMS: "{x"}, "metadata.annotations[bgjob.dev/run-parameters]: "),
    ({RUN_NOW: "", FORCE: "maybe"}, "metadata.annotations[bgjob.dev/run-now]: "),
])
def test_trigger_problem_names_the_annotation(annotations: dict[str, str],
                                              prefix: str | None) -> None:
    problem = trigger_problem(annotations)
    if prefix is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(prefix) and "\n" not in problem



@pytest.mark.parametrize(("text", "expect"), [
    ("2026-12-24T06:00:00Z", "2026-12-24T06:00:00+00:00"),
    ("2026-12-24T07:00:00+01:00", "2026-12-24T06:00:00+00:00"),
    (" 2026-12-24t06:00:00z ", "2026-12-24T06:00:00+00:00"),
])
def test_run_at(text: str, expect: str) -> None:
    when = parse_run_at(text)
    assert when is not None and when.isoformat() == expect


@pytest.mark.parametrize("text", ["tomorrow", "2026-12-24", "2026-12-24T06:00:00", ""])
def test_bad_run_at_names_the_annotation(text: str) -> None:
    with pytest.raises(TriggerError, match=r"annotations\[bgjob.dev/run-at\]"):
        parse_run_at(text)


def test_run_at_makes_a_run_wait() -> None:
    d = decide_run_now({"bgjob.dev/run-now": "t", "bgjob.dev/run-at": "2026-12-24T06:00:00Z"},
                       None, False, 1, ConcurrencyPolicy.FORBID)
    assert d.action is Action.RUN and d.not_before is not None
    assert trigger_problem({"bgjob.dev/run-now": "t", "bgjob.dev/run-at": "soon"})
