"""``kubectl bgjob``: the kubectl plugin (``kubectl-bgjob`` on PATH).

This first cut has ``validate`` (offline, the operator's own schedule code) and ``list``; every
error is one line and a non-zero exit, never a stack trace.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from kubernetes.config.config_exception import ConfigException
from pydantic import ValidationError

from bgjob import api, schedule
from bgjob.api import Schedule
from bgjob.k8s import Forbidden, Kube, KubeError, NotFound, load_config, path_for


class CliError(Exception):
    pass


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
        raise CliError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def cmd_validate(args: argparse.Namespace) -> int:
    s = parse_schedule(args.schedule, args.tz)
    try:
        compiled = schedule.compile_schedule(s, "default", "validate")
    except schedule.ScheduleError as exc:
        raise CliError(str(exc)) from None
    start = (datetime.fromisoformat(args.from_.replace("Z", "+00:00"))
             if args.from_ else datetime.now(UTC).replace(microsecond=0))
    if start.tzinfo is None:
        start = start.replace(tzinfo=ZoneInfo(args.tz))
    times = schedule.next_run_times(compiled, start, start, args.count)
    zone = ZoneInfo(compiled.time_zone)
    print(f"{compiled.description} ({compiled.time_zone}; runs as "
          f"{'a native CronJob' if compiled.mode is schedule.Mode.CRONJOB else 'operator-timed'}"
          f"{': ' + compiled.cron if compiled.cron else ''})")
    for t in times:
        print(f"  {t.astimezone(zone).isoformat()}  ({t.strftime('%Y-%m-%dT%H:%M:%SZ')})")
    return 0


def _client(args: argparse.Namespace) -> Kube:
    try:
        return Kube(load_config(args.kubeconfig, args.context))
    except (ConfigException, OSError) as exc:
        raise CliError(f"no usable kubeconfig: {exc}") from None


def _current_namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return str(args.namespace)
    from kubernetes import config

    try:
        contexts, ctx = config.list_kube_config_contexts(config_file=args.kubeconfig)
        if args.context:
            ctx = next(c for c in contexts if c["name"] == args.context)
        return str(ctx["context"].get("namespace") or "default")
    except Exception:
        return "default"


def _age(ts: str | None, now: datetime) -> str:
    if not ts:
        return "<none>"
    secs = int((now - datetime.fromisoformat(ts.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{max(secs, 0)}s"


def cmd_list(args: argparse.Namespace) -> int:
    kube = _client(args)
    ns = None if args.all_namespaces else _current_namespace(args)
    try:
        doc = kube.request("GET", path_for(api.API_VERSION, api.PLURAL, ns))
    except NotFound:
        raise CliError("the BackgroundJob CRD is not installed (kubectl apply -f crds/)") from None
    except Forbidden as exc:
        raise CliError(f"forbidden: {exc.message}") from None
    except KubeError as exc:
        raise CliError(exc.message) from None
    except Exception as exc:
        raise CliError(f"cannot reach the API server: {exc.__class__.__name__}") from None
    items = doc.get("items") or []
    if args.output in ("json", "yaml"):
        out = {"apiVersion": "v1", "kind": "List", "items": items}
        print(json.dumps(out, indent=2) if args.output == "json" else yaml.safe_dump(out))
        return 0
    now = datetime.now(UTC)
    rows = [["NAMESPACE"] if args.all_namespaces else []]
    rows[0] += ["NAME", "SCHEDULE", "SUSPENDED", "ACTIVE", "LAST RESULT", "LAST SUCCESS",
                "NEXT RUN", "READY"]
    for item in items:
        st = item.get("status") or {}
        conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
        row = [item["metadata"]["namespace"]] if args.all_namespaces else []
        row += [item["metadata"]["name"], (st.get("schedule") or {}).get("description", "-"),
                conds.get("Suspended", "-"), str(len(st.get("active") or [])),
                (st.get("lastRun") or {}).get("result", "-"),
                _age(st.get("lastSuccessfulTime"), now),
                ((st.get("schedule") or {}).get("nextRunTimes") or ["-"])[0],
                conds.get("Ready", "-")]
        rows.append(row)
    if len(rows) == 1:
        print("No BackgroundJobs found" + (f" in {ns}." if ns else "."), file=sys.stderr)
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl bgjob",
                                     description="Operate BackgroundJobs (bgjob.dev).")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file")
    parser.add_argument("--context", default=None, help="kubeconfig context")
    parser.add_argument("-n", "--namespace", default=None, help="namespace")
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("validate", help="describe a schedule and its next run times (offline)",
                       epilog="example: kubectl bgjob validate '0 2 * * *' --tz Europe/Berlin")
    p.add_argument("schedule", help="cron expression, or every:30m, daily:02:00, "
                   "weekly:Monday:03:00, monthly:1:08:00, at:2026-12-01T12:00:00Z")
    p.add_argument("--tz", default="UTC", help="IANA time zone (default UTC)")
    p.add_argument("--count", type=int, default=5, help="how many next times (default 5)")
    p.add_argument("--from", dest="from_", default=None, help="start time (default now)")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("list", help="list BackgroundJobs",
                       epilog="example: kubectl bgjob list -A")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="all namespaces")
    p.add_argument("-o", "--output", choices=["table", "wide", "json", "yaml"], default="table")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
