"""The initial fill's To Do tasks: a task create whose answer is lost (Graph committed it, then
answered 504) is found by its linkedResource (externalId = the CRM id) and not posted twice."""

from __future__ import annotations

import uuid

from tests.e2e.conftest import E2E, item_path
from tests.e2e.test_crm_fill import graph_log, lose_create_answer, onboard
from tests.e2e.test_crm_to_outlook import connected, synced_user

__all__ = ["connected"]


def test_a_task_create_whose_answer_is_lost_is_found_by_its_linked_resource(connected: E2E) -> None:
    e2e = connected
    mailbox = e2e.new_mailbox()
    user = synced_user(e2e, mailbox)
    subject = f"lost-task-{uuid.uuid4().hex[:6]}"
    e2e.dataverse_control(
        "POST",
        "seed",
        {
            "table": "task",
            "records": [{"subject": subject, "ownerid@odata.bind": f"/systemusers({user.systemuserid})"}],
        },
    )
    lose_create_answer(e2e, mailbox, "/tasks")
    code, out = onboard(e2e, mailbox, user.systemuserid)
    assert code == 0, out
    tasks = e2e.outlook("GET", mailbox, item_path("todo/lists", mailbox.todo_list) + "/tasks")["value"]
    assert [t["title"] for t in tasks if t["title"] == subject] == [subject]
    posts = [r for r in graph_log(e2e, mailbox) if r["method"] == "POST" and r["path"].endswith("/tasks")]
    assert [r["status"] for r in posts] == [504]  # committed once, never posted again
