"""Tasks: Microsoft To Do ``todoTask`` <-> the neutral :class:`~shared.domain.model.Task`."""

from __future__ import annotations

from msgraph.generated.models.importance import Importance as GraphImportance
from msgraph.generated.models.task_status import TaskStatus as GraphTaskStatus
from msgraph.generated.models.todo_task import TodoTask

from shared.domain.model import Importance, ItemKind, OutlookItem, Task, TaskStatus
from shared.outlook.convert.common import enum_value, is_removed, item_envelope, removed_item, text_body
from shared.outlook.convert.times import from_utc, to_utc


def task_from_graph(task: TodoTask) -> Task:
    return Task(
        subject=task.title,
        body=(task.body.content or None) if task.body else None,
        start=to_utc(task.start_date_time),
        due=to_utc(task.due_date_time),
        completed=to_utc(task.completed_date_time),
        status=TaskStatus(enum_value(task.status) or TaskStatus.NOT_STARTED.value),
        importance=Importance(enum_value(task.importance) or Importance.NORMAL.value),
    )


def task_item(mailbox_id: str, task: TodoTask, *, list_id: str) -> OutlookItem:
    """A To Do task; its ``folder_id`` is the task list (To Do has no change keys)."""
    if is_removed(task):
        return removed_item(mailbox_id, task, ItemKind.TASK)
    envelope = item_envelope(mailbox_id, task, ItemKind.TASK) | {"folder_id": list_id}
    return OutlookItem(**envelope, item=task_from_graph(task))


def task_to_graph(task: Task) -> TodoTask:
    """A To Do task body; times go as UTC wall clock, which To Do accepts for every field."""
    todo = TodoTask(
        title=task.subject,
        body=text_body(task.body),
        status=GraphTaskStatus(task.status.value),
        importance=GraphImportance(task.importance.value),
    )
    if task.start is not None:
        todo.start_date_time = from_utc(task.start, None)
    if task.due is not None:
        todo.due_date_time = from_utc(task.due, None)
    if task.completed is not None:
        todo.completed_date_time = from_utc(task.completed, None)
    return todo
