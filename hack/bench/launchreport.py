"""The launch cells' summary: memory against N, and the Markdown table."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any


def crossing(cells: list[dict[str, Any]], limit_mib: float, key: str) -> int | None:
    """The N at which ``key`` (RSS, KiB) would reach the limit, by a straight line through
    the N = 0 reading and the largest N measured."""
    big = max(cells, key=lambda c: c["n"])
    slope = float(big[key] - big["rss_kib_n0"]) / float(big["n"])
    if slope <= 0:
        return None
    return math.floor((limit_mib * 1024 - float(big["rss_kib_n0"])) / slope)


def tally(c: Counter[str]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(c.items())) or "0"


def memory_summary(cells: list[dict[str, Any]], limit_mib: float) -> dict[str, Any]:
    """RSS with history against N, and where the chart's default limit would be crossed."""
    return {
        "chart_limit_mib": limit_mib,
        "points": [{"n": c["n"], "rss_mib_n0": c["rss_kib_n0"] / 1024,
                    "rss_mib_history": c["rss_kib_history"] / 1024,
                    "restart_rss_mib": c["restart_rss_kib"] / 1024,
                    "restart_peak_mib": c["restart_peak_rss_kib"] / 1024,
                    "launch_peak_mib": c["launch"]["peak_rss_kib"] / 1024,
                    "kib_per_bj_with_history": (c["rss_kib_history"] - c["rss_kib_n0"])
                    / c["n"]} for c in cells],
        "limit_crossed_at_n_steady": crossing(cells, limit_mib, "rss_kib_history"),
        "limit_crossed_at_n_restart_peak": crossing(cells, limit_mib, "restart_peak_rss_kib"),
    }


def _q(d: dict[str, float]) -> str:
    return f"{d['p50']:.2f} / {d['p99']:.2f} / {d['max']:.2f}" if d.get("n") else "-"


def _load(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def table(result: dict[str, Any]) -> str:
    cells = result.get("launch_cells") or []
    if not cells:
        return ""
    rows = ["What users feel (launch cells): M runs of each mode due in the same minute among N "
            "BackgroundJobs, each with 3 succeeded + 1 failed Job kept. Seconds as "
            "p50 / p99 / max; load = 1/5/15-minute load averages at the time.", "",
            "| N | M | op-timed: due → Job created | op-timed: status lag | CronJob: due → "
            "created by the CronJob controller | CronJob: due → admitted by us | CronJob: "
            "status lag | status patches / run | CPU ms / run | load |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        la = c["launch"]
        o, k = la["operator_timed"], la["cronjob_mode"]
        rows.append(f"| {c['n']} | {c['m']} | {_q(o['due_to_created'])} | {_q(o['status_lag'])}"
                    f" | {_q(k['due_to_created_by_cronjob_controller'])} | "
                    f"{_q(k['due_to_admitted'])} | {_q(k['status_lag'])} | "
                    f"{la['status_patches_per_run']:.2f} | {la['cpu_ms_per_run']:.1f} | "
                    f"{_load(la['load'])} |")
    rows += ["", "| N | RSS empty (MiB) | RSS with history (MiB) | KiB per BJ with history | "
             "history settled (s) | restart (s) / writes | restart peak RSS (MiB) | "
             "launch peak RSS (MiB) | load |", "|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        rows.append(f"| {c['n']} | {c['rss_kib_n0'] / 1024:.0f} | "
                    f"{c['rss_kib_history'] / 1024:.0f} | "
                    f"{(c['rss_kib_history'] - c['rss_kib_n0']) / c['n']:.1f} | "
                    f"{c['history_settled_seconds']:.0f} | {c['restart_seconds']:.1f} / "
                    f"{c['restart_writes']} | {c['restart_peak_rss_kib'] / 1024:.0f} | "
                    f"{c['launch']['peak_rss_kib'] / 1024:.0f} | {_load(c['load_restart'])} |")
    mem = result.get("memory") or {}
    if mem:
        rows.append("")
        rows.append(f"- chart default memory limit {mem['chart_limit_mib']:.0f} MiB: crossed at "
                    f"N ≈ {mem['limit_crossed_at_n_steady']} (steady, with history), "
                    f"N ≈ {mem['limit_crossed_at_n_restart_peak']} (peak after a restart)")
    return "\n".join(rows)
