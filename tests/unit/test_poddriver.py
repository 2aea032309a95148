"""The pod driver's convention for simulated outcomes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack" / "cluster"))

from poddriver import (
    REQUEST_TIMEOUT_SECONDS,
    Driver,
    Plan,
    backoff_delays,
    plan_for,
    termination_message,
    transient,
)


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


class FakePods:
    """patch_namespaced_pod_status answers from a script: an exception or None (success)."""

    def __init__(self, script: list[BaseException | None]) -> None:
        self.script = script
        self.calls: list[dict[str, Any]] = []

    def patch_namespaced_pod_status(self, name: str, ns: str, body: dict[str, Any],
                                    **kw: Any) -> None:
        self.calls.append({"name": name, "ns": ns, "body": body, **kw})
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome


def driver(script: list[BaseException | None]) -> tuple[Driver, FakePods, list[float]]:
    sleeps: list[float] = []
    pods = FakePods(script)
    return Driver(cast(client.CoreV1Api, pods), sleep=sleeps.append), pods, sleeps


REFUSED = urllib3.exceptions.MaxRetryError(
    cast(urllib3.connectionpool.ConnectionPool, None), "/api",
    urllib3.exceptions.NewConnectionError(cast(Any, None), "Connection refused"))


@pytest.mark.parametrize(("exc", "retry"), [
    (REFUSED, True),
    (urllib3.exceptions.ProtocolError("Connection aborted."), True),
    (urllib3.exceptions.ReadTimeoutError(cast(Any, None), "/api", "read timed out"), True),
    (ConnectionResetError(), True),
    (TimeoutError(), True),
    (ApiException(status=500), True),
    (ApiException(status=503), True),
    (ApiException(status=429), True),
    (ApiException(status=0), True),
    (ApiException(status=403), False),
    (ApiException(status=404), False),
    (ValueError("a bug"), False),
])
def test_transient_errors_are_the_ones_a_kubelet_retries(exc: BaseException,
                                                        retry: bool) -> None:
    assert transient(exc) is retry


def test_a_status_patch_outlives_an_api_outage() -> None:
    outage: list[BaseException | None] = [REFUSED, REFUSED, ApiException(status=503),
                                          urllib3.exceptions.ProtocolError("reset"), REFUSED,
                                          REFUSED, REFUSED, None]
    drv, pods, sleeps = driver(outage)
    assert drv._patch("ns", "p", {"phase": "Succeeded"}) is True
    assert len(pods.calls) == 8
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]   # doubling, bounded
    assert all(c["_request_timeout"] == REQUEST_TIMEOUT_SECONDS for c in pods.calls)
    assert pods.calls[-1]["body"] == {"status": {"phase": "Succeeded"}}


@pytest.mark.parametrize("status", [404, 409, 422])
def test_a_gone_pod_or_a_refused_write_ends_the_retries(status: int) -> None:
    drv, pods, sleeps = driver([REFUSED, ApiException(status=status), None])
    assert drv._patch("ns", "p", {"phase": "Failed"}) is False
    assert len(pods.calls) == 2 and sleeps == [0.5]


def test_an_unexpected_error_is_not_retried() -> None:
    drv, pods, sleeps = driver([ApiException(status=403)])
    assert drv._patch("ns", "p", {"phase": "Failed"}) is False
    assert len(pods.calls) == 1 and sleeps == []


def test_backoff_delays_are_bounded() -> None:
    delays = backoff_delays(1.0, 5.0)
    assert [next(delays) for _ in range(6)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_termination_message_as_a_kubelet_writes_it() -> None:
    written = pod({"sim.bgjob.dev/termination-message": "42 rows"})
    assert termination_message(written, "main", plan_for(written)) == "42 rows"
    by_param = pod(env={"BGJOB_PARAM_SIM_TERMINATION_MESSAGE": "from a parameter",
                        "SIM_EXIT_CODE": "3"})
    assert termination_message(by_param, "main", plan_for(by_param)) == "from a parameter"
    failed = pod(env={"SIM_EXIT_CODE": "3"})
    failed["metadata"]["name"] = "p"
    failed["spec"]["containers"][0].update(command=["sh", "-c", "boom"])
    assert termination_message(failed, "main", plan_for(failed)) is None  # policy File
    failed["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    assert termination_message(failed, "main", plan_for(failed)) == (
        "sim: p/main started (image ?)\nsim: $ sh -c boom\nsim: exit code 3\n")
    ok = pod(env={"SIM_EXIT_CODE": "0"})
    ok["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    assert termination_message(ok, "main", plan_for(ok)) is None  # only failures fall back
