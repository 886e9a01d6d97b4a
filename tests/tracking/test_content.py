"""What a tracked email brings along: its attachments (within the size limit) and resolved parties."""

from __future__ import annotations

import uuid

import pytest

from shared.domain.mailbox_settings import MailboxSettings
from shared.sync.planner_email import unknown_sender_contact_id
from shared.sync.tracking.attachments import SKIPPED_PREFIX
from tests.tracking.conftest import TRACKED, World, message, unique_address

SENDER = 1


async def test_attachments_within_the_limit_are_copied_and_larger_ones_recorded_as_skipped(
    world: World,
) -> None:
    mailbox = await world.mailbox(MailboxSettings(max_attachment_bytes=1000))
    mail = message(unique_address("customer"), "Drawings", categories=[TRACKED])
    [message_id] = world.graph_sim.seed(mailbox.mailbox_id, messages={"inbox": [mail]})["messages"]["inbox"]
    world.attach(mailbox, message_id, "small.txt", b"x" * 10)
    world.attach(mailbox, message_id, "large.bin", b"y" * 2000)

    await world.sync(mailbox)
    await world.sync(mailbox)  # a second run copies nothing twice

    record_id = world.email_id(mail)
    rows = world.crm_query(f"activitymimeattachments?$filter=_objectid_value eq {record_id}")
    assert [(row["filename"], row["objecttypecode"]) for row in rows] == [("small.txt", "email")]
    email = world.dataverse.record("email", str(record_id))
    assert email is not None
    assert email["subcategory"].startswith(SKIPPED_PREFIX)
    assert "large.bin (2000 bytes > limit 1000)" in email["subcategory"]


def sender_party(world: World, record_id: uuid.UUID) -> dict[str, object]:
    parties = world.crm_query(f"emails({record_id})/email_activity_parties")
    [sender] = [party for party in parties if party["participationtypemask"] == SENDER]
    return sender


async def test_a_sender_resolves_to_their_crm_contact(world: World) -> None:
    address = unique_address("buyer")
    [contact_id] = world.dataverse.seed("contact", [{"lastname": "Buyer", "emailaddress1": address}])
    mailbox = await world.mailbox()
    mail = message(address, "Order", categories=[TRACKED])
    world.graph_sim.seed(mailbox.mailbox_id, messages={"inbox": [mail]})

    await world.sync(mailbox)

    party = sender_party(world, world.email_id(mail))
    assert party["_partyid_value"] == contact_id
    assert party["addressused"] == address


@pytest.mark.parametrize("create_contact", [False, True])
async def test_an_unknown_sender_stays_an_address_unless_contacts_are_created(
    world: World, create_contact: bool
) -> None:
    address = unique_address("stranger")
    mailbox = await world.mailbox(MailboxSettings(create_contact_for_unknown_sender=create_contact))
    mail = message(address, "Hello", categories=[TRACKED])
    world.graph_sim.seed(mailbox.mailbox_id, messages={"inbox": [mail]})

    await world.sync(mailbox)

    party = sender_party(world, world.email_id(mail))
    assert party["addressused"] == address
    contact = world.dataverse.record("contact", str(unknown_sender_contact_id(address)))
    if create_contact:
        assert contact is not None
        assert contact["emailaddress1"] == address
        assert party["_partyid_value"] == str(unknown_sender_contact_id(address))
    else:
        assert contact is None
        assert party.get("_partyid_value") is None
