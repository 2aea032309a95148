"""``kubectl bgjob``: the kubectl plugin (``kubectl-bgjob`` on PATH).

It reads status and writes only what a person could write with ``kubectl``: the trigger
annotations (run-now, run-parameters, run-force, cancel, resume) and ``spec.suspend``. Every
error is one line on stderr and a non-zero exit, never a stack trace. What it prints is built
by ``bgjob.cliview`` (pure, golden-tested).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from bgjob import api, cliview, schedule
from bgjob import status as st
from bgjob.api import Schedule
from bgjob.clibackfill import cmd_backfill
from bgjob.clicomplete import _live_names, candidates, cmd_completion
from bgjob.clirun import cmd_run, new_token
from bgjob.clisession import CliError, Session, _as_list, _dump, _empty, _output

ANN_RESUME = f"{api.GROUP}/resume"


# -- offline: validate --------------------------------------------------------------------

def parse_schedule(text: str, tz: str, skip: dict[str, Any] | None = None) -> Schedule:
    """``every:30m``, ``daily:02:00``, ``weekly:Monday:03:00``, ``monthly:1:08:00``,
    ``at:2026-12-01T12:00:00Z``, or a cron expression; ``skip`` as in schedule.skip."""
    kind, sep, rest = text.partition(":")
    doc: dict[str, Any] = {"timeZone": tz}
    if skip:
        doc["skip"] = skip
    if sep and kind in ("every", "daily", "at"):
        doc[kind] = rest
    elif sep and kind in ("weekly", "monthly"):
        day, _, hhmm = rest.partition(":")
        doc[kind] = {"day": int(day) if kind == "monthly" and day.isdigit() else day,
                     "time": hhmm}
    else:
        doc["cron"] = text
    try:
        return Schedule.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(map(str, err["loc"])) or "schedule"
        raise CliError(f"spec.schedule.{field}: {err['msg']}") from None


def cmd_validate(args: argparse.Namespace) -> int:
    skip = {k: v for k, v in (("dates", args.skip_date), ("cron", args.skip_cron)) if v}
    s = parse_schedule(args.schedule, args.tz, skip)
    try:
        compiled = schedule.compile_schedule(s, args.namespace or "default", args.name)
    except schedule.ScheduleError as exc:
        raise CliError(str(exc)) from None
    try:
        start = st.parse_time(args.from_) or datetime.now(UTC).replace(microsecond=0)
    except ValueError:
        raise CliError(f"--from: not an RFC 3339 time: {args.from_!r}") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=ZoneInfo(compiled.time_zone))
    times = schedule.next_run_times(compiled, start, start, args.count)
    if args.output in ("json", "yaml"):
        doc = {"description": compiled.description, "timeZone": compiled.time_zone,
               "mode": compiled.mode.value, "cron": compiled.cron or None,
               "nextRunTimes": [st.fmt(t) for t in times]}
        _dump(doc, args.output)
        return 0
    zone = ZoneInfo(compiled.time_zone)
    print(f"{compiled.description} ({compiled.time_zone}; runs as "
          f"{'a native CronJob' if compiled.mode is schedule.Mode.CRONJOB else 'operator-timed'}"
          f"{': ' + compiled.cron if compiled.cron else ''})")
    for t in times:
        print(f"  {t.astimezone(zone).isoformat()}  "
              f"({st.fmt(t)})")
    return 0


# -- the cluster side ---------------------------------------------------------------------

def cmd_list(args: argparse.Namespace) -> int:
    s = Session(args)
    items = s.all(args.all_namespaces)
    if _output(args, _as_list(items)):
        return 0
    if not items:
        _empty(s, args.all_namespaces)
        return 0
    print(cliview.list_table(items, datetime.now(UTC), wide=args.output == "wide",
                             all_namespaces=args.all_namespaces))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    s = Session(args)
    obj = s.get(args.name)
    if _output(args, obj):
        return 0
    print(cliview.describe(obj, s.events(args.name), datetime.now(UTC)))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    s = Session(args)
    obj = s.get(args.name)
    runs = (obj.get("status") or {}).get("runs") or []
    if _output(args, runs):
        return 0
    if not runs:
        print(f"No runs recorded for {args.name} yet.", file=sys.stderr)
        return 0
    print(cliview.history_table(obj, datetime.now(UTC), wide=args.output == "wide"))
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    s = Session(args)
    obj = s.get(args.name)
    queued = (obj.get("status") or {}).get("queued") or []
    if _output(args, queued):
        return 0
    if not queued:
        print(f"No runs are queued for {args.name}.", file=sys.stderr)
        return 0
    print(cliview.queue_table(obj, datetime.now(UTC)))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    s = Session(args)
    items = [s.get(args.name)] if args.name else s.all(args.all_namespaces)
    if _output(args, {f"{i['metadata'].get('namespace')}/{i['metadata']['name']}":
                      (i.get("status") or {}).get("stats") or {} for i in items}):
        return 0
    if not items:
        _empty(s, args.all_namespaces)
        return 0
    print(cliview.stats_table(items, all_namespaces=args.all_namespaces))
    return 0


def cmd_overdue(args: argparse.Namespace) -> int:
    s = Session(args)
    items = cliview.overdue_items(s.all(args.all_namespaces))
    if _output(args, _as_list(items)):
        return 0
    if not items:
        _empty(s, args.all_namespaces, "overdue BackgroundJobs")
        return 0
    print(cliview.overdue_table(items, datetime.now(UTC)))
    return 0


# -- writes: run, cancel, suspend, resume -------------------------------------------------

def cmd_cancel(args: argparse.Namespace) -> int:
    s = Session(args)
    obj = s.get(args.name)
    active = [a["job"] for a in (obj.get("status") or {}).get("active") or []]
    pending = (obj.get("status") or {}).get("retry")
    s.patch(args.name, {"metadata": {"annotations": {api.ANN_CANCEL: new_token()}}})
    what = ", ".join(active) if active else "no active runs"
    print(f"cancel requested for {args.name}: {what}"
          + (f"; pending retry of {pending['job']} dropped" if pending else ""))
    return 0


def _set_suspend(args: argparse.Namespace, suspend: bool) -> int:
    s = Session(args)
    obj = s.get(args.name)
    if args.dry_run:
        print(cliview.suspend_change(args.name, s.namespace, suspend))
        return 0
    auto = (cliview.conditions(obj).get("Suspended") or {}).get("reason") == "AutoSuspended"
    body: dict[str, Any] = {"spec": {"suspend": suspend}}
    if not suspend and auto:
        body["metadata"] = {"annotations": {ANN_RESUME: new_token()}}
    s.patch(args.name, body)
    verb = "suspended" if suspend else "resumed"
    print(f"backgroundjob.bgjob.dev/{args.name} {verb}"
          + (" (lifted the auto-suspension)" if not suspend and auto else ""))
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    return _set_suspend(args, True)


def cmd_resume(args: argparse.Namespace) -> int:
    return _set_suspend(args, False)


def cmd_logs(args: argparse.Namespace) -> int:
    s = Session(args)
    obj = s.get(args.name)
    st = obj.get("status") or {}
    job = args.run or ((st.get("active") or [{}])[0].get("job")
                       or (st.get("lastRun") or {}).get("job"))
    if not job:
        raise CliError(f"{args.name} has no runs yet (start one: kubectl bgjob run "
                       f"{args.name})")
    pods = s.pods(job)
    if not pods:
        raise CliError(f"no pods left for run {job} (pruned by history limits, or the run "
                       "never started)")
    pod = pods[-1]["metadata"]["name"]
    if not (pods[-1].get("spec") or {}).get("nodeName"):
        raise CliError(f"pod {pod} of run {job} has not been scheduled to a node yet")
    for line in s.stream_logs(pod, args.container, args.follow):
        print(line, flush=True)
    return 0


# -- completion -----------------------------------------------------------------------------

# -- the parser -----------------------------------------------------------------------------

def _complete(words: Sequence[str]) -> list[str]:
    parser = build_parser()
    known, _ = _connection_flags(None).parse_known_args(list(words[:-1]))
    return candidates(parser, words, _live_names(known))


def complete_main() -> None:
    """``kubectl_complete-bgjob``: kubectl's plugin completion protocol (cobra's output:
    one candidate per line, then ``:4``, which means "no file completion")."""
    for word in _complete(sys.argv[1:]):
        print(word)
    print(":4")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (exit 2, like kubectl)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _connection_flags(default: Any) -> _Parser:
    p = _Parser(add_help=False)
    p.add_argument("--kubeconfig", default=default, help="kubeconfig file")
    p.add_argument("--context", default=default, help="kubeconfig context")
    p.add_argument("-n", "--namespace", default=default, help="namespace")
    return p


def build_parser() -> argparse.ArgumentParser:
    # The flags work before and after the verb; a verb's copy must not reset the global one.
    common = _connection_flags(argparse.SUPPRESS)
    parser = _Parser(prog="kubectl bgjob", parents=[_connection_flags(None)],
                     description="Operate BackgroundJobs (bgjob.dev): see what failed, when it "
                     "runs next, what the logs said; trigger, cancel, pause and resume.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB",
                                parser_class=_Parser)

    def verb(name: str, help_: str, example: str, fn: Callable[[argparse.Namespace], int],
             output: tuple[str, ...] = ("table", "json", "yaml"), named: bool = True,
             all_ns: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, parents=[common],
                           epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if named:
            p.add_argument("name", help="BackgroundJob name")
        if all_ns:
            p.add_argument("-A", "--all-namespaces", action="store_true",
                           help="all namespaces")
        if output:
            p.add_argument("-o", "--output", choices=output, default="table",
                           help="output format (default table)")
        p.set_defaults(func=fn)
        return p

    verb("list", "list BackgroundJobs with their last result and next run",
         "kubectl bgjob list -A -o wide", cmd_list, ("table", "wide", "json", "yaml"),
         named=False, all_ns=True)
    verb("describe", "schedule in words, next runs, history, stats, conditions, events",
         "kubectl bgjob describe document-cleanup -n platform", cmd_describe)
    p = verb("run", "start a manual run (prints the Job name)",
             "kubectl bgjob run document-refresh --param scope=full --wait --logs",
             cmd_run, output=())
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="parameter override for this run (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="run even if another run is active (ignores concurrencyPolicy Forbid)")
    p.add_argument("--wait", action="store_true",
                   help="follow the run (and its retries) to the end; exit with its result")
    p.add_argument("--logs", action="store_true", help="stream the run's logs (implies --wait)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait (default 3600)")
    p.add_argument("--at", default=None, metavar="TIME",
                   help="start the run at this RFC 3339 time (it waits in status.queued)")
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)
    verb("cancel", "stop every active run (recorded as Cancelled, not retried)",
         "kubectl bgjob cancel document-cleanup", cmd_cancel, output=())
    for name, fn, words in (("suspend", cmd_suspend, "pause the schedule (manual runs still "
                             "work)"), ("resume", cmd_resume, "resume the schedule (also "
                             "lifts an auto-suspension)")):
        p = verb(name, words, f"kubectl bgjob {name} document-cleanup --dry-run", fn, output=())
        p.add_argument("--dry-run", action="store_true",
                       help="write nothing; print the same change as YAML for Git")
    p = verb("backfill", "run every time the schedule would have fired in [--from, --until)",
             "kubectl bgjob backfill nightly-report --from 2026-11-01T00:00:00Z "
             "--until 2026-11-06T00:00:00Z --dry-run", cmd_backfill)
    p.add_argument("--from", dest="from_", required=True, metavar="TIME",
                   help="start of the range, included (RFC 3339)")
    p.add_argument("--until", required=True, metavar="TIME",
                   help="end of the range, excluded (RFC 3339)")
    p.add_argument("--dry-run", action="store_true", help="print the times; write nothing")
    verb("queue", "runs waiting for a slot (Enqueue) or for their time (run --at)",
         "kubectl bgjob queue document-cleanup", cmd_queue)
    verb("history", "the run history: durations, results, exit codes (-o wide: output)",
         "kubectl bgjob history document-cleanup -o wide", cmd_history,
         ("table", "wide", "json", "yaml"))
    p = verb("logs", "print the logs of the latest (or a given) run",
             "kubectl bgjob logs document-cleanup --run document-cleanup-29390520 -f",
             cmd_logs, output=())
    p.add_argument("--run", default=None, metavar="JOB", help="the run's Job name")
    p.add_argument("-c", "--container", default=None, help="container (default: the first)")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming")
    verb("overdue", "BackgroundJobs whose due run did not start",
         "kubectl bgjob overdue -A", cmd_overdue, named=False, all_ns=True)
    p = verb("stats", "runs, success rate, durations, failures in a row, retries, missed",
             "kubectl bgjob stats -A", cmd_stats, named=False, all_ns=True)
    p.add_argument("name", nargs="?", default=None, help="one BackgroundJob (default: all)")
    p = verb("validate", "describe a schedule and its next run times (offline)",
             "kubectl bgjob validate 'H 2 * * 1-5' --tz Europe/Berlin --count 3",
             cmd_validate, output=("table", "json", "yaml"), named=False)
    p.add_argument("schedule", help="cron expression, or every:30m, daily:02:00, "
                   "weekly:Monday:03:00, monthly:1:08:00, at:2026-12-01T12:00:00Z")
    p.add_argument("--tz", default="UTC", help="IANA time zone (default UTC)")
    p.add_argument("--count", type=int, default=5, help="how many next times (default 5)")
    p.add_argument("--from", dest="from_", default=None, help="start time (default now)")
    p.add_argument("--name", default="validate",
                   help="BackgroundJob name that H hashes with (default validate)")
    p.add_argument("--skip-date", action="append", default=[], metavar="YYYY-MM-DD",
                   help="leave out due times on this local date (repeatable), as "
                   "schedule.skip.dates")
    p.add_argument("--skip-cron", action="append", default=[], metavar="CRON",
                   help="leave out due times this cron matches (repeatable), as "
                   "schedule.skip.cron")
    p = verb("completion", "print a shell completion script",
             "source <(kubectl bgjob completion bash)", cmd_completion, output=(), named=False)
    p.add_argument("shell", choices=["bash", "zsh"])
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["__complete"]:  # the bash script's helper, not a verb
        print("\n".join(_complete(argv[1:])))
        sys.exit(0)
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
