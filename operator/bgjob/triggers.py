"""Pure rules for the trigger annotations: run-now, run-parameters, run-force, cancel.

A trigger is a token: each new value acts once. Handled tokens are echoed in status
(``lastHandledRunNow``, ``lastHandledCancel``), written in the same status write as their
effect. Job names derive from the token, so a pass repeated after a crash finds the Job it
made and does not start a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bgjob import api
from bgjob.api import ConcurrencyPolicy
from bgjob.vocab import ANN_RUN_AT

FIELD_PARAMS = f"metadata.annotations[{api.ANN_RUN_PARAMETERS}]"
FIELD_RUN_NOW = f"metadata.annotations[{api.ANN_RUN_NOW}]"
FIELD_FORCE = f"metadata.annotations[{api.ANN_RUN_FORCE}]"
FIELD_RUN_AT = f"metadata.annotations[{ANN_RUN_AT}]"
FORCE_VALUES = ("true", "false")
MAX_PARAMS = 64


class TriggerError(ValueError):
    """A trigger the operator cannot act on; the message names the annotation."""


class Action(StrEnum):
    NONE = "None"          # no new token
    ADOPT = "Adopt"        # the Job for this token exists already (a pass repeated)
    RUN = "Run"            # start the manual run
    REPLACE = "Replace"    # cancel the active runs, then start it
    REJECT = "Reject"      # Forbid and a run is active: TriggerRejected
    INVALID = "Invalid"    # a bad run-force or run-parameters: InvalidTrigger, token handled


@dataclass(frozen=True)
class Decision:
    action: Action
    token: str = ""
    force: bool = False
    params: dict[str, str] = field(default_factory=dict)
    problem: str = ""      # for INVALID: one line naming the annotation
    not_before: datetime | None = None  # run-at: the run waits in the queue until then


def parse_parameters(text: str | None) -> dict[str, str]:
    """``run-parameters``: a JSON object of scalars; values become strings (env vars)."""
    if text is None or not text.strip():
        return {}
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TriggerError(f"{FIELD_PARAMS}: not valid JSON ({exc.msg} at character "
                           f"{exc.pos})") from None
    if not isinstance(value, dict):
        raise TriggerError(f"{FIELD_PARAMS}: must be a JSON object like "
                           '{"key": "value"}, got ' + type(value).__name__)
    if len(value) > MAX_PARAMS:
        raise TriggerError(f"{FIELD_PARAMS}: at most {MAX_PARAMS} parameters")
    out: dict[str, str] = {}
    for key, val in value.items():
        if not key:
            raise TriggerError(f"{FIELD_PARAMS}: parameter names must not be empty")
        if isinstance(val, bool):
            out[key] = "true" if val else "false"
        elif isinstance(val, str | int | float):
            out[key] = str(val)
        else:
            raise TriggerError(f"{FIELD_PARAMS}: parameter {key!r} must be a string, number "
                               f"or boolean, not {type(val).__name__}")
    return out


def parse_run_at(text: str | None) -> datetime | None:
    """``run-at``: an RFC 3339 time with its offset (a bare local time would be ambiguous)."""
    if text is None:
        return None
    value = text.strip()
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or "T" not in value.upper():
        raise TriggerError(f"{FIELD_RUN_AT}: must be an RFC 3339 time with an offset, like "
                           f"2026-12-24T06:00:00Z, not {text!r}")
    return when.astimezone(UTC)


def _force_problem(annotations: dict[str, str]) -> str | None:
    value = annotations.get(api.ANN_RUN_FORCE)
    if value is None or value in FORCE_VALUES:
        return None
    return f'{FIELD_FORCE}: must be "true" or "false", not {value!r}'


def trigger_problem(annotations: dict[str, str]) -> str | None:
    """The first trigger annotation the operator cannot act on, as one line naming it.

    Annotations are outside the CRD schema, so these are judged here: an empty ``run-now``
    has no token to act on (and none to record as handled), a ``run-force`` that is neither
    "true" nor "false" would otherwise be read as false and a forced run silently refused, and
    ``run-parameters`` must be a JSON object of scalars. None when all are usable.
    """
    if api.ANN_RUN_NOW in annotations and not annotations[api.ANN_RUN_NOW].strip():
        return (f"{FIELD_RUN_NOW}: must not be empty; set a new token (for example "
                "$(date +%s)) to start a run")
    problem = _force_problem(annotations)
    if problem is not None:
        return problem
    try:
        parse_parameters(annotations.get(api.ANN_RUN_PARAMETERS))
        parse_run_at(annotations.get(ANN_RUN_AT))
    except TriggerError as exc:
        return str(exc)
    return None


def decide_run_now(annotations: dict[str, str], last_handled: str | None,
                   existing_job: bool, active: int,
                   policy: ConcurrencyPolicy) -> Decision:
    """What a run-now token asks for.

    A token whose Job exists is adopted first, whatever the other annotations say now: the
    run was started by an earlier pass that crashed before recording the token. A new token
    with a bad ``run-force`` or ``run-parameters`` is INVALID: it is handled (recorded, so it
    never runs later by surprise when the other annotation changes) and starts nothing.
    An empty ``run-now`` is NONE here; ``trigger_problem`` reports it.
    """
    token = (annotations.get(api.ANN_RUN_NOW) or "").strip()
    if not token or token == last_handled:
        return Decision(Action.NONE)
    force = annotations.get(api.ANN_RUN_FORCE) == "true"
    if existing_job:
        return Decision(Action.ADOPT, token, force)
    problem = _force_problem(annotations)
    not_before = None
    try:
        params = parse_parameters(annotations.get(api.ANN_RUN_PARAMETERS))
        not_before = parse_run_at(annotations.get(ANN_RUN_AT))
    except TriggerError as exc:
        problem, params = problem or str(exc), {}
    if problem is not None:
        return Decision(Action.INVALID, token, False, problem=problem)
    if not_before is not None:
        return Decision(Action.RUN, token, force, params, not_before=not_before)
    if active and policy is ConcurrencyPolicy.FORBID and not force:
        return Decision(Action.REJECT, token, force, params)
    if active and policy is ConcurrencyPolicy.REPLACE:
        return Decision(Action.REPLACE, token, force, params)
    return Decision(Action.RUN, token, force, params)


def pending_cancel(annotations: dict[str, str], last_handled: str | None) -> str | None:
    """The cancel token to act on, or None when there is none or it was handled."""
    token = (annotations.get(api.ANN_CANCEL) or "").strip()
    if not token or token == last_handled:
        return None
    return token
