"""Microsoft To Do task <-> Dataverse ``task``.

Columns: ``subject``, ``description`` (the body), ``scheduledstart`` (start), ``scheduledend``
(due), ``actualend`` (completed) and ``prioritycode`` (importance) are two-way.

The To Do status is the task's status reason, with the state it belongs to and the percentage
Dynamics shows (task.md: ``statecode`` 0 Open, 1 Completed, 2 Canceled; ``statuscode`` 2 Not
Started, 3 In Progress, 4 Waiting on someone else, 5 Completed, 6 Canceled, 7 Deferred):

    notStarted      -> Open / Not Started (2),              0 %
    inProgress      -> Open / In Progress (3),              % left as the CRM has it
    waitingOnOthers -> Open / Waiting on someone else (4),  % left as the CRM has it
    deferred        -> Open / Deferred (7),                 % left as the CRM has it
    completed       -> Completed / Completed (5),           100 %

Importance and Status are fixed ("What fields can be synchronized with Outlook?"): no organization
or mailbox setting changes their direction; the other columns are settable.

``statecode`` and ``percentcomplete`` follow ``statuscode``: the three are merged and written as
one unit, so Dataverse never sees a status reason that does not belong to the state. A CRM task
that is Canceled (6) shows as completed in To Do, which has no cancelled state.
"""

from __future__ import annotations

from shared.domain.model import FieldDirection, ItemKind, Task, TaskStatus
from shared.sync.fieldmaps.base import (
    ABSENT,
    PRIORITY_CODES,
    Absent,
    CrmValue,
    FieldMap,
    FieldMapping,
    as_int,
    choice_column,
    invert,
    text_column,
    utc_column,
)

STATUS: dict[TaskStatus, int] = {
    TaskStatus.NOT_STARTED: 2,
    TaskStatus.IN_PROGRESS: 3,
    TaskStatus.WAITING_ON_OTHERS: 4,
    TaskStatus.COMPLETED: 5,
    TaskStatus.DEFERRED: 7,
}
STATE_OF_STATUS: dict[int, int] = {2: 0, 3: 0, 4: 0, 5: 1, 6: 2, 7: 0}
_STATUS_FROM_CRM: dict[int, TaskStatus] = invert(STATUS) | {6: TaskStatus.COMPLETED}  # Canceled
_PERCENT: dict[TaskStatus, int] = {TaskStatus.NOT_STARTED: 0, TaskStatus.COMPLETED: 100}


def _status_to_outlook(task: Task, value: CrmValue) -> Task:
    status = _STATUS_FROM_CRM.get(as_int(value) or 0)
    return task.model_copy(update={"status": status}) if status else task


def _percent(task: Task) -> CrmValue | Absent:
    """To Do has no percentage: only the two ends of the scale are known."""
    return _PERCENT.get(task.status, ABSENT)


TASK_MAP: FieldMap[Task] = FieldMap(
    ItemKind.TASK,
    "task",
    (
        text_column(Task, "subject", "subject"),
        text_column(Task, "description", "body"),
        utc_column(Task, "scheduledstart", "start"),
        utc_column(Task, "scheduledend", "due"),
        utc_column(Task, "actualend", "completed"),
        choice_column(Task, "prioritycode", "importance", PRIORITY_CODES, fixed=True),
        FieldMapping("statuscode", lambda task: STATUS[task.status], _status_to_outlook, fixed=True),
        FieldMapping(
            "statecode",
            lambda task: STATE_OF_STATUS[STATUS[task.status]],
            None,
            FieldDirection.TO_CRM,
            follows="statuscode",
        ),
        FieldMapping("percentcomplete", _percent, None, FieldDirection.TO_CRM, follows="statuscode"),
    ),
    blank=Task,
)
