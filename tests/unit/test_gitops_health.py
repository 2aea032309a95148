"""The Argo CD health check (Lua, in deploy/gitops/argocd-cm.yaml) run by a real Lua VM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KEY = "resource.customizations.health.bgjob.dev_BackgroundJob"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    script = yaml.safe_load((ROOT / "deploy/gitops/argocd-cm.yaml").read_text())["data"][KEY]
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)

    def table(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: table(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([table(v) for v in value])
        return value

    run = lua.eval(f"function(obj)\n{script}\nend")
    hs = run(table(obj))
    return str(hs["status"]), str(hs["message"])


def bj(generation: int = 1, observed: int | None = 1, **conds: tuple[str, str]) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [
        {"type": t, "status": s, "reason": r, "message": f"{t} says {r}"}
        for t, (s, r) in conds.items()]}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": {"generation": generation}, "status": status}


READY = ("True", "Scheduled")


@pytest.mark.parametrize(("obj", "want"), [
    ({"metadata": {"generation": 1}}, "Progressing"),
    (bj(generation=2, observed=1, Ready=READY), "Progressing"),
    (bj(Ready=READY, Suspended=("False", "Active"), Failing=("False", "LastRunSucceeded"),
        Overdue=("False", "OnTime")), "Healthy"),
    (bj(Ready=("False", "InvalidSchedule")), "Degraded"),
    (bj(Ready=READY, Failing=("True", "RetriesExhausted")), "Degraded"),
    (bj(Ready=READY, Failing=("True", "RetryPending")), "Healthy"),
    (bj(Ready=READY, Overdue=("True", "MissedSchedule")), "Degraded"),
    (bj(Ready=READY, Suspended=("True", "AutoSuspended")), "Suspended"),
])
def test_argocd_health(obj: dict[str, Any], want: str) -> None:
    status, message = health(obj)
    assert status == want, message
    if want == "Degraded":
        assert "says" in message  # the condition's reason and message reach the UI


def test_flux_example_parses() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy/gitops/flux.yaml").read_text()))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["GitRepository", "HelmRelease", "Kustomization"]
    checks = docs[2]["spec"]["healthCheckExprs"][0]
    assert checks["kind"] == "BackgroundJob" and "Ready" in checks["current"]
