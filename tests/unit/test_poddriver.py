"""The pod driver's convention for simulated outcomes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack" / "cluster"))

from poddriver import Plan, plan_for


def pod(annotations: dict[str, str] | None = None, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    return {"metadata": {"annotations": annotations or {}},
            "spec": {"containers": [{"name": "main", "env": [
                {"name": k, "value": v} for k, v in (env or {}).items()]}]}}


def test_default_is_success_after_a_second() -> None:
    assert plan_for(pod()) == Plan(exit_code=0, duration_seconds=1.0)


def test_annotations_win_over_env() -> None:
    p = plan_for(pod({"sim.bgjob.dev/exit-code": "3"}, {"SIM_EXIT_CODE": "5"}))
    assert p.exit_code == 3


def test_parameters_reach_the_driver_through_env() -> None:
    p = plan_for(pod(env={"BGJOB_PARAM_SIM_EXIT_CODE": "64",
                          "BGJOB_PARAM_SIM_DURATION_SECONDS": "0.5"}))
    assert (p.exit_code, p.duration_seconds) == (64, 0.5)


def test_never_start() -> None:
    assert plan_for(pod({"sim.bgjob.dev/never-start": "true"})).never_start
