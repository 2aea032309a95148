"""The benchmark's quick mode runs end to end (CI proves the benchmark works; the numbers are
reported, not asserted — see the README's Performance section)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_quick_benchmark_produces_every_measure(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(ROOT / "hack" / "bench" / "bench.py"), "--quick",
                          "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=900, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads((tmp_path / "quick.json").read_text())
    assert result["versions"]["control_plane"].startswith("k8s-v1.34")
    (cell,) = result["cells"]
    assert cell["n"] == 100
    for key in ("cold_seconds", "stream_seconds", "restart_seconds", "cold_cpu_seconds",
                "rss_kib", "rss_kib_n0"):
        assert cell[key] > 0, key
    assert cell["direct"]["best_seconds"] > 0
    # every BackgroundJob got exactly one CronJob, by the operator's ServiceAccount
    assert cell["writes_per_create"]["create cronjobs"] == 1.0
    assert cell["writes_per_run"] and cell["writes_per_update"]
    for kind in ("latency_idle", "latency_burst"):
        assert cell[kind]["triggers"] == 30 and cell[kind]["trigger_p50_ms"] > 0
    # quick mode times each cell once (the full run repeats three times) and says so
    assert cell["cold_spread"]["n"] == 1 and cell["restart_spread"]["n"] == 1
    # the operator's own write counter agrees with the API server's audit log (within the
    # few writes that can be in flight when both are read)
    check = cell["crosscheck"]
    assert check["audit_log"] > 0
    assert abs(check["operator_counter"] - check["audit_log"]) <= 0.02 * check["audit_log"] + 5
    # what users feel: every run due at once started, was admitted and showed up in status
    (launch,) = result["launch_cells"]
    assert (launch["n"], launch["m"]) == (60, 20)
    assert launch["restart_writes"] == 0 and launch["restart_seconds"] > 0
    assert launch["rss_kib_history"] > launch["rss_kib_n0"] > 0
    runs = launch["launch"]
    for measure in (runs["operator_timed"]["due_to_created"], runs["operator_timed"]["status_lag"],
                    runs["cronjob_mode"]["due_to_created_by_cronjob_controller"],
                    runs["cronjob_mode"]["due_to_admitted"], runs["cronjob_mode"]["status_lag"]):
        assert measure["n"] == 20, runs
    # the operator's own histogram saw each of the 40 starts once
    hist = runs["operator_histogram"]
    assert hist['bgjob_run_start_delay_seconds_count{trigger="scheduled"}'] == 40, hist
    assert result["memory"]["chart_limit_mib"] > 0
    table = (tmp_path / "quick.md").read_text()
    assert "| 100 |" in table and "trigger latency" in table and "What users feel" in table
