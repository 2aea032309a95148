"""``kubectl bgjob backfill``: the due times of a past range, computed with the operator's own
code from the BackgroundJob's schedule (``--dry-run`` prints them and writes nothing), then one
patch of the ``bgjob.dev/backfill`` annotation."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from pydantic import ValidationError

from bgjob import backfill, schedule, timing
from bgjob import status as st
from bgjob.api import BackgroundJobSpec
from bgjob.clirun import new_token
from bgjob.clisession import CliError, Session, _dump
from bgjob.vocab import ANN_BACKFILL


def _times(obj: dict[str, object], text: str) -> list[backfill.Due]:
    """The times the operator will run (skip rules and active windows applied, each with its
    spec.schedules entry), judged by its rules before anything is written."""
    meta = obj["metadata"]
    assert isinstance(meta, dict)
    ns, name = str(meta.get("namespace") or ""), str(meta["name"])
    try:
        spec = BackgroundJobSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        raise CliError(f"{name}: the spec is not valid: {exc.errors()[0]['msg']}") from None
    try:
        if spec.schedule is not None:
            compiled = [schedule.compile_schedule(spec.schedule, ns, name)]
        else:
            compiled = [schedule.compile_schedule(e, ns, name, f"spec.schedules[{i}]", e.name)
                        for i, e in enumerate(spec.schedules or [])]
    except schedule.ScheduleError as exc:
        raise CliError(str(exc)) from None
    if not compiled:
        raise CliError(f"{name} has no schedule to backfill")
    created = st.parse_time(str(meta.get("creationTimestamp") or ""))
    if created is not None:
        compiled = [replace(c, anchor=created) for c in compiled]
    try:
        req = backfill.parse(text)
        return backfill.due_times(
            lambda since, until, limit: timing.due_times(compiled, since, until, limit), req)
    except backfill.BackfillError as exc:
        raise CliError(str(exc).replace(backfill.FIELD + ": ", "")) from None


def _rfc3339(flag: str, text: str) -> str:
    when = st.parse_time(text) if "T" in text.upper() else None
    if when is None or when.tzinfo is None:
        raise CliError(f"{flag}: must be an RFC 3339 time with an offset, like "
                       f"2026-12-01T00:00:00Z, not {text!r}")
    return st.fmt(when) or text


def cmd_backfill(args: argparse.Namespace) -> int:
    start, until = _rfc3339("--from", args.from_), _rfc3339("--until", args.until)
    value = {"from": start, "until": until}
    s = Session(args)
    obj = s.get(args.name)
    times = _times(obj, json.dumps(value))
    if args.dry_run:
        if args.output in ("json", "yaml"):
            _dump({"from": start, "until": until,
                   "times": [{"time": st.fmt(t), **({"schedule": e} if e else {})}
                             for t, e in times]},
                  args.output)
            return 0
        print(f"{len(times)} run(s) of {args.name} from {start} until {until} "
              "(dry run: nothing written):")
        for t, entry in times:
            print(f"  {st.fmt(t)}" + (f"  ({entry})" if entry else ""))
        return 0
    value["token"] = new_token()  # the same range asked again is a new backfill
    s.patch(args.name, {"metadata": {"annotations": {
        ANN_BACKFILL: json.dumps(value, sort_keys=True)}}})
    print(f"backfill of {len(times)} run(s) from {start} until {until} requested; follow it "
          f"with: kubectl bgjob describe {args.name}", file=sys.stderr)
    return 0
