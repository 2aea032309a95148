"""``kubectl bgjob run``: parameters checked before anything is written, one merge patch of
the trigger annotations, and ``--wait``/``--logs`` following the run through its retries."""

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from bgjob import api, manifests, triggers
from bgjob.clisession import EXIT_ERROR, EXIT_TIMEOUT, PARAM_KEY, CliError, Session
from bgjob.params import run_problem_raw
from bgjob.vocab import ANN_RUN_AT


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


def run_patch(token: str, params: dict[str, str], force: bool,
              at: str | None = None) -> dict[str, Any]:
    """One metadata patch: the token, and this run's parameters, force and start time (or
    none, so that an earlier run's leftovers do not leak into this one)."""
    return {"metadata": {"annotations": {
        api.ANN_RUN_NOW: token,
        api.ANN_RUN_PARAMETERS: json.dumps(params, sort_keys=True) if params else None,
        api.ANN_RUN_FORCE: "true" if force else None,
        ANN_RUN_AT: at,
    }}}


def parse_at(text: str | None) -> str | None:
    """``--at``: judged by the operator's own rule before anything is written."""
    if text is None:
        return None
    try:
        when = triggers.parse_run_at(text)
    except triggers.TriggerError as exc:
        raise CliError(f"--at: {str(exc).partition(': ')[2]}") from None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def cmd_run(args: argparse.Namespace) -> int:
    params = parse_params(args.param)
    at = parse_at(getattr(args, "at", None))
    s = Session(args)
    obj = s.get(args.name)
    # The operator's own check (bgjob.params), before anything is written.
    problem = run_problem_raw(obj.get("spec") or {}, params, "--param")
    if problem is not None:
        raise CliError(f"{problem} (spec.parameterSchema of {args.name}; nothing was written)")
    token = args.token or new_token()
    job = manifests.manual_job_name(args.name, token)
    s.patch(args.name, run_patch(token, params, args.force, at))
    if not (args.wait or args.logs):
        print(f"job.batch/{job}" + (f" (starts at {at})" if at else ""))
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
            if any(q.get("job") == job for q in st.get("queued") or []):
                _poll(deadline, f"queued run {job} to start")
                continue
            why = next((e for e in reversed(s.events(name))
                        if e.get("reason") in ("TriggerRejected", "InvalidTrigger",
                                               "RunSkipped")), None)
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
