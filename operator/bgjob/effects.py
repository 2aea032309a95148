"""The apply layer of a pass: every child write a step decides on goes through here.

The steps decide (what to start, admit, cancel, release); these methods make the one API call
each decision needs and fold the answer back into the pass, so the next step sees it (a run
just started holds a slot) and the expectations remember it until the watch shows it. Errors
are translated once, here, into what the steps understand: True (done), False (not now), None
(refused for good), with the condition or event that says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bgjob import accounting, api, manifests
from bgjob import status as st
from bgjob.expectations import Expectations
from bgjob.informer import slim
from bgjob.k8s import AlreadyExists, Invalid, Kube, KubeError, NotFound
from bgjob.metrics import Metrics
from bgjob.passctx import CancelRuns, CreateJob, Pass, SpecProblem
from bgjob.vocab import (
    ANN_ADMITTED,
    CHILD_CONFLICT,
    CRONJOB_INSTANTIATE,
    FAILED_CREATE,
    INVALID_SPEC,
    WARNING,
)

log = logging.getLogger("bgjob.effects")

CONFLICT_RETRY_SECONDS = 1.0
CREATE_RETRY_SECONDS = 10.0       # a refused or failed create is tried again this much later


class Effects:
    def __init__(self, kube: Kube, expect: Expectations, metrics: Metrics | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.kube = kube
        self.expect = expect
        self.metrics = metrics
        self.clock = clock or (lambda: datetime.now(UTC))

    def apply(self, ctx: Pass) -> None:
        """Make the decisions of the last step real, in order; where the API says no, the
        pass's guess is taken back (and the step's ``undo`` runs)."""
        actions, ctx.actions = ctx.actions, []
        for action in actions:
            if isinstance(action, CreateJob):
                name = action.manifest["metadata"]["name"]
                if self.create_job(ctx, action.manifest, action.what,
                                   action.due) is not True:
                    ctx.jobs.pop(name, None)
                    if action.undo is not None:
                        action.undo(ctx)
            elif isinstance(action, CancelRuns):
                self.cancel(ctx, action.jobs, action.token)
            elif not self.admit(ctx, action.name):
                if action.before is not None:
                    ctx.jobs[action.name] = action.before
            elif action.before is not None and accounting.awaiting_admission(action.before):
                self._admitted(action.before)

    def _started(self, trigger: str, due: datetime | None) -> None:
        """``bgjob_run_start_delay_seconds``: observed once per run, where this process
        creates or admits its Job (an adopted Job was started by an earlier pass or process,
        so it is not observed again)."""
        if self.metrics is not None and due is not None:
            self.metrics.run_started(trigger, (self.clock() - due).total_seconds())

    def _admitted(self, job: dict[str, Any]) -> None:
        """A Job the CronJob made, let run now: due at its scheduled time (what users feel,
        the native controller's own skew included); ``kubectl create job --from`` at its
        creation."""
        meta = job["metadata"]
        ann = meta.get("annotations") or {}
        if ann.get(CRONJOB_INSTANTIATE) == "manual":
            self._started("manual", st.parse_time(meta.get("creationTimestamp")))
        else:
            trigger = (meta.get("labels") or {}).get(api.LABEL_TRIGGER) or "scheduled"
            self._started(trigger, st.parse_time(ann.get(api.ANN_CRONJOB_SCHEDULED)))

    def remember(self, ctx: Pass, job: dict[str, Any]) -> None:
        ctx.jobs[job["metadata"]["name"]] = job
        # Kept until the informer shows it, in the informer's own shape: the API's answer has
        # managed fields and the pod template, which no pass reads (tracemalloc: the answers
        # to finalizer releases were the second largest part of the heap after a burst).
        self.expect.wrote_job((ctx.ns, ctx.name), slim(job, keep_spec=False))

    def create_job(self, ctx: Pass, manifest: dict[str, Any], what: str,
                   due: datetime | None = None) -> bool | None:
        """Create one run's Job. True: it exists now (created or adopted); False: not now,
        try again later; None: refused for good (a condition or event says why)."""
        meta = manifest["metadata"]
        try:
            created = self.kube.create(manifest, "jobs")
            self._started((meta.get("labels") or {}).get(api.LABEL_TRIGGER) or "manual", due)
        except AlreadyExists:
            try:
                existing = self.kube.get("batch/v1", "jobs", ctx.ns, meta["name"])
            except NotFound:
                return False  # deleted in between; the next pass decides again
            if accounting.controlled_by(existing, ctx.uid):
                self.remember(ctx, existing)
                return True  # made by an earlier pass: adopted, never a second run
            ctx.problem = ctx.problem or SpecProblem(
                CHILD_CONFLICT, f"Job {meta['name']} exists and is not owned by this "
                "BackgroundJob; it is left untouched")
            return None
        except Invalid as exc:
            ctx.problem = ctx.problem or SpecProblem(INVALID_SPEC,
                                                     f"spec.template: {exc.message}")
            return None
        except KubeError as exc:
            # Quota, RBAC, admission webhooks, an overloaded API server: this run only; the
            # rest of the pass goes on, and the run is tried again a little later.
            message = f"{what}: Job {meta['name']} was refused ({exc.status}): {exc.message}"
            ctx.run_problem = SpecProblem(FAILED_CREATE, message)
            ctx.event(WARNING, FAILED_CREATE, message)
            ctx.wake_in(CREATE_RETRY_SECONDS)
            return False
        self.remember(ctx, created)
        return True

    def cancel(self, ctx: Pass, names: list[str], token: str) -> None:
        """Stop runs and keep their records: a 1 s deadline makes the Job controller end
        them as failed; the annotation makes the record say Cancelled and stops retries."""
        for job_name in names:
            try:
                patched = self.kube.patch("batch/v1", "jobs", ctx.ns, job_name, {
                    "metadata": {"annotations": {st.ANN_CANCELLED: token}},
                    "spec": {"activeDeadlineSeconds": 1},
                })
            except NotFound:
                continue
            self.remember(ctx, patched)

    def admit(self, ctx: Pass, name: str) -> bool:
        """Unsuspend and hold with our finalizer, guarded by the resourceVersion we saw."""
        job = ctx.jobs[name]
        meta = job["metadata"]
        try:
            patched = self.kube.patch("batch/v1", "jobs", ctx.ns, name, {
                "metadata": {"resourceVersion": meta.get("resourceVersion"),
                             "finalizers": accounting.with_finalizer(job),
                             "annotations": {ANN_ADMITTED: "true"}},
                "spec": {"suspend": False},
            })
        except (NotFound, Invalid):  # gone, or being deleted (no finalizer can be added)
            return False
        except KubeError as exc:
            if exc.status != 409:
                raise
            ctx.wake_in(CONFLICT_RETRY_SECONDS)  # changed under us: look again
            return False
        self.remember(ctx, patched)
        return True

    def release(self, ctx: Pass, jobs: list[dict[str, Any]]) -> None:
        """Remove our finalizer (only after the count is written); guarded by the Job's
        resourceVersion so no one else's finalizer change is lost."""
        for job in jobs:
            meta = job["metadata"]
            try:
                patched = self.kube.patch("batch/v1", "jobs", meta.get("namespace", ctx.ns),
                                          meta["name"], {"metadata": {
                                              "resourceVersion": meta.get("resourceVersion"),
                                              "finalizers": accounting.without_finalizer(job)}})
            except NotFound:
                continue
            except KubeError as exc:
                if exc.status != 409:
                    raise
                ctx.wake_in(CONFLICT_RETRY_SECONDS)
                continue
            if meta["name"] in ctx.jobs:
                self.remember(ctx, patched)

    def delete_job(self, ctx: Pass, job_name: str) -> None:
        self.kube.delete("batch/v1", "jobs", ctx.ns, job_name)
        self.expect.deleted_job((ctx.ns, ctx.name), job_name)
        ctx.jobs.pop(job_name, None)

    def learn_from_pods(self, ctx: Pass) -> None:
        """What only a run's pod knows: a failed Job's exit code (its conditions rarely carry
        it) and the main container's termination message (the run's output). One read per
        Job about to be counted, none later: the run record keeps both after that."""
        for job in accounting.to_count(ctx.jobs.values(), ctx.old.accounted):
            job_name = job["metadata"]["name"]
            try:
                pods = self.kube.list("v1", "pods", ctx.ns,
                                      f"{manifests.JOB_NAME_LABEL}={job_name}")
            except KubeError as exc:
                log.debug("%s/%s: cannot read pods of %s: %s", ctx.ns, ctx.name, job_name, exc)
                continue
            learnt: dict[str, str] = {}
            code = st.exit_code_of(pods) if st.needs_exit_code(job) else None
            if code is not None:
                learnt[st.ANN_EXIT_CODE] = str(code)
            output = st.output_of(pods)
            if output is not None:
                learnt[st.ANN_OUTPUT] = output
            if learnt:
                meta = dict(job["metadata"])
                meta["annotations"] = {**(meta.get("annotations") or {}), **learnt}
                ctx.jobs[job_name] = {**job, "metadata": meta}
