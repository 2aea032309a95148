"""Typed parameters: pure checks of a run's effective parameters against spec.parameterSchema.

Parameters reach a run as env vars, so every value is text: a typed check parses the text
(``"42"`` is an Integer, ``"4.2"`` is not). The operator and the kubectl plugin call the same
functions, so the plugin refuses exactly what the operator would refuse, before writing.

Effective parameters are layered: the defaults in ``spec.parameters``, then (when a schedule
brings its own) the schedule's, then the run's overrides (``run-parameters``); the last layer
wins. ``required`` means every run needs a value. A scheduled run has no overrides, so with a
schedule a required parameter needs a default, and its absence is a spec error (InvalidSpec);
without a schedule only manual runs exist, and each must bring the value (InvalidTrigger).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError

from bgjob.api import PARAM_SYNTAX, BackgroundJobSpec, ParameterSpec, ParameterType

FIELD_DEFAULTS = "spec.parameters"
FIELD_SCHEMA = "spec.parameterSchema"


@dataclass(frozen=True)
class Problem:
    """One parameter that cannot be used, and why (one line, without the field prefix)."""

    name: str
    why: str


def value_problem(p: ParameterSpec, value: str) -> str | None:
    """Why ``value`` is not a valid ``p``, or None. Assumes ``p.pattern`` compiles."""
    shown = repr(value) if len(value) <= 64 else repr(value[:61] + "...")
    syntax = PARAM_SYNTAX.get(p.type.value)
    if syntax is not None and not re.match(syntax, value):
        return f"{shown} is not a{'n' if p.type is ParameterType.INTEGER else ''} " \
               f"{p.type.value}{_example(p.type)}"
    try:
        if p.type is ParameterType.DATE:
            date.fromisoformat(value)
        elif p.type is ParameterType.DATETIME:
            datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return f"{shown} is not a valid {p.type.value}"
    numeric = p.type in (ParameterType.INTEGER, ParameterType.NUMBER)
    if p.enum is not None and not _in_enum(p, value, numeric):
        return f"{shown} is not one of {', '.join(p.enum)}"
    if numeric:
        n = float(value)
        if math.isinf(n):
            return f"{shown} is out of range"
        if p.minimum is not None and n < p.minimum:
            return f"{shown} is below the minimum {_num(p.minimum)}"
        if p.maximum is not None and n > p.maximum:
            return f"{shown} is above the maximum {_num(p.maximum)}"
    if p.pattern is not None and re.search(p.pattern, value) is None:
        return f"{shown} does not match the pattern {p.pattern!r}"
    return None


def _in_enum(p: ParameterSpec, value: str, numeric: bool) -> bool:
    assert p.enum is not None
    if numeric:  # "5" and "05" are the same Integer
        return float(value) in {float(e) for e in p.enum}
    return value in p.enum


def _num(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def _example(t: ParameterType) -> str:
    return {ParameterType.INTEGER: " (like 42)", ParameterType.NUMBER: " (like 4.2)",
            ParameterType.BOOLEAN: " (true or false)",
            ParameterType.DATE: " (YYYY-MM-DD)",
            ParameterType.DATETIME: " (RFC 3339, like 2026-12-01T12:00:00Z)"}.get(t, "")


def check(schema: Sequence[ParameterSpec], values: Mapping[str, str],
          need_required: bool = True) -> Problem | None:
    """The first parameter of ``values`` the schema refuses (in schema order), or None.
    ``need_required`` False skips the required check (for a layer that is not the whole)."""
    for p in schema:
        value = values.get(p.name)
        if value is None:
            if p.required and need_required:
                return Problem(p.name, "required, and no value was given")
            continue
        why = value_problem(p, value)
        if why is not None:
            return Problem(p.name, why)
    return None


def schema_problem(schema: Sequence[ParameterSpec]) -> str | None:
    """What the CRD schema cannot judge: duplicate names (when the list-map key check was
    bypassed) and a pattern that does not compile. One line naming the field."""
    seen: set[str] = set()
    for p in schema:
        where = f"{FIELD_SCHEMA}[name={p.name}]"
        if p.name in seen:
            return f"{where}: the name is listed twice"
        seen.add(p.name)
        if p.pattern is not None:
            try:
                re.compile(p.pattern)
            except re.error as exc:
                return f"{where}.pattern: not a valid regular expression ({exc})"
    return None


def spec_problem(spec: BackgroundJobSpec) -> str | None:
    """A bad schema, or a default the schema refuses: InvalidSpec naming the field. A
    required parameter without a default is refused only when a schedule exists (see the
    module doc)."""
    bad = schema_problem(spec.parameter_schema)
    if bad is not None:
        return bad
    scheduled = spec.schedule is not None
    found = check(spec.parameter_schema, spec.parameters, need_required=scheduled)
    if found is None:
        return _entries_problem(spec)
    if found.name not in spec.parameters:
        return (f"{FIELD_DEFAULTS}.{found.name}: required, but a scheduled run has no "
                "overrides: set a default here or make it optional")
    return f"{FIELD_DEFAULTS}.{found.name}: {found.why}"


def _entries_problem(spec: BackgroundJobSpec) -> str | None:
    """spec.schedules: each entry's runs have the defaults overlaid with its parameters (and
    no other overrides), so that layering must satisfy the schema, required values included."""
    for i, entry in enumerate(spec.schedules or []):
        values = effective([spec.parameters, entry.parameters])
        found = check(spec.parameter_schema, values)
        if found is None:
            continue
        where = f"spec.schedules[{i}].parameters.{found.name}"
        if found.name not in values:
            return (f"{where}: required, but neither spec.parameters nor this schedule sets "
                    "it")
        return f"{where}: {found.why}"
    return None


def effective(layers: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """Defaults first, later layers win."""
    out: dict[str, str] = {}
    for layer in layers:
        out.update(layer)
    return out


def run_problem(spec: BackgroundJobSpec, overrides: Mapping[str, str],
                field: str) -> str | None:
    """A manual run's effective parameters, checked before its Job is created; the message
    names ``field`` (where the overrides came from) and the parameter."""
    if spec_problem(spec) is not None:
        return None  # InvalidSpec says so already, and no run starts
    found = check(spec.parameter_schema, effective([spec.parameters, overrides]))
    if found is None:
        return None
    return f"{field}: parameter {found.name}: {found.why}"


def run_problem_raw(spec: dict[str, Any], overrides: Mapping[str, str],
                    field: str) -> str | None:
    """``run_problem`` on a spec as read from the cluster (the plugin): a spec the operator
    would call invalid is left to the operator to report."""
    try:
        parsed = BackgroundJobSpec.model_validate(spec)
    except ValidationError:
        return None
    return run_problem(parsed, overrides, field)
