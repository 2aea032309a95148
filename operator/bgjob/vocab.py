"""The contract's words in one place: annotations, the finalizer, condition types and reasons,
event reasons. Everything the operator writes or reads by name comes from here, so a rename is
one edit and a typo is an import error."""

from __future__ import annotations

from bgjob.api import GROUP

# -- on Jobs (ours; users never set them) ---------------------------------------------------
FINALIZER = f"{GROUP}/accounting"          # a Job is not gone until it is counted
ANN_ADMITTED = f"{GROUP}/admitted"         # the operator let this Job run (the single gate)
ANN_RETRY_OF = f"{GROUP}/retry-of"         # on retry Jobs: the first attempt's Job
ANN_PARAMETERS = f"{GROUP}/parameters"     # the run's overrides, for its retries
ANN_SCHEDULE_NAME = f"{GROUP}/schedule"
LABEL_SCHEDULE = f"{GROUP}/schedule"       # on Jobs of a spec.schedules entry: its name
CRONJOB_INSTANTIATE = "cronjob.kubernetes.io/instantiate"  # kubectl create job --from=cronjob

# -- on the BackgroundJob (the user's) -------------------------------------------------------
ANN_RESUME = f"{GROUP}/resume"
ANN_BACKFILL = f"{GROUP}/backfill"        # {"from": T1, "until": T2}: re-run a past range
ANN_RUN_AT = f"{GROUP}/run-at"            # with a new run-now token: start at this time
# Written by versions before the second wave; read once for migration, never written.
LEGACY_LAST_CANCEL = f"{GROUP}/last-handled-cancel"
LEGACY_LAST_RESUME = f"{GROUP}/last-handled-resume"
LEGACY_MISSED_THROUGH = f"{GROUP}/missed-through"

# -- conditions ------------------------------------------------------------------------------
READY, SUSPENDED, FAILING, OVERDUE = "Ready", "Suspended", "Failing", "Overdue"

# -- reasons (conditions and events) ---------------------------------------------------------
INVALID_SPEC = "InvalidSpec"
INVALID_SCHEDULE = "InvalidSchedule"
INVALID_TRIGGER = "InvalidTrigger"
QUEUED_REASON = "Queued"         # Overdue: a run held suspended by an admission system
CHILD_CONFLICT = "ChildConflict"
EXPIRED = "Expired"               # Ready: every schedule is past its activeUntil
FAILED_CREATE = "FailedCreate"   # the API server refused a run's Job (quota, RBAC, 5xx)

# -- event reasons -----------------------------------------------------------------------------
NORMAL, WARNING = "Normal", "Warning"
EV_SCHEDULED = "Scheduled"
EV_RUN_STARTED = "RunStarted"
EV_RUN_SUCCEEDED = "RunSucceeded"
EV_RETRY_SCHEDULED = "RetryScheduled"
EV_RUN_CANCELLED = "RunCancelled"
EV_RESUMED = "Resumed"
EV_RUN_FAILED = "RunFailed"
EV_RETRIES_EXHAUSTED = "RetriesExhausted"
EV_TRIGGER_REJECTED = "TriggerRejected"
EV_MISSED_SCHEDULE = "MissedSchedule"
EV_AUTO_SUSPENDED = "AutoSuspended"
EV_RUN_SKIPPED = "RunSkipped"
EV_RUN_QUEUED = "RunQueued"
EV_BACKFILL_STARTED = "BackfillStarted"
EV_BACKFILL_COMPLETED = "BackfillCompleted"

# -- freshness (spec.freshness) --------------------------------------------------------------
STALE = "Stale"                       # the condition type, and the Warning event's reason
STALE_TRUE, STALE_FALSE = "NoRecentSuccess", "Fresh"
