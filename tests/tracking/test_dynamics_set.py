"""What Dynamics users set stays set: a regarding a Dynamics user gave a tracked email (by hand, or with
the App for Outlook) is neither cleared nor replaced when the message leaves or enters a tracked
folder - the tie-break ``crm`` (the default) keeps it; with ``outlook`` the tracking decision wins."""

from __future__ import annotations

import uuid

import httpx

from shared.domain.mailbox_settings import CrmRecordRef, MailboxSettings, TieBreak
from shared.store.records import AuditAction, Mailbox
from tests.tracking.conftest import World, message


def _regarding(world: World, record_id: uuid.UUID) -> str | None:
    row = world.dataverse.record("email", str(record_id))
    assert row is not None
    value = row.get("_regardingobjectid_value")
    return str(value) if value else None


def _set_in_dynamics(world: World, record_id: uuid.UUID, account_id: str) -> None:
    """A Dynamics user points the email at another account (Web API)."""
    response = httpx.patch(
        f"{world.dataverse.api_url}/emails({record_id})",
        json={"regardingobjectid_account_email@odata.bind": f"/accounts({account_id})"},
        headers=world.dataverse.headers(world.token),
        trust_env=False,
    )
    assert response.status_code == 204, response.text


async def _tracked_in_folder(world: World, tie_break: TieBreak) -> tuple[object, str, uuid.UUID, str, str]:
    first, second = world.dataverse.seed("account", [{"name": "Contoso"}, {"name": "Fabrikam"}])
    probe = await world.mailbox()
    folder = world.create_folder(probe, "Contoso", parent="inbox")
    settings = MailboxSettings(
        tracked_folders={folder: CrmRecordRef(table="account", id=uuid.UUID(first))},
        conflict_tie_break=tie_break,
    )
    mailbox = await world.store.registry.update_settings(probe, settings)
    mail = message("buyer@fabrikam.example", "Terms")
    [message_id] = world.graph_sim.seed(mailbox.mailbox_id, messages={folder: [mail]})["messages"][folder]
    await world.sync(mailbox, folder)
    record_id = world.email_id(mail)
    assert _regarding(world, record_id) == first
    _set_in_dynamics(world, record_id, second)
    world.move(mailbox, message_id, "inbox")  # leaves the tracked folder: tracking wants no regarding
    await world.sync(mailbox, folder)
    await world.sync(mailbox)
    return mailbox, folder, record_id, first, second


async def test_a_regarding_set_in_dynamics_is_not_cleared_when_the_message_leaves_its_folder(
    world: World,
) -> None:
    mailbox, _, record_id, _, second = await _tracked_in_folder(world, TieBreak.CRM)
    assert isinstance(mailbox, Mailbox)

    assert world.dataverse.record("email", str(record_id)) is not None  # still tracked
    assert _regarding(world, record_id) == second  # what the Dynamics user set stays
    records = await world.store.audit.list_recent(mailbox.mailbox_id)
    assert any(
        r.action is AuditAction.CONFLICT and r.reason_code == "tie_break.crm.regardingobjectid"
        for r in records
    )


async def test_with_the_outlook_tie_break_the_tracking_decision_wins(world: World) -> None:
    _, _, record_id, _, _ = await _tracked_in_folder(world, TieBreak.OUTLOOK)

    assert _regarding(world, record_id) is None
