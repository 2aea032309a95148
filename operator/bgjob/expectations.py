"""What the reconciler wrote that the watches have not shown yet (client-go's expectations).

Without it a fast second pass, run before the informer delivers our own write, would act twice
(create a Job again, admit it again). Each entry lives until the informer shows an object at
least as new, or a TTL passes: a Job we created and someone deleted before the watch saw it must
not be re-injected forever (the TTL is client-go's, 5 minutes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

Key = tuple[str, str]
TTL = timedelta(minutes=5)


def _rv(obj: dict[str, Any] | None) -> int:
    text = str(((obj or {}).get("metadata") or {}).get("resourceVersion", ""))
    return int(text) if text.isdigit() else 0


class Expectations:
    def __init__(self, clock: Callable[[], datetime], ttl: timedelta = TTL) -> None:
        self.clock = clock
        self.ttl = ttl
        self._jobs: dict[Key, dict[str, tuple[dict[str, Any], datetime]]] = {}
        self._deleted: dict[Key, dict[str, datetime]] = {}
        self._cronjobs: dict[Key, tuple[dict[str, Any], datetime]] = {}

    def wrote_job(self, key: Key, job: dict[str, Any]) -> None:
        self._jobs.setdefault(key, {})[job["metadata"]["name"]] = (job, self.clock() + self.ttl)
        self._deleted.get(key, {}).pop(job["metadata"]["name"], None)

    def deleted_job(self, key: Key, name: str) -> None:
        self._deleted.setdefault(key, {})[name] = self.clock() + self.ttl
        self._jobs.get(key, {}).pop(name, None)

    def wrote_cronjob(self, key: Key, cronjob: dict[str, Any] | None) -> None:
        if cronjob is None:
            self._cronjobs.pop(key, None)
        else:
            self._cronjobs[key] = (cronjob, self.clock() + self.ttl)

    def jobs(self, key: Key, seen: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The informer's Jobs, with our newer writes laid over them and our deletions taken
        out, until the informer catches up or the entries expire."""
        now = self.clock()
        out = {j["metadata"]["name"]: j for j in seen}
        gone = self._deleted.get(key, {})
        for name, until in list(gone.items()):
            if name not in out or until <= now:
                del gone[name]  # the watch delivered the deletion (or we stop waiting)
            else:
                del out[name]
        mine = self._jobs.get(key, {})
        for name, (job, until) in list(mine.items()):
            shown = out.get(name)
            if until <= now or (shown is not None and _rv(shown) >= _rv(job)):
                del mine[name]
            else:
                out[name] = job
        if not mine:
            self._jobs.pop(key, None)
        if not gone:
            self._deleted.pop(key, None)
        return list(out.values())

    def cronjob(self, key: Key, seen: dict[str, Any] | None) -> dict[str, Any] | None:
        cached = self._cronjobs.get(key)
        if cached is None:
            return seen
        cj, until = cached
        if until <= self.clock() or (seen is not None and _rv(seen) >= _rv(cj)):
            del self._cronjobs[key]
            return seen
        return cj

    def forget(self, key: Key) -> None:
        for cache in (self._jobs, self._deleted, self._cronjobs):
            cache.pop(key, None)
