"""Profiles of the operator for the benchmark's ``--profile DIR`` (py-spy, tracemalloc).

A profiled run is for finding costs, not for results: py-spy samples from outside (small
overhead), but tracemalloc in the operator slows every allocation.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import bench


class Profiler:
    """py-spy on the operator for one phase at a time (``--profile DIR``): raw collapsed
    stacks, one file per phase; and the operator's own tracemalloc report (SIGUSR1, see
    ``bgjob.main``) when ``BGJOB_TRACEMALLOC`` is set. Off without a directory."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)

    def start(self, op: bench.OperatorProc, phase: str) -> None:
        if self.out is None or op.proc is None:
            return
        spy = Path(sys.executable).parent / "py-spy"
        self.proc = subprocess.Popen(
            [str(spy), "record", "--pid", str(op.proc.pid), "--format", "raw", "--rate", "50",
             "--nonblocking", "--threads", "-o", str(self.out / f"{phase}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=60)
            self.proc = None

    def heap(self, op: bench.OperatorProc, phase: str) -> None:
        """Blocking (up to 5 minutes at N=5,000): run it in a thread."""
        report = os.environ.get("BGJOB_TRACEMALLOC")
        if self.out is None or not report or op.proc is None:
            return
        Path(report).unlink(missing_ok=True)
        op.proc.send_signal(signal.SIGUSR1)
        for _ in range(600):
            time.sleep(0.5)
            if Path(report).exists() and Path(report).stat().st_size:
                time.sleep(2)  # written in one go, but give it time to finish
                shutil.copy(report, self.out / f"heap-{phase}.txt")
                return
