"""The job engine: QEMU's job life cycle, block-job events and the job registry.

``status`` holds the state machine as data, ``job`` the life cycle every job
shares, ``blockjob`` what block jobs add, ``ratelimit`` the speed limit and
``manager`` the registry and the nursery jobs run in.  Concrete jobs
(mirror, blockdev-create) subclass :class:`Job` or :class:`BlockJob`.
"""

from __future__ import annotations

from .blockjob import BlockdevOnError, BlockErrorAction, BlockJob, IoStatus, decide_action
from .job import CANCELED_MESSAGE, Job, JobFailed, JobHost, Progress
from .manager import JobManager
from .ratelimit import RateLimiter
from .status import (
    COMPLETED_STATUSES,
    READY_STATUSES,
    TRANSITIONS,
    VERBS,
    IllegalTransition,
    JobStatus,
    JobType,
    JobVerb,
    check_verb,
    id_wellformed,
    transition_allowed,
    verb_allowed,
)

__all__ = [
    "CANCELED_MESSAGE",
    "COMPLETED_STATUSES",
    "READY_STATUSES",
    "TRANSITIONS",
    "VERBS",
    "BlockErrorAction",
    "BlockJob",
    "BlockdevOnError",
    "IllegalTransition",
    "IoStatus",
    "Job",
    "JobFailed",
    "JobHost",
    "JobManager",
    "JobStatus",
    "JobType",
    "JobVerb",
    "Progress",
    "RateLimiter",
    "check_verb",
    "decide_action",
    "id_wellformed",
    "transition_allowed",
    "verb_allowed",
]
