"""The initial fill from the CRM at onboarding, end to end: contacts in the user's filter reach
Outlook paced under the mailbox's Graph budget (lowered in the simulator, so pacing is exercised),
and a fill that died between a Graph create and its link write resumes without a duplicate."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from shared.config import Settings
from shared.domain.model import ItemKind
from shared.runtime import Runtime
from shared.sync.crm_fill import CrmFill, FillReport
from tests.e2e.conftest import E2E, Mailbox
from tests.e2e.test_crm_to_outlook import connected, synced_user

__all__ = ["connected"]
BUDGET, WINDOW = 20, 2.0  # requests per mailbox per window, in the simulator and in crmsync's pacer
NEVER = "0 0 0 1 1 *"  # NCRONTAB: midnight on January 1st
PACED = {"CRMSYNC_GRAPH_MAILBOX_BUDGET": str(BUDGET), "CRMSYNC_GRAPH_BUDGET_WINDOW_SECONDS": str(WINDOW)}


def seed_contacts(e2e: E2E, owner: str, names: list[str]) -> None:
    """Contacts the user owns, written before the mailbox is registered (no webhook run for them)."""
    records = [{"lastname": n, "ownerid@odata.bind": f"/systemusers({owner})"} for n in names]
    e2e.dataverse_control("POST", "seed", {"table": "contact", "records": records})


def surnames(e2e: E2E, mailbox: Mailbox) -> list[str]:
    page = e2e.outlook("GET", mailbox, "contacts?$top=999&$select=surname")
    return [str(c.get("surname")) for c in page["value"]]


def graph_log(e2e: E2E, mailbox: Mailbox) -> list[dict[str, Any]]:
    return list(e2e.graph_control("GET", f"requests?user={mailbox.id}"))


def lose_create_answer(e2e: E2E, mailbox: Mailbox, path: str) -> None:
    """Graph commits the next POST to ``path`` and answers 504: its outcome unknown to the client."""
    fault = {"kind": "lost_answer", "status": 504, "method": "POST", "path_contains": path}
    e2e.graph_control("POST", "faults", {**fault, "user": mailbox.id})


def onboard(e2e: E2E, mailbox: Mailbox, systemuserid: str) -> tuple[int, str]:
    return e2e.cli("mailbox", "add", mailbox.id, "--crm-user", systemuserid, "--json", **PACED)


def test_fill_brings_every_contact_in_the_filter_paced_under_the_budget(connected: E2E) -> None:
    e2e = connected
    mailbox = e2e.new_mailbox()
    user = synced_user(e2e, mailbox)
    tag = uuid.uuid4().hex[:6]
    names = [f"fill-{tag}-{i:02d}" for i in range(24)]
    seed_contacts(e2e, user.systemuserid, names)
    e2e.graph_control("PATCH", f"users/{mailbox.id}/limits", {"budget": BUDGET, "window_seconds": WINDOW})
    started = time.monotonic()
    code, out = onboard(e2e, mailbox, user.systemuserid)
    elapsed = time.monotonic() - started
    assert code == 0, out
    # The lowered budget is the connector's to meet: the test's own reads (same mailbox, and the
    # simulator counts per mailbox) go back to Graph's default budget, or they would meet its 429.
    e2e.graph_control("PATCH", f"users/{mailbox.id}/limits", {"budget": None, "window_seconds": None})
    assert sorted(n for n in surnames(e2e, mailbox) if n.startswith(f"fill-{tag}")) == names  # each once
    log = graph_log(e2e, mailbox)
    creates = [r for r in log if r["method"] == "POST" and r["path"].endswith("/contacts")]
    assert len([r for r in creates if r["status"] == 201]) == len(names)
    assert not [r for r in creates if r["status"] == 429]  # paced: the fill met no throttling
    assert elapsed >= (len(creates) - BUDGET) * WINDOW / BUDGET  # ...because it was held back


async def lose_link_writes_and_fill_again(e2e: E2E, mailbox_id: str, lost: int) -> FillReport:
    """As if the fill had been killed after ``lost`` Graph creates, before their link writes: those
    link rows are removed from the store; then the fill runs again (as ``mailbox resync`` runs it)."""
    runtime = Runtime(Settings.model_validate(e2e.sandbox.app_settings()))
    try:
        store = await runtime.store()
        links = [link async for link in store.links.list_links(mailbox_id, ItemKind.CONTACT)][:lost]
        for link in links:
            await store.links.delete(link)
        fill = CrmFill(store=store, graph=await runtime.graph(), runner=await runtime.crm_run())
        return await fill.fill_table(mailbox_id, "contact")
    finally:
        await runtime.close()


def test_a_fill_killed_between_creates_and_link_writes_resumes_without_a_duplicate(connected: E2E) -> None:
    e2e = connected
    mailbox = e2e.new_mailbox()
    user = synced_user(e2e, mailbox)
    tag = uuid.uuid4().hex[:6]
    names = [f"resume-{tag}-{i:02d}" for i in range(6)]
    seed_contacts(e2e, user.systemuserid, names)
    code, out = onboard(e2e, mailbox, user.systemuserid)
    assert code == 0, out
    # The crash is simulated by deleting link rows: no change-tracking timer run may route these
    # contacts in between (the fill resuming is what is tested, not a routed run after a crash).
    e2e.restart_runner(CRMSYNC_CRM_CHANGES_SCHEDULE=NEVER)
    try:
        report = asyncio.run(lose_link_writes_and_fill_again(e2e, mailbox.id, 3))
        assert (report.in_filter, report.already_linked, report.relinked) == (6, 3, 3)
        assert sorted(n for n in surnames(e2e, mailbox) if n.startswith(f"resume-{tag}")) == names  # no dup
        again = asyncio.run(lose_link_writes_and_fill_again(e2e, mailbox.id, 0))
        assert (again.already_linked, again.relinked, again.outlook_writes) == (6, 0, 0)  # all linked again
    finally:
        e2e.restart_runner()


def test_a_contact_create_whose_answer_is_lost_is_found_by_its_stamp_not_posted_twice(connected: E2E) -> None:
    e2e = connected
    mailbox = e2e.new_mailbox()
    user = synced_user(e2e, mailbox)
    name = f"lost-{uuid.uuid4().hex[:6]}"
    seed_contacts(e2e, user.systemuserid, [name])
    lose_create_answer(e2e, mailbox, "/contacts")
    code, out = onboard(e2e, mailbox, user.systemuserid)
    assert code == 0, out
    assert [n for n in surnames(e2e, mailbox) if n == name] == [name]
    posts = [r for r in graph_log(e2e, mailbox) if r["method"] == "POST" and r["path"].endswith("/contacts")]
    assert [r["status"] for r in posts] == [504]  # committed once, never posted again
