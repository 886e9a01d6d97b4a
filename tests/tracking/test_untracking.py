"""Untracking and deleting: the CRM email goes only if this user owns it and nobody else tracks it."""

from __future__ import annotations

from urllib.parse import quote

from shared.domain.model import ItemKind
from shared.store.records import Mailbox
from tests.tracking.conftest import TRACKED, World, message, unique_address


async def _track_in(world: World, mailbox: Mailbox, mail: dict[str, object]) -> str:
    [message_id] = world.graph_sim.seed(mailbox.mailbox_id, messages={"inbox": [mail]})["messages"]["inbox"]
    await world.sync(mailbox)
    return str(message_id)


async def test_a_crm_email_another_mailbox_tracks_is_never_deleted(world: World) -> None:
    owner, colleague = await world.mailbox(), await world.mailbox()
    mail = message(unique_address("customer"), "Contract", categories=[TRACKED])
    owner_copy = await _track_in(world, owner, mail)
    colleague_copy = await _track_in(world, colleague, mail)
    record_id = str(world.email_id(mail))
    record = world.dataverse.record("email", record_id)
    assert record is not None
    assert record["_ownerid_value"] == owner.crm_user_id  # the first to track it created it

    world.set_categories(owner, owner_copy, [])  # the owner untracks: the colleague still tracks it
    await world.sync(owner)

    assert world.dataverse.record("email", record_id) is not None
    assert not await world.linked(owner, owner_copy)

    world.graph("DELETE", colleague, f"messages/{quote(colleague_copy, safe='')}")
    await world.sync(colleague)  # deleting in Outlook keeps a tracked email in the CRM

    assert world.dataverse.record("email", record_id) is not None
    assert (
        await world.store.links.get_by_outlook(colleague.mailbox_id, ItemKind.EMAIL, colleague_copy) is None
    )


async def test_untracking_an_email_the_user_does_not_own_only_unlinks_it(world: World) -> None:
    owner, colleague = await world.mailbox(), await world.mailbox()
    mail = message(unique_address("customer"), "Minutes", categories=[TRACKED])
    await _track_in(world, owner, mail)
    colleague_copy = await _track_in(world, colleague, mail)
    await world.store.registry.unregister(owner.mailbox_id)  # nobody else holds it any more

    world.set_categories(colleague, colleague_copy, [])
    await world.sync(colleague)

    assert world.tracked(mail["internetMessageId"])
    assert (
        await world.store.links.get_by_outlook(colleague.mailbox_id, ItemKind.EMAIL, colleague_copy) is None
    )
