"""Trigger annotations: parameters, run-now decisions, cancel tokens."""

from __future__ import annotations

import pytest

from bgjob.api import ConcurrencyPolicy
from bgjob.triggers import (
    Action,
    TriggerError,
    decide_run_now,
    parse_parameters,
    pending_cancel,
)

RUN_NOW, FORCE = "bgjob.dev/run-now", "bgjob.dev/run-force"
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
        ({RUN_NOW: "2", FORCE: "no"}, "1", False, 1, FORBID, Action.REJECT),
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
