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
        assert cell[kind]["triggers"] == 50 and cell[kind]["trigger_p50_ms"] > 0
    # the repeats ran (quick mode repeats twice) and report their spread
    assert cell["cold_spread"]["n"] == 2 and cell["restart_spread"]["n"] == 2
    # the operator's own write counter agrees with the API server's audit log (within the
    # few writes that can be in flight when both are read)
    check = cell["crosscheck"]
    assert check["audit_log"] > 0
    assert abs(check["operator_counter"] - check["audit_log"]) <= 0.02 * check["audit_log"] + 5
    table = (tmp_path / "quick.md").read_text()
    assert "| 100 |" in table and "trigger latency" in table
