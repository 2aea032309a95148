"""A write's answer decoded only as far as a pass reads it (its metadata), and the malloc
arena limit set at start: the two per-object costs the launch burst's profile showed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bgjob import main
from bgjob.k8s import _metadata_of


def answer(**meta: Any) -> dict[str, Any]:
    """A BackgroundJob as the API server answers a status patch: top-level keys sorted."""
    return {"apiVersion": "bgjob.dev/v1alpha1", "kind": "BackgroundJob",
            "metadata": {"name": "a", "resourceVersion": "42", **meta},
            "spec": {"schedule": {"cron": "* * * * *"}},
            "status": {"runs": [{"job": f"a-{i}", "result": "Succeeded"} for i in range(20)]}}


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_only_the_metadata_is_decoded(separators: tuple[str, str]) -> None:
    doc = answer(annotations={"resourceVersion": "1", "note": '"metadata": {"x": 1}'})
    got = _metadata_of(json.dumps(doc, separators=separators).encode())
    assert got == {"metadata": doc["metadata"]}
    assert got["metadata"]["resourceVersion"] == "42"


def test_an_answer_without_metadata_is_decoded_whole() -> None:
    assert _metadata_of(b'{"kind": "Status", "code": 200}') == {"kind": "Status", "code": 200}
    assert _metadata_of(b"") == {}


def test_malloc_arenas_are_limited_unless_the_environment_decides(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    class Libc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr("ctypes.CDLL", lambda name: Libc())
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    main.limit_malloc_arenas()
    assert calls == [(main.M_ARENA_MAX, 2)]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    main.limit_malloc_arenas()
    assert calls == [(main.M_ARENA_MAX, 2)]


def test_no_glibc_no_harm(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise OSError(name)

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr("ctypes.CDLL", missing)
    main.limit_malloc_arenas()
