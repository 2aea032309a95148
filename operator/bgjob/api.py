"""The BackgroundJob API: the single source of truth for the CRD.

``crds/backgroundjobs.bgjob.dev.yaml`` is generated from these models (``python -m bgjob.crd``)
and a test fails when the two drift. Every field's description starts with its camelCase name,
so ``kubectl explain`` reads like the Kubernetes reference. Cross-field rules live here as CEL
(``x-kubernetes-validations``) so the API server rejects them at apply time.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

GROUP = "bgjob.dev"
VERSION = "v1alpha1"
KIND = "BackgroundJob"
PLURAL = "backgroundjobs"
SINGULAR = "backgroundjob"
SHORT_NAMES = ["bgj"]
API_VERSION = f"{GROUP}/{VERSION}"

# Labels and annotations of the contract.
LABEL_OWNER = f"{GROUP}/backgroundjob"
LABEL_TRIGGER = f"{GROUP}/trigger"
ANN_RUN_NOW = f"{GROUP}/run-now"
ANN_RUN_PARAMETERS = f"{GROUP}/run-parameters"
ANN_RUN_FORCE = f"{GROUP}/run-force"
ANN_CANCEL = f"{GROUP}/cancel"
ANN_ATTEMPT = f"{GROUP}/attempt"
ANN_SCHEDULED_TIME = f"{GROUP}/scheduled-time"
ANN_CRONJOB_SCHEDULED = "batch.kubernetes.io/cronjob-scheduled-timestamp"

# Rules on the whole object: the name is copied into the label bgjob.dev/backgroundjob of every
# child, and label values stop at 63 characters.
ROOT_VALIDATIONS = [{
    "rule": "self.metadata.name.size() <= 63",
    "message": "metadata.name: must be at most 63 characters (it is used as a label value)",
}]

HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
# A Go duration (30m, 1h30m), optionally led by whole days (1d, 1d12h): the contract writes
# "1d", which Go's parser (and so CEL's duration()) does not know.
EVERY_DURATION = r"^([1-9][0-9]*d([0-9]+(\.[0-9]+)?(h|m|s))*|([0-9]+(\.[0-9]+)?(h|m|s))+)$"


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Weekday(StrEnum):
    MONDAY = "Monday"
    TUESDAY = "Tuesday"
    WEDNESDAY = "Wednesday"
    THURSDAY = "Thursday"
    FRIDAY = "Friday"
    SATURDAY = "Saturday"
    SUNDAY = "Sunday"


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"
    ENQUEUE = "Enqueue"


MAX_QUEUED = 1000
DEFAULT_MAX_QUEUED = 10


class CatchUp(StrEnum):
    LATEST = "Latest"
    ALL = "All"
    NONE = "None"


class ParameterType(StrEnum):
    STRING = "String"
    INTEGER = "Integer"
    NUMBER = "Number"
    BOOLEAN = "Boolean"
    DATE = "Date"
    DATETIME = "DateTime"


# What a parameter's text must look like for each type (RE2 and Python agree on these), shared
# by the CEL rule on enum values and by bgjob.params.
PARAM_SYNTAX: dict[str, str] = {
    "Integer": r"^[-+]?[0-9]+$",
    "Number": r"^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$",
    "Boolean": r"^(true|false)$",
    "Date": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    "DateTime": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?"
                r"([Zz]|[-+][0-9]{2}:[0-9]{2})$",
}
PARAM_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
MAX_PARAMETERS = 64
MAX_ENUM = 32


def _enum_values_rule() -> str:
    """One CEL rule: every enum value reads as the parameter's type."""
    checks = " : ".join(
        f"self.type == '{t}' ? self.enum.all(e, e.matches('{rx}'))"
        for t, rx in PARAM_SYNTAX.items() if t != "Boolean")
    return f"!has(self.enum) || ({checks} : true)"


class ParameterSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.minimum) || !has(self.maximum) || "
                    "self.minimum <= self.maximum",
                    "message": "parameterSchema: minimum must not be above maximum",
                    "fieldPath": ".minimum",
                },
                {
                    "rule": "(!has(self.minimum) && !has(self.maximum)) || "
                    "self.type in ['Integer', 'Number']",
                    "message": "parameterSchema: minimum and maximum need type Integer or "
                    "Number",
                    "fieldPath": ".type",
                },
                {
                    "rule": "!has(self.pattern) || self.type == 'String'",
                    "message": "parameterSchema: pattern needs type String",
                    "fieldPath": ".pattern",
                },
                {
                    "rule": "!has(self.enum) || self.type != 'Boolean'",
                    "message": "parameterSchema: a Boolean has no enum (it is true or false)",
                    "fieldPath": ".enum",
                },
                {
                    "rule": _enum_values_rule(),
                    "message": "parameterSchema: every enum value must be of the "
                    "parameter's type",
                    "fieldPath": ".enum",
                },
            ]
        }
    )

    name: str = Field(
        pattern=PARAM_NAME, max_length=63,
        description="name of the parameter (the key in spec.parameters and run-parameters; "
        "the run sees it as BGJOB_PARAM_<NAME>).",
    )
    type: ParameterType = Field(
        default=ParameterType.STRING,
        description="type is String (default), Integer, Number, Boolean (true or false), "
        "Date (YYYY-MM-DD) or DateTime (RFC 3339); values are checked as text, since "
        "parameters reach the run as env vars.",
    )
    enum: list[str] | None = Field(
        default=None, min_length=1, max_length=MAX_ENUM,
        json_schema_extra={"items": {"type": "string", "maxLength": 128}},
        description="enum lists the allowed values (not for Boolean).",
    )
    minimum: float | None = Field(
        default=None, description="minimum is the smallest allowed value (Integer, Number).",
    )
    maximum: float | None = Field(
        default=None, description="maximum is the largest allowed value (Integer, Number).",
    )
    pattern: str | None = Field(
        default=None, max_length=256,
        description="pattern is a regular expression a String value must match (anywhere, "
        "as in OpenAPI: anchor it with ^ and $ to match the whole value).",
    )
    required: bool = Field(
        default=False, description="required: every run needs a value, from spec.parameters "
        "or the run's overrides. With a schedule it needs a default (a scheduled run has no "
        "overrides).",
    )
    description: str = Field(
        default="", max_length=1024, description="description says what the parameter does "
        "(shown by kubectl bgjob describe).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ParameterSpec:
        """The CEL rules again, for the plugin and for objects that missed the API server's
        check; the location names the parameter."""
        numeric = self.type in (ParameterType.INTEGER, ParameterType.NUMBER)
        problem = None
        if self.minimum is not None and self.maximum is not None and \
                self.minimum > self.maximum:
            problem = "minimum must not be above maximum"
        elif (self.minimum is not None or self.maximum is not None) and not numeric:
            problem = "minimum and maximum need type Integer or Number"
        elif self.pattern is not None and self.type is not ParameterType.STRING:
            problem = "pattern needs type String"
        elif self.enum is not None and self.type is ParameterType.BOOLEAN:
            problem = "a Boolean has no enum (it is true or false)"
        elif self.enum is not None and self.type.value in PARAM_SYNTAX and not all(
                re.match(PARAM_SYNTAX[self.type.value], e) for e in self.enum):
            problem = "every enum value must be of the parameter's type"
        if problem is not None:
            raise PydanticCustomError("parameter_schema", "parameter {name}: {problem}",
                                      {"name": self.name, "problem": problem})
        return self


class Freshness(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [{
                "rule": "self.maxAgeSinceSuccess.contains('d') || "
                "duration(self.maxAgeSinceSuccess) >= duration('1m')",
                "message": "freshness.maxAgeSinceSuccess: must be at least 1m",
                "fieldPath": ".maxAgeSinceSuccess",
            }]
        }
    )

    max_age_since_success: str = Field(
        pattern=EVERY_DURATION,
        description="maxAgeSinceSuccess: the condition Stale turns True when the last "
        "successful run (or the creation, if none) is older than this duration (26h, 90m, "
        "1d; at least 1m).",
    )


class WeeklyAt(Model):
    day: Weekday = Field(description="day is the day of the week the job runs on.")
    time: str = Field(pattern=HHMM, description='time is the wall-clock time, "HH:MM" (24h).')


class MonthlyAt(Model):
    day: int = Field(
        ge=1, le=31,
        description="day is the day of the month (1-31); months without that day are skipped.",
    )
    time: str = Field(pattern=HHMM, description='time is the wall-clock time, "HH:MM" (24h).')


DATE = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
# A schedule name becomes a label value and part of its Jobs' names (which stop at 63).
SCHEDULE_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_SCHEDULE_NAME = 20


class SkipWindow(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [{
                # format date-time makes both CEL timestamps, so this compares instants.
                "rule": "self.from < self.until",
                "message": "skip.windows: from must be before until",
                "fieldPath": ".until",
            }]
        }
    )

    from_: str = Field(
        alias="from", json_schema_extra={"format": "date-time"},
        description="from is the RFC 3339 time the window starts (inclusive).",
    )
    until: str = Field(
        json_schema_extra={"format": "date-time"},
        description="until is the RFC 3339 time the window ends (exclusive).",
    )


class Skip(Model):
    dates: list[str] = Field(
        default_factory=list, max_length=1000,
        json_schema_extra={"items": {"type": "string", "pattern": DATE}},
        description='dates are local dates ("YYYY-MM-DD", in the schedule\'s timeZone) on '
        "which no scheduled run starts, such as public holidays.",
    )
    cron: list[str] = Field(
        default_factory=list, max_length=20,
        json_schema_extra={"items": {"type": "string", "maxLength": 256}},
        description="cron lists 5-field cron expressions (in the schedule's timeZone); a due "
        'time one of them matches does not run ("* * * * 0,6": not at weekends).',
    )
    windows: list[SkipWindow] = Field(
        default_factory=list, max_length=100,
        description="windows are [from, until) time ranges in which no scheduled run starts, "
        "such as a change freeze.",
    )


class Schedule(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    # format date-time makes both CEL timestamps, so this compares instants.
                    "rule": "!has(self.activeFrom) || !has(self.activeUntil) || "
                    "self.activeFrom < self.activeUntil",
                    "message": "schedule.activeFrom must be before activeUntil",
                    "fieldPath": ".activeUntil",
                },
                {
                    "rule": "[has(self.cron), has(self.every), has(self.daily), has(self.weekly),"
                    " has(self.monthly), has(self.at)].filter(x, x).size() == 1",
                    "message": "schedule: set exactly one of cron, every, daily, weekly, "
                    "monthly, at",
                },
                {
                    # A value with days starts with at least 1d (the pattern says so), and CEL's
                    # duration() cannot read it.
                    "rule": "!has(self.every) || self.every.contains('d') || "
                    "duration(self.every) >= duration('1m')",
                    "message": "schedule.every: must be at least 1m",
                    "fieldPath": ".every",
                },
            ]
        }
    )

    cron: str | None = Field(
        default=None, max_length=256,
        description="cron is a 5-field cron expression or a macro (@hourly, @daily, @weekly, "
        "@monthly, @yearly); the letter H in the minute or hour field picks a value from a "
        "stable hash of namespace/name, to spread load.",
    )
    every: str | None = Field(
        default=None, pattern=EVERY_DURATION,
        description="every is an interval as a Go duration (30m, 2h, 90m), optionally led by "
        "whole days (1d, 1d12h), at least 1m. "
        "Intervals that divide an hour or a day evenly become a native CronJob; others are "
        "timed by the operator.",
    )
    daily: str | None = Field(
        default=None, pattern=HHMM, description='daily runs the job every day at "HH:MM".'
    )
    weekly: WeeklyAt | None = Field(
        default=None, description="weekly runs the job once a week on a day at a time."
    )
    monthly: MonthlyAt | None = Field(
        default=None, description="monthly runs the job once a month on a day at a time."
    )
    at: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"},
        description="at runs the job once, at this RFC 3339 time.",
    )
    time_zone: str = Field(
        default="UTC", max_length=64,
        description="timeZone is the IANA time zone the schedule is read in (default UTC).",
    )
    starting_deadline_seconds: int | None = Field(
        default=None, ge=0,
        description="startingDeadlineSeconds is the misfire grace: a run that cannot start "
        "this many seconds after its time is skipped and counted as missed.",
    )
    active_from: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"},
        description="activeFrom (RFC 3339): no scheduled run is due before this time.",
    )
    active_until: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"},
        description="activeUntil (RFC 3339): no scheduled run is due at or after this time; "
        "then the Ready condition's reason is Expired.",
    )
    skip: Skip | None = Field(
        default=None, description="skip lists due times that do not run (dates, cron "
        "expressions, windows); they are counted in stats.skipped, not as missed.",
    )
    catch_up: CatchUp = Field(
        default=CatchUp.LATEST,
        description="catchUp says which due times run late after downtime or suspension: "
        "Latest only the most recent (the CronJob rule), All every one within "
        "startingDeadlineSeconds (24h when unset), oldest first, None none; the rest are "
        "counted missed.",
    )


class NamedSchedule(Schedule):
    name: str = Field(
        min_length=1, max_length=MAX_SCHEDULE_NAME, pattern=SCHEDULE_NAME,
        description="name of the schedule (a DNS label of at most 20 characters): the label "
        "bgjob.dev/schedule on its Jobs, schedule in their run records, and part of the Job "
        "names.",
    )
    parameters: dict[str, str] = Field(
        default_factory=dict, description="parameters override spec.parameters for the runs "
        "of this schedule (run-parameters of a manual run override both).",
    )


class Backoff(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [{
                # The API server fills in both fields' defaults before the rule runs.
                "rule": "self.maxDelaySeconds >= self.initialDelaySeconds",
                "message": "retry.backoff.maxDelaySeconds: must be at least "
                "initialDelaySeconds",
                "fieldPath": ".maxDelaySeconds",
            }]
        }
    )

    initial_delay_seconds: int = Field(
        default=60, ge=0, description="initialDelaySeconds is the delay before the first retry."
    )
    factor: float = Field(
        default=2.0, ge=1.0, le=100.0,
        description="factor multiplies the delay for each further retry.",
    )
    max_delay_seconds: int = Field(
        default=3600, ge=0, description="maxDelaySeconds caps the delay between attempts."
    )
    jitter: float = Field(
        default=0.1, ge=0.0, le=1.0,
        description="jitter spreads each delay by up to this fraction, up or down.",
    )

    @model_validator(mode="after")
    def _max_covers_initial(self) -> Backoff:
        """The same rule as the CEL one, for objects that reach us without the API server's
        check (an older CRD still installed, or the kubectl plugin's offline checks)."""
        if self.max_delay_seconds < self.initial_delay_seconds:
            # A custom error keeps pydantic's "Value error, " prefix out of the condition;
            # the error's location (retry.backoff) and this text name the field.
            raise PydanticCustomError(
                "max_below_initial",
                "maxDelaySeconds ({max}) must be at least initialDelaySeconds ({initial})",
                {"max": self.max_delay_seconds, "initial": self.initial_delay_seconds})
        return self


class Retry(Model):
    limit: int = Field(
        default=0, ge=0, le=100,
        description="limit is the number of extra attempts after the first (0 = none).",
    )
    backoff: Backoff = Field(
        default_factory=Backoff, description="backoff sets the delay between attempts."
    )
    non_retryable_exit_codes: list[int] = Field(
        default_factory=list, max_length=255,
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 255}},
        description="nonRetryableExitCodes fail the run at once, without retry.",
    )


class AutoSuspend(Model):
    after_consecutive_failures: int = Field(
        ge=1, description="afterConsecutiveFailures suspends the schedule after this many "
        "failed runs in a row.",
    )


class History(Model):
    successful_jobs: int = Field(
        default=3, ge=0, le=100, description="successfulJobs is how many finished successful "
        "Jobs are kept.",
    )
    failed_jobs: int = Field(
        default=3, ge=0, le=100, description="failedJobs is how many failed Jobs are kept.",
    )
    run_records: int = Field(
        default=20, ge=1, le=100, description="runRecords is how many run records "
        "status.runs keeps, newest first.",
    )


def _open_object(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
            "description": description, **extra}


# The Job template stays open (the API server judges it when a child is created), but the few
# paths the CEL rules read are declared, because CEL cannot see undeclared fields.
_TEMPLATE_SCHEMA: dict[str, Any] = {
    "x-kubernetes-preserve-unknown-fields": True,
    "required": ["spec"],
    "properties": {
        "metadata": _open_object("metadata (labels, annotations) copied onto every Job."),
        "spec": _open_object(
            "spec is the batch/v1 JobSpec of every run.",
            required=["template"],
            properties={"template": _open_object(
                "template is the pod template of the Job.",
                required=["spec"],
                properties={"spec": _open_object(
                    "spec is the PodSpec; restartPolicy defaults to Never.",
                    properties={"restartPolicy": {
                        "type": "string", "enum": ["Never", "OnFailure"],
                        "description": "restartPolicy of the Job's pods: Never (default) or "
                        "OnFailure."}},
                )},
            )},
        ),
    },
}


class BackgroundJobSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.retry) || !has(self.retry.nonRetryableExitCodes) || "
                    "size(self.retry.nonRetryableExitCodes) == 0 || "
                    "!has(self.template.spec.template.spec.restartPolicy) || "
                    "self.template.spec.template.spec.restartPolicy == 'Never'",
                    "message": "retry.nonRetryableExitCodes needs "
                    "template.spec.template.spec.restartPolicy: Never",
                    "fieldPath": ".retry.nonRetryableExitCodes",
                },
                {
                    "rule": "!has(self.schedule) || !has(self.schedules)",
                    "message": "set at most one of schedule and schedules",
                    "fieldPath": ".schedules",
                },
                {
                    "rule": "!has(self.maxConcurrency) || (has(self.concurrencyPolicy) && "
                    "self.concurrencyPolicy in ['Allow', 'Enqueue'])",
                    "message": "maxConcurrency needs concurrencyPolicy Allow or Enqueue "
                    "(Forbid and Replace allow one run at a time)",
                    "fieldPath": ".maxConcurrency",
                },
                {
                    "rule": "!has(self.maxQueued) || (has(self.concurrencyPolicy) && "
                    "self.concurrencyPolicy == 'Enqueue')",
                    "message": "maxQueued needs concurrencyPolicy Enqueue (only Enqueue "
                    "queues runs)",
                    "fieldPath": ".maxQueued",
                },
            ]
        }
    )

    schedule: Schedule | None = Field(
        default=None,
        description="schedule says when the job runs; without it the job runs only when "
        "triggered with the bgjob.dev/run-now annotation.",
    )
    schedules: list[NamedSchedule] | None = Field(
        default=None, min_length=1, max_length=10,
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["name"]},
        description="schedules are several named schedules instead of schedule (set at most "
        "one of the two); their runs share the concurrency policy.",
    )
    suspend: bool = Field(
        default=False, description="suspend pauses the schedule; manual runs still work."
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        default=ConcurrencyPolicy.FORBID,
        description="concurrencyPolicy decides what happens when a run is due while another "
        "is active: Allow runs both (up to maxConcurrency), Forbid skips the new one, Replace "
        "cancels the old one, Enqueue queues the new one (FIFO) until a slot is free.",
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, le=1000, description="maxConcurrency is how many runs may be "
        "active at once under Allow (default: unlimited) and Enqueue (default 1).",
    )
    max_queued: int | None = Field(
        default=None, ge=0, le=MAX_QUEUED, description="maxQueued is how many runs may wait "
        "in status.queued under Enqueue (default 10); a run beyond it is skipped (RunSkipped, "
        "stats.skipped).",
    )
    parameters: dict[str, str] = Field(
        default_factory=dict, description="parameters are passed to every run as "
        "BGJOB_PARAM_<KEY> env vars and can be overridden per manual run.",
    )
    parameter_schema: list[ParameterSpec] = Field(
        default_factory=list, max_length=MAX_PARAMETERS,
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["name"]},
        description="parameterSchema types the parameters (a list keyed by name): each run's "
        "effective parameters (spec.parameters, then the run's overrides) are checked before "
        "its Job is created. Parameters it does not list stay untyped strings.",
    )
    freshness: Freshness | None = Field(
        default=None, description="freshness sets how old the last success may get before "
        "the condition Stale turns True.",
    )
    timeout_seconds: int | None = Field(
        default=None, ge=1, description="timeoutSeconds kills a run still going after this "
        "long (the Job's activeDeadlineSeconds); it is recorded as DeadlineExceeded.",
    )
    retry: Retry = Field(
        default_factory=Retry, description="retry re-runs failed runs as new Jobs with "
        "exponential backoff.",
    )
    auto_suspend: AutoSuspend | None = Field(
        default=None, description="autoSuspend suspends the schedule after a number of failed "
        "runs in a row.",
    )
    history: History = Field(
        default_factory=History, description="history sets how many Jobs and run records "
        "are kept.",
    )
    template: dict[str, Any] = Field(
        json_schema_extra={"type": "object", **_TEMPLATE_SCHEMA},
        description="template is the batch/v1 JobTemplateSpec (metadata and Job spec) every "
        "run is created from.",
    )

    @model_validator(mode="after")
    def _one_schedule_field(self) -> BackgroundJobSpec:
        """The CEL rules again, for objects that reach us without the API server's check."""
        if self.schedule is not None and self.schedules is not None:
            raise PydanticCustomError("two_schedule_fields",
                                      "set at most one of schedule and schedules")
        names = [s.name for s in self.schedules or []]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise PydanticCustomError("duplicate_schedule", "schedules: duplicate name {name}",
                                      {"name": dup[0]})
        return self

    @model_validator(mode="after")
    def _limits_fit_policy(self) -> BackgroundJobSpec:
        """The CEL rules on maxConcurrency and maxQueued, for objects that reach us without
        the API server's check."""
        policy = self.concurrency_policy
        if self.max_concurrency is not None and policy not in (ConcurrencyPolicy.ALLOW,
                                                               ConcurrencyPolicy.ENQUEUE):
            raise PydanticCustomError(
                "max_concurrency_policy", "maxConcurrency needs concurrencyPolicy Allow or "
                "Enqueue, not {policy}", {"policy": policy.value})
        if self.max_queued is not None and policy is not ConcurrencyPolicy.ENQUEUE:
            raise PydanticCustomError(
                "max_queued_policy", "maxQueued needs concurrencyPolicy Enqueue, not {policy}",
                {"policy": policy.value})
        return self

    @property
    def run_limit(self) -> int | None:
        """How many runs may be active at once (None: no limit)."""
        if self.concurrency_policy is ConcurrencyPolicy.ALLOW:
            return self.max_concurrency
        if self.concurrency_policy is ConcurrencyPolicy.ENQUEUE:
            return self.max_concurrency or 1
        return 1

    @property
    def queue_limit(self) -> int:
        return DEFAULT_MAX_QUEUED if self.max_queued is None else self.max_queued


# ---------------------------------------------------------------------------- status


class Condition(Model):
    type: str = Field(description="type of the condition: Ready, Suspended, Failing, Overdue.")
    status: str = Field(description="status is True, False or Unknown.")
    reason: str = Field(description="reason is a CamelCase word for the last transition.")
    message: str = Field(default="", description="message is a human-readable explanation.")
    last_transition_time: str = Field(
        description="lastTransitionTime is when the status last changed."
    )
    observed_generation: int = Field(
        default=0, description="observedGeneration is the spec generation this was set for."
    )


class ScheduleStatus(Model):
    kind: str = Field(description="kind is the schedule kind in use.")
    cron: str = Field(default="", description="cron is the compiled cron expression, if any.")
    time_zone: str = Field(default="UTC", description="timeZone of the schedule.")
    description: str = Field(default="", description="description in words.")
    mode: str = Field(description="mode is CronJob (native timing) or Operator.")
    next_run_times: list[str] = Field(
        default_factory=list, description="nextRunTimes are the next three run times (UTC)."
    )
    missed_through: str | None = Field(
        default=None, description="missedThrough is the time up to which missed runs are "
        "counted in stats.missed, so none is counted twice.",
    )
    in_force: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"type": "object",
                                         "x-kubernetes-preserve-unknown-fields": True},
        description="inForce is the last valid spec.schedule; after a bad edit the operator "
        "keeps timing runs by it until the spec is fixed.",
    )
    skipped_through: str | None = Field(
        default=None, description="skippedThrough is the time up to which skipped due times "
        "are counted in stats.skipped, so none is counted twice.",
    )


class ScheduleEntryStatus(Model):
    name: str = Field(description="name of the schedule in spec.schedules.")
    kind: str = Field(default="", description="kind is the schedule kind in use.")
    cron: str = Field(default="", description="cron is the compiled cron expression, if any.")
    time_zone: str = Field(default="UTC", description="timeZone of the schedule.")
    description: str = Field(default="", description="description in words.")
    mode: str = Field(default="Operator", description="mode is Operator: the operator times "
                      "every entry of spec.schedules.")
    cron_job: str | None = Field(default=None, description="cronJob is the owned CronJob "
                                 "(none: entries are operator-timed).")
    next_run_times: list[str] = Field(
        default_factory=list, description="nextRunTimes are the next three run times (UTC)."
    )
    since: str | None = Field(default=None, description="since is when this schedule's "
                              "timing began (due times before it are not judged).")
    last_schedule_time: str | None = Field(default=None, description="lastScheduleTime is the "
                                           "last due time of this schedule that started.")
    missed_through: str | None = Field(default=None, description="missedThrough: missed due "
                                       "times up to this time are counted.")
    skipped_through: str | None = Field(default=None, description="skippedThrough: skipped "
                                        "due times up to this time are counted.")
    in_force: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"type": "object",
                                         "x-kubernetes-preserve-unknown-fields": True},
        description="inForce is the last valid entry; after a bad edit of it the operator "
        "keeps timing runs by it until the spec is fixed.",
    )


class RunRef(Model):
    job: str = Field(description="job is the name of the Job.")
    trigger: str = Field(description="trigger is scheduled, manual, retry or backfill.")
    attempt: int = Field(default=1, description="attempt is 1 for the first try.")
    start_time: str | None = Field(default=None, description="startTime of the Job.")
    schedule: str | None = Field(default=None, description="schedule is the name of the "
                                 "spec.schedules entry the run belongs to.")
    result: str = Field(default="Running", description="result is Running, or Queued while "
                        "the Job is suspended by an admission system such as Kueue.")


class QueuedRun(Model):
    """A run that could not start yet. Its Job name is fixed when it is queued, so a pass
    repeated after a crash finds the Job it made and never starts the run twice."""

    job: str = Field(description="job is the name the run's Job has (or will have).")
    trigger: str = Field(description="trigger is scheduled, manual, retry or backfill.")
    since: str = Field(description="since is when the run joined the queue.")
    scheduled_time: str | None = Field(default=None, description="scheduledTime of the run.")
    not_before: str | None = Field(
        default=None, description="notBefore is the earliest start (bgjob.dev/run-at).")
    parameters: dict[str, str] = Field(
        default_factory=dict, description="parameters are the run's overrides.")
    attempt: int = Field(default=1, description="attempt the run will be.")
    first_job: str | None = Field(
        default=None, description="firstJob is the run's first attempt, for a retry.")
    waiting_job: bool = Field(
        default=False, description="waitingJob is true when the Job exists already, "
        "suspended (made by the CronJob); starting the run admits it.")
    schedule: str | None = Field(default=None, description="schedule is the spec.schedules "
                                 "entry of a scheduled run (or of the run a retry repeats).")


class RunRecord(Model):
    job: str = Field(description="job is the name of the Job.")
    trigger: str = Field(description="trigger is scheduled, manual or retry.")
    attempt: int = Field(default=1, description="attempt is 1 for the first try.")
    scheduled_time: str | None = Field(default=None, description="scheduledTime of the run.")
    start_time: str | None = Field(default=None, description="startTime of the Job.")
    completion_time: str | None = Field(default=None, description="completionTime of the Job.")
    duration_seconds: float | None = Field(default=None, description="durationSeconds.")
    result: str = Field(
        description="result is Running, Succeeded, Failed, DeadlineExceeded or Cancelled."
    )
    exit_code: int | None = Field(default=None, description="exitCode of the main container.")
    reason: str = Field(default="", description="reason the Job finished as it did.")
    message: str = Field(default="", description="message from the Job's final condition.")
    schedule: str | None = Field(default=None, description="schedule is the name of the "
                                 "spec.schedules entry the run belongs to.")
    output: str | None = Field(
        default=None, description="output is the main container's termination message (the "
        "first 1 KiB); the main container is the pod template's first container.",
    )


class Stats(Model):
    runs: int = Field(default=0, description="runs is the number of finished runs.")
    succeeded: int = Field(default=0, description="succeeded runs.")
    failed: int = Field(default=0, description="failed runs (including timeouts).")
    success_rate: float | None = Field(default=None, description="successRate, 0 to 1.")
    average_duration_seconds: float | None = Field(
        default=None, description="averageDurationSeconds over finished runs."
    )
    consecutive_failures: int = Field(default=0, description="consecutiveFailures in a row.")
    retries: int = Field(default=0, description="retries started.")
    missed: int = Field(default=0, description="missed runs (misfires).")
    skipped: int = Field(
        default=0, description="skipped runs (not started on purpose: superseded or refused)."
    )


class PendingRetry(Model):
    attempt: int = Field(description="attempt is the number the pending retry will have.")
    next_retry_time: str = Field(description="nextRetryTime is when it starts.")
    job: str = Field(description="job is the failed Job being retried.")
    first_job: str | None = Field(
        default=None, description="firstJob is the run's first attempt (retry Jobs are named "
        "after it).",
    )
    scheduled_time: str | None = Field(
        default=None, description="scheduledTime of the run being retried, if scheduled."
    )
    parameters: dict[str, str] = Field(
        default_factory=dict, description="parameters are the run's overrides, kept for its "
        "retries even when the failed Job is gone.",
    )
    schedule: str | None = Field(default=None, description="schedule is the spec.schedules "
                                 "entry of the run being retried.")


class BackfillStatus(Model):
    from_: str = Field(alias="from", description="from is the start of the range (included).")
    until: str = Field(description="until is the end of the range (excluded).")
    id: str = Field(description="id names this backfill's Jobs: <name>-b<id>-<minutes>.")
    phase: str = Field(default="Running", description="phase is Running, Completed, "
                       "Cancelled or Invalid (the annotation could not be used: see message).")
    message: str = Field(default="", description="message says why an Invalid backfill "
                         "did not start.")
    total: int = Field(default=0, description="total is the number of due times in the range.")
    started: int = Field(default=0, description="started runs.")
    succeeded: int = Field(default=0, description="succeeded runs.")
    failed: int = Field(default=0, description="failed runs (after their retries).")
    next: str | None = Field(default=None, description="next is the due time that starts "
                             "next; absent once every run has started.")
    next_schedule: str | None = Field(default=None, description="nextSchedule is the "
                                      "spec.schedules entry the next time belongs to.")
    completion_time: str | None = Field(default=None, description="completionTime is when "
                                        "the last run ended (or the backfill was cancelled).")


class BackgroundJobStatus(Model):
    observed_generation: int | None = Field(default=None, description="observedGeneration.")
    conditions: list[Condition] = Field(default_factory=list, description="conditions.")
    schedule: ScheduleStatus | None = Field(default=None, description="schedule as compiled; "
                                            "with spec.schedules, their merged next runs.")
    schedules: list[ScheduleEntryStatus] | None = Field(
        default=None, description="schedules: one entry per spec.schedules entry.")
    cron_job: str | None = Field(default=None, description="cronJob is the owned CronJob.")
    active: list[RunRef] = Field(default_factory=list, description="active runs.")
    last_schedule_time: str | None = Field(default=None, description="lastScheduleTime.")
    last_successful_time: str | None = Field(default=None, description="lastSuccessfulTime.")
    last_failure_time: str | None = Field(default=None, description="lastFailureTime.")
    last_run: RunRecord | None = Field(default=None, description="lastRun finished or running.")
    runs: list[RunRecord] = Field(default_factory=list, description="runs, newest first.")
    stats: Stats = Field(default_factory=Stats, description="stats over all runs.")
    retry: PendingRetry | None = Field(
        default=None, description="retry is the earliest pending retry, while one is pending."
    )
    pending_retries: list[PendingRetry] = Field(
        default_factory=list, description="pendingRetries holds one pending retry per failed "
        "run, earliest first; each starts once, at its time, under the concurrency policy.",
    )
    accounted: list[str] = Field(
        default_factory=list, description="accounted lists the UIDs of Jobs already counted "
        "in stats whose bgjob.dev/accounting finalizer is still being removed (the Job "
        "controller's uncountedTerminatedPods, the other way round).",
    )
    queued: list[QueuedRun] = Field(
        default_factory=list, description="queued lists the runs waiting for a slot (Enqueue) "
        "or for their time (bgjob.dev/run-at), first in first out.",
    )
    queued_count: int = Field(default=0, description="queuedCount is the length of queued.")
    last_handled_run_now: str | None = Field(
        default=None, description="lastHandledRunNow is the last run-now token acted on."
    )
    last_handled_cancel: str | None = Field(
        default=None, description="lastHandledCancel is the last cancel token acted on."
    )
    last_handled_resume: str | None = Field(
        default=None, description="lastHandledResume is the last resume token acted on."
    )
    last_handled_backfill: str | None = Field(
        default=None, description="lastHandledBackfill is the last bgjob.dev/backfill value "
        "acted on."
    )
    backfill: BackfillStatus | None = Field(
        default=None, description="backfill is the progress of the latest backfill.")


class BackgroundJob(Model):
    """Only what the reconciler reads of the object; metadata stays a plain dict."""

    model_config = ConfigDict(extra="ignore")

    spec: BackgroundJobSpec = Field(description="spec of the BackgroundJob.")
    status: BackgroundJobStatus = Field(
        default_factory=BackgroundJobStatus, description="status observed by the operator."
    )
