"""Manual tracking: the tracked category, and tracked folders setting the regarding."""

from __future__ import annotations

import uuid

import pytest

from shared.domain.mailbox_settings import CrmRecordRef, MailboxSettings
from shared.domain.model import ItemKind
from shared.outlook.mailbox import OutlookMailbox
from shared.outlook.writers import OutlookWriter
from shared.store.fingerprint import fingerprint
from shared.store.records import AuditAction
from shared.sync.tracking import TrackingService, folders_to_watch
from shared.sync.tracking.index import TrackedMessage, TrackedVia
from tests.tracking.conftest import TRACKED, World, message


async def decisions(world: World, mailbox_id: str, message_id: str) -> list[tuple[str, str | None]]:
    """The audited tracking decisions about one message, oldest first: (action, rule)."""
    wanted = {AuditAction.TRACKED, AuditAction.UNTRACKED}
    records = await world.store.audit.list_recent(mailbox_id, limit=1000)
    return [
        (r.action.value, r.reason_code)
        for r in reversed(records)
        if r.action in wanted and r.outlook_id_hash == fingerprint(message_id)
    ]


async def test_the_category_tracks_and_removing_it_untracks(world: World) -> None:
    mailbox = await world.mailbox()
    tracked, plain = (
        message("a@fabrikam.example", "Offer", categories=[TRACKED]),
        message("b@fabrikam.example"),
    )
    ids = world.graph_sim.seed(mailbox.mailbox_id, messages={"inbox": [tracked, plain]})["messages"]["inbox"]

    report = await world.sync(mailbox)

    record_id = world.email_id(tracked)
    row = world.dataverse.record("email", str(record_id))
    assert row is not None
    assert row["description"] == "body of Offer"
    assert not world.tracked(plain["internetMessageId"])
    assert report.items_synced == 1
    assert (await world.store.links.get_by_outlook(mailbox.mailbox_id, ItemKind.EMAIL, ids[0])) is not None
    # The decision is audited with its rule; mail no rule tracked costs no audit row.
    assert await decisions(world, mailbox.mailbox_id, ids[0]) == [("tracked", "category")]
    assert await decisions(world, mailbox.mailbox_id, ids[1]) == []
    # no stamp written on the message: its CRM id is deterministic
    assert (
        await OutlookWriter(world.graph_client).read_crm_id(mailbox.mailbox_id, ItemKind.EMAIL, ids[0])
        is None
    )

    world.set_categories(mailbox, ids[0], [])
    await world.sync(mailbox)

    assert world.dataverse.record("email", str(record_id)) is None  # the mailbox's user owned it
    assert await world.store.links.get_by_outlook(mailbox.mailbox_id, ItemKind.EMAIL, ids[0]) is None
    assert await decisions(world, mailbox.mailbox_id, ids[0]) == [
        ("tracked", "category"),
        ("untracked", "category_removed"),
    ]


def regarding_of(world: World, record_id: uuid.UUID) -> str | None:
    row = world.dataverse.record("email", str(record_id))
    assert row is not None
    value = row.get("_regardingobjectid_value")
    return str(value) if value else None


async def test_a_tracked_folder_sets_the_regarding_subfolders_inherit_and_leaving_clears_it(
    world: World,
) -> None:
    account_id = uuid.UUID(world.dataverse.seed("account", [{"name": "Contoso Ltd"}])[0])
    probe = await world.mailbox()
    customer = world.create_folder(probe, "Contoso", parent="inbox")
    deals = world.create_folder(probe, "Deals", parent=customer)
    regarding = {customer: CrmRecordRef(table="account", id=account_id)}
    mailbox = await world.store.registry.update_settings(probe, MailboxSettings(tracked_folders=regarding))
    mail = message("buyer@fabrikam.example", "Deal")
    [message_id] = world.graph_sim.seed(mailbox.mailbox_id, messages={deals: [mail]})["messages"][deals]

    await world.sync(mailbox, deals)

    record_id = world.email_id(mail)
    assert regarding_of(world, record_id) == str(account_id)
    assert await decisions(world, mailbox.mailbox_id, message_id) == [("tracked", "tracked_folder")]

    world.move(mailbox, message_id, "inbox")
    await world.sync(mailbox, deals)  # reported removed here: a move, left to the inbox's run
    assert await world.linked(mailbox, message_id)
    await world.sync(mailbox)

    assert world.dataverse.record("email", str(record_id)) is not None  # still tracked
    assert regarding_of(world, record_id) is None


async def test_tracked_folders_and_their_subfolders_are_the_folders_to_watch(world: World) -> None:
    mailbox = await world.mailbox()
    customer = world.create_folder(mailbox, "Customer", parent="inbox")
    deals = world.create_folder(mailbox, "Deals", parent=customer)
    won = world.create_folder(mailbox, "Won", parent=deals)
    world.create_folder(mailbox, "Personal", parent="inbox")
    account = CrmRecordRef(table="account", id=uuid.uuid4())
    settings = MailboxSettings(tracked_folders={customer: account}, track_sent_items=True)

    watched = await folders_to_watch(world.graph_client, mailbox.mailbox_id, settings)

    assert watched == ["sentitems", customer, deals, won]


async def test_a_folder_mapped_to_a_table_without_a_regarding_binding_tracks_without_regarding(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    probe = await world.mailbox()
    folder = world.create_folder(probe, "Big deal", parent="inbox")
    opportunity = CrmRecordRef(table="opportunity", id=uuid.uuid4())
    mailbox = await world.store.registry.update_settings(
        probe, MailboxSettings(tracked_folders={folder: opportunity})
    )
    mail = message("buyer@fabrikam.example", "Terms")
    world.graph_sim.seed(mailbox.mailbox_id, messages={folder: [mail]})

    await world.sync(mailbox, folder)

    assert regarding_of(world, world.email_id(mail)) is None
    assert "no email regarding binding" in caplog.text


async def test_the_tracking_index_lists_a_mailboxs_tracked_messages_in_one_scan(world: World) -> None:
    mailbox = await world.mailbox()
    sent = [message(f"s{n}@fabrikam.example", f"Quote {n}", categories=[TRACKED]) for n in range(3)]
    ids = world.graph_sim.seed(mailbox.mailbox_id, messages={"inbox": sent})["messages"]["inbox"]
    await world.sync(mailbox)

    listed = await world.index.list_messages(mailbox.mailbox_id)

    assert {item_id: row.crm_id for item_id, row in listed.items()} == {
        item_id: world.email_id(m) for item_id, m in zip(ids, sent, strict=True)
    }
    assert listed == {item_id: await world.index.get_message(mailbox.mailbox_id, item_id) for item_id in ids}


async def test_a_tracked_folders_delta_brings_the_bodies_and_no_message_is_read_on_its_own(
    world: World,
) -> None:
    """Every message of a tracked folder is tracked, so its delta selects the body: one request per
    page instead of a body read per message. The inbox's never does (test_automatic: privacy)."""
    account_id = uuid.UUID(world.dataverse.seed("account", [{"name": "Contoso Ltd"}])[0])
    probe = await world.mailbox()
    folder = world.create_folder(probe, "Contoso", parent="inbox")
    mailbox = await world.store.registry.update_settings(
        probe, MailboxSettings(tracked_folders={folder: CrmRecordRef(table="account", id=account_id)})
    )
    mails = [message("buyer@fabrikam.example", f"Deal {n}") for n in range(3)]
    ids = world.graph_sim.seed(mailbox.mailbox_id, messages={folder: mails})["messages"][folder]
    world.graph_sim.clear_requests(mailbox.mailbox_id)

    await world.sync(mailbox, folder)

    for mail in mails:
        row = world.dataverse.record("email", str(world.email_id(mail)))
        assert row is not None
        assert row["description"] == f"body of {mail['subject']}"
    requests = world.graph_sim.requests(mailbox.mailbox_id)
    [delta] = [request for request in requests if request["path"].endswith("/messages/delta")]
    assert "body" in delta["select"]
    assert not [request for request in requests if any(message_id in request["path"] for message_id in ids)]
    assert not [request for request in requests if request["path"].endswith("$batch")]


async def test_a_failed_run_s_unflushed_tracking_rows_are_not_written_by_the_next_run(world: World) -> None:
    """Tracking rows are buffered per page in the long-lived index; a run that failed before its
    flush must not have them written by the next run of the mailbox in this worker."""
    mailbox = await world.mailbox()
    stale = TrackedMessage(item_id="left-by-a-failed-run", crm_id=uuid.uuid4(), via=TrackedVia.CATEGORY)
    await world.index.put_message(mailbox.mailbox_id, stale)  # its page failed: no flush

    service = TrackingService(
        crm=world.crm, store=world.store, index=world.index, outlook=OutlookMailbox(world.graph)
    )
    await service.start(mailbox).flush_audit()  # the next run's first page

    assert await world.index.get_message(mailbox.mailbox_id, stale.item_id) is None
