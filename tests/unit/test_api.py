"""The API models' own rules: what pydantic refuses must match what the CRD refuses."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from bgjob import crd
from bgjob.api import EVERY_DURATION, BackgroundJobSpec, Backoff, Schedule

TEMPLATE = {"spec": {"template": {"spec": {"containers": [{"name": "m", "image": "b"}]}}}}


def _spec_schema() -> dict[str, Any]:
    root = crd.render()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec: dict[str, Any] = root["properties"]["spec"]
    return spec


@pytest.mark.parametrize(("backoff", "ok"), [
    ({}, True),
    ({"initialDelaySeconds": 60, "maxDelaySeconds": 60}, True),
    ({"initialDelaySeconds": 0, "maxDelaySeconds": 0}, True),
    ({"initialDelaySeconds": 600, "maxDelaySeconds": 60}, False),
    ({"maxDelaySeconds": 30}, False),           # below the default initialDelaySeconds (60)
    ({"initialDelaySeconds": 7200}, False),      # above the default maxDelaySeconds (3600)
])
def test_max_delay_must_cover_the_initial_delay(backoff: dict[str, int], ok: bool) -> None:
    if ok:
        Backoff.model_validate(backoff)
        return
    with pytest.raises(ValidationError) as err:
        BackgroundJobSpec.model_validate({"template": TEMPLATE, "retry": {"backoff": backoff}})
    first = err.value.errors()[0]
    assert first["loc"] == ("retry", "backoff")
    assert first["msg"].startswith("maxDelaySeconds (")
    assert "must be at least initialDelaySeconds" in first["msg"] and "\n" not in first["msg"]


def test_the_crd_carries_the_same_backoff_rule() -> None:
    backoff = _spec_schema()["properties"]["retry"]["properties"]["backoff"]
    (rule,) = backoff["x-kubernetes-validations"]
    assert rule["rule"] == "self.maxDelaySeconds >= self.initialDelaySeconds"
    assert rule["fieldPath"] == ".maxDelaySeconds"
    assert rule["message"].startswith("retry.backoff.maxDelaySeconds: ")
    # The rule relies on the API server filling in both defaults first.
    assert backoff["properties"]["initialDelaySeconds"]["default"] == 60
    assert backoff["properties"]["maxDelaySeconds"]["default"] == 3600


@pytest.mark.parametrize(("every", "ok"), [
    ("30m", True), ("1h30m", True), ("1.5h", True), ("1d", True), ("2d", True),
    ("1d12h", True), ("1d30m", True),
    ("0d", False), ("d", False), ("1.5d", False), ("12h1d", False), ("1w", False), ("", False),
    ("30 m", False),
])
def test_every_accepts_go_durations_and_whole_days(every: str, ok: bool) -> None:
    assert bool(re.fullmatch(EVERY_DURATION, every)) is ok
    if ok:
        Schedule.model_validate({"every": every})
    else:
        with pytest.raises(ValidationError):
            Schedule.model_validate({"every": every})


def test_the_crd_lets_days_past_the_1m_rule() -> None:
    """CEL's duration() cannot read "1d"; the rule must not hand it one."""
    schedule = _spec_schema()["properties"]["schedule"]
    assert schedule["properties"]["every"]["pattern"] == EVERY_DURATION
    rule = next(r["rule"] for r in schedule["x-kubernetes-validations"]
                if r.get("fieldPath") == ".every")
    assert rule.index("self.every.contains('d')") < rule.index("duration(self.every)")
