"""Correlation: replies and forwards of tracked mail are tracked under the same regarding."""

from __future__ import annotations

import uuid

import pytest

from shared.domain.mailbox_settings import CrmRecordRef, MailboxSettings
from shared.domain.model import TrackingRule
from tests.tracking.conftest import TRACKED, World, message, unique_address


async def test_replies_in_the_conversation_or_with_the_token_inherit_the_regarding(world: World) -> None:
    account_id = uuid.UUID(world.dataverse.seed("account", [{"name": "Northwind"}])[0])
    probe = await world.mailbox()
    folder = world.create_folder(probe, "Northwind", parent="inbox")
    settings = MailboxSettings(
        tracked_folders={folder: CrmRecordRef(table="account", id=account_id)}, tracking_token_prefix="CRM:"
    )
    mailbox = await world.store.registry.update_settings(probe, settings)
    buyer = unique_address("buyer")
    thread, token_thread = f"conv-{uuid.uuid4().hex}", f"conv-{uuid.uuid4().hex}"
    originals = [
        message(buyer, "Pricing", conversation=thread),
        message(buyer, "Quote CRM:0001234", conversation=token_thread),
    ]
    world.graph_sim.seed(mailbox.mailbox_id, messages={folder: originals})
    await world.sync(mailbox, folder)

    replies = [
        message(buyer, "RE: Pricing", conversation=thread),
        message(buyer, "FW: Quote CRM:0001234", conversation=f"conv-{uuid.uuid4().hex}"),
        message(buyer, "Unrelated", conversation=f"conv-{uuid.uuid4().hex}"),
    ]
    world.graph_sim.seed(mailbox.mailbox_id, messages={"inbox": replies})
    await world.sync(mailbox)

    for reply in replies[:2]:
        row = world.dataverse.record("email", str(world.email_id(reply)))
        assert row is not None
        assert row["_regardingobjectid_value"] == str(account_id)
    assert not world.tracked(replies[2]["internetMessageId"])


@pytest.mark.parametrize(
    ("rule", "track_correlated", "reply_tracked"),
    [
        (TrackingRule.RESPONSES_TO_CRM, False, True),
        (TrackingRule.NONE, False, False),
        (TrackingRule.NONE, True, True),
    ],
)
async def test_responses_to_tracked_mail_follow_the_rule_and_the_correlation_switch(
    world: World, rule: TrackingRule, track_correlated: bool, reply_tracked: bool
) -> None:
    mailbox = await world.mailbox(MailboxSettings(tracking=rule, track_correlated=track_correlated))
    thread, customer = f"conv-{uuid.uuid4().hex}", unique_address("customer")
    original = message(customer, "Proposal", conversation=thread, categories=[TRACKED])
    world.graph_sim.seed(mailbox.mailbox_id, messages={"inbox": [original]})
    await world.sync(mailbox)
    reply = message(customer, "RE: Proposal", conversation=thread)
    world.graph_sim.seed(mailbox.mailbox_id, messages={"inbox": [reply]})

    await world.sync(mailbox)

    assert world.tracked(original["internetMessageId"])
    assert world.tracked(reply["internetMessageId"]) is reply_tracked
