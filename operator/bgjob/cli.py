"""``kubectl bgjob``: the kubectl plugin (``kubectl-bgjob`` on PATH).

It reads status and writes only what a person could write with ``kubectl``: the trigger
annotations (run-now, run-parameters, run-force, cancel, resume) and ``spec.suspend``. Every
error is one line on stderr and a non-zero exit, never a stack trace. What it prints is built
by ``bgjob.cliview`` (pure, golden-tested).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

import yaml
from kubernetes.config.config_exception import ConfigException
from pydantic import ValidationError

from bgjob import api, cliview, manifests, schedule, triggers
from bgjob import status as st
from bgjob.api import Schedule
from bgjob.k8s import Forbidden, Kube, KubeError, NotFound, load_config, path_for

T = TypeVar("T")
ANN_RESUME = f"{api.GROUP}/resume"
EXIT_ERROR = 1
EXIT_TIMEOUT = 124
TOO_MANY_TRIES = 10
PARAM_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class CliError(Exception):
    """A failure the user should read as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# -- offline: validate --------------------------------------------------------------------

def parse_schedule(text: str, tz: str) -> Schedule:
    """``every:30m``, ``daily:02:00``, ``weekly:Monday:03:00``, ``monthly:1:08:00``,
    ``at:2026-12-01T12:00:00Z``, or a cron expression."""
    kind, sep, rest = text.partition(":")
    doc: dict[str, Any] = {"timeZone": tz}
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
    s = parse_schedule(args.schedule, args.tz)
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

def _dump(doc: Any, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(doc, indent=2))
    else:
        print(yaml.safe_dump(doc, sort_keys=False), end="")


class Session:
    """One plugin invocation's view of the cluster: client, namespace, error wording."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        try:
            self.kube = Kube(load_config(args.kubeconfig, args.context, retries=0))
        except (ConfigException, OSError, TypeError, ValueError) as exc:
            raise CliError(f"no usable kubeconfig: {str(exc).splitlines()[0]}") from None
        self.server = str(self.kube.api_client.configuration.host)
        self.namespace = args.namespace or _kubeconfig_namespace(args)

    def call(self, fn: Callable[[], T], name: str | None = None) -> T:
        """Run one API call; turn every failure into a one-line CliError. Like kubectl, a
        429 (priority and fairness, or storage still initializing) is retried a few times."""
        for attempt in range(TOO_MANY_TRIES):
            try:
                return fn()
            except CliError:
                raise
            except KubeError as exc:
                if exc.status == 429 and attempt + 1 < TOO_MANY_TRIES:
                    time.sleep(1)
                    continue
                raise self.explain(exc, name) from None
            except Exception as exc:
                raise self.explain(exc, name) from None
        raise AssertionError("unreachable")

    def explain(self, exc: Exception, name: str | None = None) -> CliError:
        if isinstance(exc, NotFound):
            if name and "not found" in exc.message:
                return CliError(f'backgroundjob "{name}" not found in namespace '
                                f'"{self.namespace}"')
            return CliError("the BackgroundJob CRD is not installed in this cluster "
                            "(kubectl apply -f crds/, or install the Helm chart)")
        if isinstance(exc, Forbidden):
            return CliError(f"forbidden: {exc.message}")
        if isinstance(exc, KubeError):
            return CliError(f"{exc.reason or 'error'}: {exc.message}")
        return CliError(f"cannot reach the API server at {self.server}: {_root_cause(exc)}")

    def get(self, name: str) -> dict[str, Any]:
        return self.call(lambda: self.kube.get(api.API_VERSION, api.PLURAL, self.namespace,
                                               name), name)

    def all(self, all_namespaces: bool = False) -> list[dict[str, Any]]:
        ns = None if all_namespaces else self.namespace
        items = self.call(lambda: self.kube.list(api.API_VERSION, api.PLURAL, ns))
        return sorted(items, key=lambda i: (i["metadata"].get("namespace", ""),
                                            i["metadata"]["name"]))

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call(lambda: self.kube.patch(api.API_VERSION, api.PLURAL, self.namespace,
                                                 name, body), name)

    def job(self, job: str) -> dict[str, Any] | None:
        def get() -> dict[str, Any] | None:
            try:
                return self.kube.get("batch/v1", "jobs", self.namespace, job)
            except NotFound:  # the Job is not there (yet, or any more)
                return None

        return self.call(get)

    def events(self, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={name},involvedObject.kind={api.KIND}"
        doc = self.call(lambda: self.kube.request(
            "GET", path_for("v1", "events", self.namespace),
            query=[("fieldSelector", selector)]))
        return cliview.recent_events(doc.get("items") or [])

    def pods(self, job: str) -> list[dict[str, Any]]:
        items = self.call(lambda: self.kube.list(
            "v1", "pods", self.namespace, f"{manifests.JOB_NAME_LABEL}={job}"))
        return sorted(items, key=lambda p: p["metadata"].get("creationTimestamp", ""))

    def stream_logs(self, pod: str, container: str | None, follow: bool) -> Iterator[str]:
        query = [("follow", "true" if follow else "false")]
        if container:
            query.append(("container", container))
        path = path_for("v1", "pods", self.namespace, pod, "log")
        lines = self.kube.stream_lines(path, query)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except NotFound as exc:
                raise CliError(f"no logs: {exc.message}") from None
            except Exception as exc:
                raise self.explain(exc) from None
            yield line


def _root_cause(exc: BaseException) -> str:
    while True:
        inner = getattr(exc, "reason", None)
        if isinstance(inner, BaseException) and inner is not exc:
            exc = inner
            continue
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    if "Connection refused" in text or isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return text[:200]


def _kubeconfig_namespace(args: argparse.Namespace) -> str:
    from kubernetes import config

    try:
        contexts, ctx = config.list_kube_config_contexts(config_file=args.kubeconfig)
        if args.context:
            ctx = next(c for c in contexts if c["name"] == args.context)
        return str(ctx["context"].get("namespace") or "default")
    except Exception:
        return "default"


def _output(args: argparse.Namespace, doc: Any) -> bool:
    """Print ``doc`` for scripts when -o json|yaml was asked for."""
    if getattr(args, "output", "table") in ("json", "yaml"):
        _dump(doc, args.output)
        return True
    return False


def _as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _empty(s: Session, all_namespaces: bool, what: str = "BackgroundJobs") -> None:
    where = "" if all_namespaces else f" in namespace {s.namespace}"
    print(f"No {what} found{where}.", file=sys.stderr)


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
    print(cliview.history_table(obj, datetime.now(UTC)))
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

def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    """``--param k=v`` pairs, judged by the operator's own rules before anything is written."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"--param {pair!r}: expected KEY=VALUE")
        if not PARAM_KEY.match(key):
            raise CliError(f"--param {pair!r}: the key must start with a letter or _ and "
                           "hold only letters, digits, _ . -")
        params[key] = value
    try:
        triggers.parse_parameters(json.dumps(params))
    except triggers.TriggerError as exc:
        raise CliError(str(exc)) from None
    return params


def new_token() -> str:
    return str(time.time_ns() // 1_000_000)


def run_patch(token: str, params: dict[str, str], force: bool) -> dict[str, Any]:
    """One metadata patch: the token, and this run's parameters and force (or none, so that
    an earlier run's leftovers do not leak into this one)."""
    return {"metadata": {"annotations": {
        api.ANN_RUN_NOW: token,
        api.ANN_RUN_PARAMETERS: json.dumps(params, sort_keys=True) if params else None,
        api.ANN_RUN_FORCE: "true" if force else None,
    }}}


def cmd_run(args: argparse.Namespace) -> int:
    params = parse_params(args.param)
    s = Session(args)
    s.get(args.name)
    token = args.token or new_token()
    job = manifests.manual_job_name(args.name, token)
    s.patch(args.name, run_patch(token, params, args.force))
    if not (args.wait or args.logs):
        print(f"job.batch/{job}")
        return 0
    print(f"job.batch/{job}", file=sys.stderr)
    deadline = time.monotonic() + args.timeout
    _await_start(s, args.name, token, job, deadline)
    return _follow(s, args.name, job, deadline, args.logs)


def _poll(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise CliError(f"timed out waiting for {what}", EXIT_TIMEOUT)
    time.sleep(0.5)


def _await_start(s: Session, name: str, token: str, job: str, deadline: float) -> None:
    """Until the operator has handled the token: the Job exists, or it said why not."""
    while True:
        st = s.get(name).get("status") or {}
        if st.get("lastHandledRunNow") == token:
            if s.job(job) is not None:
                return
            why = next((e for e in reversed(s.events(name))
                        if e.get("reason") in ("TriggerRejected", "InvalidTrigger")), None)
            raise CliError(f"run not started: {why['reason']}: {why.get('message', '')}"
                           if why else "run not started (see kubectl bgjob describe "
                           f"{name})")
        _poll(deadline, f"the operator to start the run of {name}")


def _record(st: dict[str, Any], job: str) -> dict[str, Any] | None:
    return next((r for r in [st.get("lastRun") or {}, *(st.get("runs") or [])]
                 if r.get("job") == job), None)


def _follow(s: Session, name: str, job: str, deadline: float, logs: bool) -> int:
    """Follow the run through its retries to the end; the exit status is its result."""
    root = job
    while True:
        if logs:
            _print_logs(s, job, deadline)
        while True:
            st = s.get(name).get("status") or {}
            rec = _record(st, job)
            if rec and rec.get("result") not in (None, "Running"):
                break
            _poll(deadline, f"run {job} to finish")
        result, code = rec["result"], rec.get("exitCode")
        detail = f" (exit code {code})" if code is not None else ""
        print(f"{job}: {result}{detail}", file=sys.stderr)
        if result not in ("Succeeded", "Cancelled"):
            # The operator sets status.retry in the same write that records the failure, and
            # creates the retry Job before it clears status.retry: one of the two is visible.
            pending = st.get("retry") or {}
            attempt = int(pending.get("attempt") or 0) if pending.get("job") == job else 0
            nxt = manifests.retry_job_name(root, attempt or int(rec.get("attempt", 1)) + 1)
            if attempt or s.job(nxt) is not None:
                print(f"retry: attempt {attempt or int(rec.get('attempt', 1)) + 1} as {nxt}"
                      + (f" at {pending.get('nextRetryTime')}" if attempt else ""),
                      file=sys.stderr)
                while s.job(nxt) is None:
                    _poll(deadline, f"retry {nxt} to start")
                job = nxt
                continue
        if result == "Succeeded":
            return 0
        return code if isinstance(code, int) and 0 < code < 256 else EXIT_ERROR


def _print_logs(s: Session, job: str, deadline: float) -> None:
    """Stream the newest pod's log once it has one (no kubelet yet means nothing to show)."""
    while True:
        pods = [p for p in s.pods(job) if (p.get("spec") or {}).get("nodeName")]
        if pods and (pods[-1].get("status") or {}).get("phase") not in (None, "Pending"):
            break
        if (j := s.job(job)) and any(c.get("type") in ("Complete", "Failed") and
                                     c.get("status") == "True" for c in
                                     (j.get("status") or {}).get("conditions") or []):
            if not pods:
                return
            break
        _poll(deadline, f"a pod of {job} to start")
    for line in s.stream_logs(pods[-1]["metadata"]["name"], None, follow=True):
        print(line, flush=True)


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

def _verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def candidates(parser: argparse.ArgumentParser, words: Sequence[str],
               names: Callable[[str | None], list[str]]) -> list[str]:
    """What may come next after ``words`` (the last one being typed): verbs, a verb's flags,
    or BackgroundJob names (``names(namespace)``, asked only when a name fits)."""
    verbs = _verbs(parser)
    *done, cur = [*words] or [""]
    flags_with_value = {"--kubeconfig", "--context", "-n", "--namespace"}
    verb, namespace, skip = None, None, False
    positional: list[str] = []  # after the verb
    for i, word in enumerate(done):
        if skip:
            skip = False
            continue
        if word in flags_with_value or (verb and word in ("--param", "--run", "--timeout",
                                                          "-o", "--output", "-c", "--tz",
                                                          "--count", "--from", "--name")):
            skip = True
            if word in ("-n", "--namespace") and i + 1 < len(done):
                namespace = done[i + 1]
            continue
        if not word.startswith("-"):
            if verb is None:
                verb = word
            else:
                positional.append(word)
    if verb is None:
        return sorted(v for v in verbs if v.startswith(cur))
    p = verbs.get(verb)
    if p is None:
        return []
    if cur.startswith("-"):
        return sorted(o for a in p._actions for o in a.option_strings if o.startswith(cur))
    if any(a.dest == "name" for a in p._actions) and not positional:
        return sorted(n for n in names(namespace) if n.startswith(cur))
    return []


def _live_names(args: argparse.Namespace) -> Callable[[str | None], list[str]]:
    def names(namespace: str | None) -> list[str]:
        try:
            args.namespace = namespace or args.namespace
            return [i["metadata"]["name"] for i in Session(args).all()]
        except Exception:
            return []
    return names


def completion_script(shell: str) -> str:
    """Completion for ``kubectl-bgjob``; ``kubectl bgjob`` itself completes through the
    ``kubectl_complete-bgjob`` executable that kubectl (1.26+) looks for on PATH."""
    script = """# kubectl bgjob completion; see the README for how to install it.
_kubectl_bgjob() {
  local cur="${COMP_WORDS[COMP_CWORD]}"
  COMPREPLY=($(compgen -W "$(kubectl-bgjob __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" \
    "$cur" 2>/dev/null)" -- "$cur"))
}
complete -F _kubectl_bgjob kubectl-bgjob
"""
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script


def cmd_completion(args: argparse.Namespace) -> int:
    print(completion_script(args.shell), end="")
    return 0


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


# -- the parser -----------------------------------------------------------------------------

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
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)
    verb("cancel", "stop every active run (recorded as Cancelled, not retried)",
         "kubectl bgjob cancel document-cleanup", cmd_cancel, output=())
    for name, fn, words in (("suspend", cmd_suspend, "pause the schedule (manual runs still "
                             "work)"), ("resume", cmd_resume, "resume the schedule (also "
                             "lifts an auto-suspension)")):
        p = verb(name, words, f"kubectl bgjob {name} document-cleanup --dry-run", fn, output=())
        p.add_argument("--dry-run", action="store_true",
                       help="write nothing; print the same change as YAML for Git")
    verb("history", "the run history: durations, results, exit codes",
         "kubectl bgjob history document-cleanup", cmd_history)
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
