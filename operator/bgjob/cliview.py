"""What ``kubectl bgjob`` prints, as pure functions of API objects and ``now``.

Kept apart from the verbs so the output is pinned by golden tests without a cluster, and so a
table looks the same whichever verb builds it. Tables follow kubectl's habits: upper-case
headers, columns three spaces apart, ``<none>`` for an absent time, ages like ``5m``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from bgjob.status import parse_time

NONE = "<none>"


def age(text: str | None, now: datetime) -> str:
    """kubectl's short duration: 45s, 12m, 3h, 2d (for future times: in 12m)."""
    t = parse_time(text)
    if t is None:
        return NONE
    secs = int((now - t).total_seconds())
    ahead = secs < 0
    secs = abs(secs)
    out = f"{secs}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            out = f"{secs // size}{unit}"
            break
    return f"in {out}" if ahead else out


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [list(header), *rows]]
    return "\n".join(lines)


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj.get("status") or {})


def _next_run(obj: dict[str, Any]) -> str:
    times = (_status(obj).get("schedule") or {}).get("nextRunTimes") or []
    return times[0] if times else NONE


# -- list ---------------------------------------------------------------------------------

def list_table(items: Sequence[dict[str, Any]], now: datetime, wide: bool = False,
               all_namespaces: bool = False) -> str:
    """The same columns as ``kubectl get backgroundjobs`` (and ``-o wide``)."""
    header = ["NAMESPACE"] if all_namespaces else []
    header += ["NAME", "SCHEDULE", "SUSPENDED", "ACTIVE", "LAST RESULT", "LAST SUCCESS",
               "NEXT RUN", "READY", "AGE"]
    if wide:
        header += ["TIMEZONE", "QUEUED", "RUNS", "SUCCESS RATE", "FAILURES IN A ROW"]
    rows = []
    for item in items:
        st, conds, meta = _status(item), conditions(item), item["metadata"]
        stats = st.get("stats") or {}
        sched = st.get("schedule") or {}
        row = [meta.get("namespace", "")] if all_namespaces else []
        row += [meta["name"], sched.get("description") or "(manual only)",
                (conds.get("Suspended") or {}).get("status", "-"),
                str(len(st.get("active") or [])),
                (st.get("lastRun") or {}).get("result", "-"),
                age(st.get("lastSuccessfulTime"), now), _next_run(item),
                (conds.get("Ready") or {}).get("status", "-"),
                age(meta.get("creationTimestamp"), now)]
        if wide:
            zone = sched.get("timeZone") or (item.get("spec") or {}).get(
                "schedule", {}).get("timeZone", "UTC")
            row += [zone, str(len(st.get("queued") or [])),
                    str(stats.get("runs", 0)), rate(stats.get("successRate")),
                    str(stats.get("consecutiveFailures", 0))]
        rows.append(row)
    return table(header, rows)


# -- history / stats / overdue ------------------------------------------------------------

def one_line(text: str | None, limit: int = 100) -> str:
    """A run's output in one table cell: its lines joined by " | ", and when longer than
    ``limit`` its end (a failure's last log lines say the most)."""
    flat = " | ".join(line.strip() for line in (text or "").splitlines() if line.strip())
    if not flat:
        return "-"
    return flat if len(flat) <= limit else "..." + flat[3 - limit:]


def history_table(obj: dict[str, Any], now: datetime, wide: bool = False) -> str:
    """Run records, newest first: active runs, then what status.runs remembers; ``wide``
    adds each run's output (the main container's termination message)."""
    st = _status(obj)
    seen: set[str] = set()
    rows = []
    for rec in (st.get("runs") or []):
        if rec["job"] in seen:
            continue
        seen.add(rec["job"])
        code = rec.get("exitCode")
        rows.append([rec["job"], rec.get("trigger", "-"), str(rec.get("attempt", 1)),
                     age(rec.get("startTime") or rec.get("scheduledTime"), now),
                     duration(rec.get("durationSeconds")), rec.get("result", "-"),
                     "-" if code is None else str(code),
                     rec.get("reason") or "-"] + ([one_line(rec.get("output"))] if wide else []))
    return table(["JOB", "TRIGGER", "ATTEMPT", "STARTED", "DURATION", "RESULT", "EXIT CODE",
                  "REASON"] + (["OUTPUT"] if wide else []), rows)


def queue_table(obj: dict[str, Any], now: datetime) -> str:
    """``status.queued`` in the order the runs will start."""
    rows = []
    for q in _status(obj).get("queued") or []:
        params = q.get("parameters") or {}
        rows.append([q["job"], q.get("trigger", "-"), str(q.get("attempt", 1)),
                     age(q.get("since"), now), q.get("notBefore") or "-",
                     q.get("scheduledTime") or "-",
                     ",".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"])
    return table(["JOB", "TRIGGER", "ATTEMPT", "WAITING", "NOT BEFORE", "SCHEDULED",
                  "PARAMETERS"], rows)


def stats_table(items: Sequence[dict[str, Any]], all_namespaces: bool = False) -> str:
    header = ["NAMESPACE"] if all_namespaces else []
    header += ["NAME", "RUNS", "SUCCEEDED", "FAILED", "SUCCESS RATE", "AVG DURATION",
               "FAILURES IN A ROW", "RETRIES", "MISSED"]
    rows = []
    for item in items:
        s = _status(item).get("stats") or {}
        row = [item["metadata"].get("namespace", "")] if all_namespaces else []
        row += [item["metadata"]["name"], str(s.get("runs", 0)), str(s.get("succeeded", 0)),
                str(s.get("failed", 0)), rate(s.get("successRate")),
                duration(s.get("averageDurationSeconds")),
                str(s.get("consecutiveFailures", 0)), str(s.get("retries", 0)),
                str(s.get("missed", 0))]
        rows.append(row)
    return table(header, rows)


def overdue_items(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if (conditions(i).get("Overdue") or {}).get("status") == "True"]


def overdue_table(items: Sequence[dict[str, Any]], now: datetime) -> str:
    rows = []
    for item in items:
        cond = conditions(item)["Overdue"]
        rows.append([item["metadata"].get("namespace", ""), item["metadata"]["name"],
                     cond.get("reason", ""), age(cond.get("lastTransitionTime"), now),
                     str((_status(item).get("stats") or {}).get("missed", 0)),
                     cond.get("message", "")])
    return table(["NAMESPACE", "NAME", "REASON", "SINCE", "MISSED", "MESSAGE"], rows)


# -- describe -----------------------------------------------------------------------------

def _schedule_line(spec: dict[str, Any]) -> str:
    if spec.get("schedules"):
        return f"{len(spec['schedules'])} schedules (below)"
    return _kind_line(spec.get("schedule") or {})


def _kind_line(sched: dict[str, Any]) -> str:
    for kind in ("cron", "every", "daily", "at"):
        if kind in sched:
            return f"{kind} {sched[kind]}"
    for kind in ("weekly", "monthly"):
        if kind in sched:
            return f"{kind} {sched[kind].get('day')} {sched[kind].get('time')}"
    return "none (runs only when triggered)"


def _calendar_lines(sched: dict[str, Any], indent: str) -> list[str]:
    """The second wave's schedule fields, only where set (older objects read as before)."""
    out = []
    if sched.get("activeFrom") or sched.get("activeUntil"):
        out.append(f"{indent}Active:      from {sched.get('activeFrom') or 'always'} until "
                   f"{sched.get('activeUntil') or 'forever'}")
    skip = sched.get("skip") or {}
    parts = [*(skip.get("dates") or []), *(f"cron {c}" for c in skip.get("cron") or []),
             *(f"{w.get('from')} to {w.get('until')}" for w in skip.get("windows") or [])]
    if parts:
        out.append(f"{indent}Skip:        " + ", ".join(parts))
    if sched.get("catchUp") not in (None, "Latest"):
        out.append(f"{indent}Catch-up:    {sched['catchUp']}")
    return out


def _entries_lines(spec: dict[str, Any], st: dict[str, Any], zone: tzinfo,
                   local: tzinfo) -> list[str]:
    """spec.schedules: one block per entry, with its own next run."""
    if not spec.get("schedules"):
        return []
    rows = {r.get("name"): r for r in st.get("schedules") or []}
    out = ["Schedules:"]
    for entry in spec["schedules"]:
        row = rows.get(entry.get("name")) or {}
        nxt = (row.get("nextRunTimes") or [None])[0]
        out.append(f"  {entry.get('name')}: {_kind_line(entry)} "
                   f"({entry.get('timeZone', 'UTC')})")
        out.append(f"    In words:    {row.get('description') or '-'}")
        params = entry.get("parameters") or {}
        if params:
            out.append("    Parameters:  " + ", ".join(f"{k}={v}"
                                                   for k, v in sorted(params.items())))
        out += _calendar_lines(entry, "    ")
        out.append(f"    Next run:    {_when(nxt, zone, local) if nxt else 'none'}")
    return out


def _when(text: str, zone: tzinfo, local: tzinfo) -> str:
    t = parse_time(text)
    if t is None:
        return text
    a, b = t.astimezone(zone), t.astimezone(local)
    return f"{a:%a %Y-%m-%d %H:%M %Z}   (local {b:%a %Y-%m-%d %H:%M %Z})"


def describe(obj: dict[str, Any], events: Sequence[dict[str, Any]], now: datetime,
             local: tzinfo | None = None) -> str:
    """A person's view at 3 a.m.: what it is, when it runs next, what happened, and why."""
    local = local or now.astimezone().tzinfo or UTC
    meta, spec, st = obj["metadata"], obj.get("spec") or {}, _status(obj)
    sched_st = st.get("schedule") or {}
    zone_name = sched_st.get("timeZone") or (spec.get("schedule") or {}).get("timeZone") or "UTC"
    try:
        zone: tzinfo = ZoneInfo(zone_name)
    except (ValueError, KeyError):
        zone = UTC
    retry = spec.get("retry") or {}
    timeout = f"{spec['timeoutSeconds']}s" if spec.get("timeoutSeconds") else "none"
    backoff = retry.get("backoff") or {}
    out = [
        f"Name:          {meta['name']}",
        f"Namespace:     {meta.get('namespace', '')}",
        f"Created:       {meta.get('creationTimestamp', NONE)} "
        f"({age(meta.get('creationTimestamp'), now)} ago)",
        f"Schedule:      {_schedule_line(spec)}",
        f"  In words:    {sched_st.get('description') or '-'}",
        f"  Time zone:   {zone_name}",
        f"  Runs as:     {sched_st.get('mode') or '-'}"
        + (f" (CronJob {st['cronJob']})" if st.get("cronJob") else ""),
        f"Suspended:     {'yes' if spec.get('suspend') else 'no'}"
        + (" (auto-suspended)" if (conditions(obj).get("Suspended") or {}).get("reason")
           == "AutoSuspended" else ""),
        f"Concurrency:   {spec.get('concurrencyPolicy', 'Forbid')}"
        + (f", at most {spec['maxConcurrency']} at once" if spec.get("maxConcurrency") else "")
        + (f", queue up to {spec['maxQueued']}" if spec.get("maxQueued") is not None else ""),
        f"Timeout:       {timeout}",
        f"Retry:         limit {retry.get('limit', 0)}, backoff "
        f"{backoff.get('initialDelaySeconds', 60)}s x{backoff.get('factor', 2.0)} up to "
        f"{backoff.get('maxDelaySeconds', 3600)}s"
        + (f", non-retryable exit codes {retry['nonRetryableExitCodes']}"
           if retry.get("nonRetryableExitCodes") else ""),
    ]
    out += _calendar_lines(spec.get("schedule") or {}, "  ")
    out += parameter_lines(spec)
    out += _entries_lines(spec, st, zone, local)
    out.append("")
    out.append("Next runs:")
    times = sched_st.get("nextRunTimes") or []
    out += [f"  {_when(t, zone, local)}" for t in times] or ["  none"]
    if st.get("retry"):
        r = st["retry"]
        out.append(f"Pending retry: attempt {r.get('attempt')} of {r.get('job')} at "
                   f"{_when(r.get('nextRetryTime', ''), zone, local)}")
    active = st.get("active") or []
    out.append("")
    out.append(f"Active runs:   {len(active)}")
    out += [f"  {a['job']} ({a.get('trigger', '-')}, attempt {a.get('attempt', 1)}, "
            + ("queued by its admission system, created " if a.get("result") == "Queued"
               else "started ")
            + f"{age(a.get('startTime'), now)} ago)" for a in active]
    bf = st.get("backfill") or {}
    if bf.get("phase") == "Invalid":
        out.append(f"Backfill:      not started: {bf.get('message', '')}")
    elif bf:
        out.append(f"Backfill:      {bf.get('phase')}, {bf.get('from')} until {bf.get('until')}: "
                   f"{bf.get('started', 0)} of {bf.get('total', 0)} started, "
                   f"{bf.get('succeeded', 0)} succeeded, {bf.get('failed', 0)} failed"
                   + (f", next {bf['next']}" if bf.get("next") else ""))
    queued = st.get("queued") or []
    if queued:
        out.append(f"Queued runs:   {len(queued)}")
        out += ["  " + line for line in queue_table(obj, now).splitlines()]
    out.append("")
    out.append("Run history:")
    out += ["  " + line for line in history_table(obj, now).splitlines()]
    last = st.get("lastRun") or {}
    if last.get("output"):
        out.append(f"Last output ({last.get('job')}, {last.get('result', '-')}):")
        out += ["  | " + line for line in str(last["output"]).splitlines()]
    s = st.get("stats") or {}
    out.append("")
    out.append(f"Stats:         {s.get('runs', 0)} runs, {s.get('succeeded', 0)} succeeded, "
               f"{s.get('failed', 0)} failed, success rate {rate(s.get('successRate'))}, "
               f"average {duration(s.get('averageDurationSeconds'))}, "
               f"{s.get('consecutiveFailures', 0)} failures in a row, "
               f"{s.get('retries', 0)} retries, {s.get('missed', 0)} missed"
               + (f", {s['skipped']} skipped" if s.get("skipped") else ""))
    out.append("")
    out.append("Conditions:")
    conds = st.get("conditions") or []
    out += ["  " + line for line in table(
        ["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"],
        [[c["type"], c["status"], c.get("reason", ""),
          age(c.get("lastTransitionTime"), now), c.get("message", "")] for c in conds],
    ).splitlines()]
    out.append("")
    out.append("Events:")
    if events:
        out += ["  " + line for line in table(
            ["TYPE", "REASON", "AGE", "MESSAGE"],
            [[e.get("type", ""), e.get("reason", ""), age(event_time(e), now),
              e.get("message", "")] for e in events],
        ).splitlines()]
    else:
        out.append("  <none>")
    return "\n".join(out)


def parameter_lines(spec: dict[str, Any]) -> list[str]:
    """The parameters: typed ones in schema order with type, default and description, then
    the untyped defaults (type String)."""
    defaults = spec.get("parameters") or {}
    schema = [p for p in spec.get("parameterSchema") or [] if isinstance(p, dict)]
    if not defaults and not schema:
        return []
    rows = []
    for p in schema:
        kind = p.get("type", "String")
        rules = [f"one of {'|'.join(p['enum'])}" if p.get("enum") else "",
                 f">= {p['minimum']}" if p.get("minimum") is not None else "",
                 f"<= {p['maximum']}" if p.get("maximum") is not None else "",
                 f"~ {p['pattern']}" if p.get("pattern") else ""]
        kind += "".join(f", {r}" for r in rules if r)
        default = defaults.get(p.get("name"))
        rows.append([p.get("name", "?"), kind, "-" if default is None else default,
                     "yes" if p.get("required") else "no", p.get("description") or ""])
    typed = {r[0] for r in rows}
    rows += [[k, "String (untyped)", v, "no", ""] for k, v in sorted(defaults.items())
             if k not in typed]
    return ["Parameters:"] + ["  " + line for line in table(
        ["NAME", "TYPE", "DEFAULT", "REQUIRED", "DESCRIPTION"], rows).splitlines()]


def event_time(e: dict[str, Any]) -> str | None:
    return (e.get("lastTimestamp") or e.get("eventTime")
            or (e.get("metadata") or {}).get("creationTimestamp"))


def recent_events(events: Iterable[dict[str, Any]], limit: int = 10) -> list[dict[str, Any]]:
    ordered = sorted(events, key=lambda e: event_time(e) or "")
    return ordered[-limit:]


def suspend_change(name: str, namespace: str, suspend: bool) -> str:
    """What ``suspend``/``resume --dry-run`` prints: the same change for a Git repository."""
    value = "true" if suspend else "false"
    return (f"# In Git, change the BackgroundJob {namespace}/{name}:\n"
            f"spec:\n  suspend: {value}\n"
            f"# or, the same patch by hand:\n"
            f"kubectl -n {namespace} patch backgroundjob {name} --type merge "
            f"-p '{{\"spec\":{{\"suspend\":{value}}}}}'")
