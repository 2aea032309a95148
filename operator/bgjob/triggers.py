"""Pure rules for the trigger annotations: run-now, run-parameters, run-force, cancel.

A trigger is a token: each new value acts once. Handled tokens are echoed in status
(``lastHandledRunNow``, ``lastHandledCancel``), written in the same status write as their
effect. Job names derive from the token, so a pass repeated after a crash finds the Job it
made and does not start a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bgjob import api
from bgjob.api import ConcurrencyPolicy

FIELD_PARAMS = f"metadata.annotations[{api.ANN_RUN_PARAMETERS}]"
MAX_PARAMS = 64


class TriggerError(ValueError):
    """A trigger the operator cannot act on; the message names the annotation."""


class Action(StrEnum):
    NONE = "None"          # no new token
    ADOPT = "Adopt"        # the Job for this token exists already (a pass repeated)
    RUN = "Run"            # start the manual run
    REPLACE = "Replace"    # cancel the active runs, then start it
    REJECT = "Reject"      # Forbid and a run is active: TriggerRejected


@dataclass(frozen=True)
class Decision:
    action: Action
    token: str = ""
    force: bool = False


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


def is_true(text: str | None) -> bool:
    return (text or "").strip().lower() in ("true", "1", "yes")


def decide_run_now(annotations: dict[str, str], last_handled: str | None,
                   existing_job: bool, active: int,
                   policy: ConcurrencyPolicy) -> Decision:
    """What a run-now token asks for, before parameters are judged."""
    token = (annotations.get(api.ANN_RUN_NOW) or "").strip()
    if not token or token == last_handled:
        return Decision(Action.NONE)
    force = is_true(annotations.get(api.ANN_RUN_FORCE))
    if existing_job:
        return Decision(Action.ADOPT, token, force)
    if active and policy is ConcurrencyPolicy.FORBID and not force:
        return Decision(Action.REJECT, token, force)
    if active and policy is ConcurrencyPolicy.REPLACE:
        return Decision(Action.REPLACE, token, force)
    return Decision(Action.RUN, token, force)


def pending_cancel(annotations: dict[str, str], last_handled: str | None) -> str | None:
    """The cancel token to act on, or None when there is none or it was handled."""
    token = (annotations.get(api.ANN_CANCEL) or "").strip()
    if not token or token == last_handled:
        return None
    return token
