"""Link-map contract: both rows written together, found from either side, conditional writes."""

from __future__ import annotations

import dataclasses
import random

import pytest

from shared.domain.bases import FieldBase
from shared.domain.model import ItemKind
from shared.store import Store
from shared.store.errors import LinkAlreadyExists, LinkConflict
from shared.store.records import Link
from tests.store.helpers import ManualClock, race

MAILBOX = "5f0b1c1e-0000-4000-8000-00000000000a"
OUTLOOK_ID = "AAMkAGI2TG93AAA=/+x_y-z.AAA=="  # Graph ids carry '/', '+', '='
OTHER_OUTLOOK_ID = "AAMkAGI2TG93AAB=/+q"
CRM_ID = "0b7e5a8e-0000-4000-8000-000000000001"
OTHER_CRM_ID = "0b7e5a8e-0000-4000-8000-000000000002"


def _link(outlook_id: str = OUTLOOK_ID, crm_id: str = CRM_ID, kind: ItemKind = ItemKind.CONTACT) -> Link:
    return Link(
        mailbox_id=MAILBOX,
        kind=kind,
        outlook_id=outlook_id,
        crm_table="contact",
        crm_id=crm_id,
        outlook_change_key="CQAAABYAAAA",
        crm_etag='W/"1001"',
        outlook_hash="a" * 64,
        crm_hash="b" * 64,
        owned_by_user=True,
        field_bases={"firstname": FieldBase("a" * 32, "b" * 32), "birthdate": FieldBase("c" * 32, "d" * 32)},
    )


async def _outlook_ids(store: Store, kind: ItemKind | None = None) -> list[str]:
    return sorted([link.outlook_id async for link in store.links.list_links(MAILBOX, kind)])


class TestLinksContract:
    async def test_create_then_find_from_either_side(self, store: Store, clock: ManualClock) -> None:
        created = await store.links.create(_link())

        assert created.etag
        assert created.updated_at == clock.now
        assert await store.links.get_by_outlook(MAILBOX, ItemKind.CONTACT, OUTLOOK_ID) == created
        assert await store.links.get_by_crm(MAILBOX, "contact", CRM_ID) == created
        assert dataclasses.replace(created, etag=None, updated_at=None) == _link()

    async def test_a_tombstone_round_trips_and_an_update_clears_it(self, store: Store) -> None:
        created = await store.links.create(dataclasses.replace(_link(), crm_deleted=True))
        by_crm = await store.links.get_by_crm(MAILBOX, "contact", CRM_ID)
        assert by_crm is not None
        assert by_crm.crm_deleted
        await store.links.update(dataclasses.replace(created, crm_deleted=False))
        found = await store.links.get_by_outlook(MAILBOX, ItemKind.CONTACT, OUTLOOK_ID)
        assert found is not None
        assert not found.crm_deleted

    async def test_missing_links_are_none(self, store: Store) -> None:
        await store.links.create(_link())
        assert await store.links.get_by_outlook(MAILBOX, ItemKind.TASK, OUTLOOK_ID) is None
        assert await store.links.get_by_outlook("another-mailbox", ItemKind.CONTACT, OUTLOOK_ID) is None
        assert await store.links.get_by_crm(MAILBOX, "contact", OTHER_CRM_ID) is None

    async def test_create_refuses_either_side_already_linked(self, store: Store) -> None:
        await store.links.create(_link())
        with pytest.raises(LinkAlreadyExists) as outlook_side:
            await store.links.create(_link(crm_id=OTHER_CRM_ID))
        with pytest.raises(LinkAlreadyExists) as crm_side:
            await store.links.create(_link(outlook_id=OTHER_OUTLOOK_ID))

        assert (outlook_side.value.side, crm_side.value.side) == ("outlook", "crm")
        assert await store.links.get_by_crm(MAILBOX, "contact", OTHER_CRM_ID) is None  # nothing half-written
        assert await store.links.get_by_outlook(MAILBOX, ItemKind.CONTACT, OTHER_OUTLOOK_ID) is None

    async def test_racing_creates_of_one_link_one_wins(self, store: Store) -> None:
        won, lost = await race(
            store.links.create(_link(crm_id=CRM_ID)), store.links.create(_link(crm_id=OTHER_CRM_ID))
        )
        assert len(won) == 1
        assert [type(error) for error in lost] == [LinkAlreadyExists]
        assert await store.links.count(MAILBOX) == 1
        loser = OTHER_CRM_ID if won[0].crm_id == CRM_ID else CRM_ID
        assert await store.links.get_by_crm(MAILBOX, "contact", loser) is None

    async def test_update_is_etag_conditional(self, store: Store, clock: ManualClock) -> None:
        read = await store.links.create(_link())
        clock.advance(5)
        changed = dataclasses.replace(
            read, outlook_change_key="CQAAABYAAAB", field_bases={"firstname": FieldBase("e" * 32, "e" * 32)}
        )

        updated = await store.links.update(changed)
        assert updated.etag != read.etag
        assert updated.updated_at == clock.now
        assert await store.links.get_by_crm(MAILBOX, "contact", CRM_ID) == updated
        with pytest.raises(LinkConflict):
            await store.links.update(dataclasses.replace(read, crm_hash="c" * 64))
        assert (await store.links.get_by_outlook(MAILBOX, ItemKind.CONTACT, OUTLOOK_ID)) == updated

    async def test_racing_updates_of_one_link_one_wins(self, store: Store) -> None:
        read = await store.links.create(_link())
        won, lost = await race(
            store.links.update(dataclasses.replace(read, crm_etag='W/"2"')),
            store.links.update(dataclasses.replace(read, crm_etag='W/"3"')),
        )
        assert len(won) == 1
        assert [type(error) for error in lost] == [LinkConflict]
        assert await store.links.get_by_crm(MAILBOX, "contact", CRM_ID) == won[0]

    async def test_delete_removes_both_rows_and_is_conditional(self, store: Store) -> None:
        read = await store.links.create(_link())
        updated = await store.links.update(dataclasses.replace(read, crm_etag='W/"2"'))
        with pytest.raises(LinkConflict):
            await store.links.delete(read)

        await store.links.delete(updated)
        await store.links.delete(updated)  # already gone: fine
        assert await store.links.get_by_outlook(MAILBOX, ItemKind.CONTACT, OUTLOOK_ID) is None
        assert await store.links.get_by_crm(MAILBOX, "contact", CRM_ID) is None
        assert await store.links.create(_link(outlook_id=OTHER_OUTLOOK_ID))  # the CRM side is free again

    async def test_stale_delete_leaves_a_relinked_crm_record_alone(self, store: Store) -> None:
        old = await store.links.create(_link())
        await store.links.delete(old)
        relinked = await store.links.create(_link(outlook_id=OTHER_OUTLOOK_ID))

        await store.links.delete(old)
        assert await store.links.get_by_crm(MAILBOX, "contact", CRM_ID) == relinked

    async def test_move_outlook_id_rekeys_in_one_step(self, store: Store) -> None:
        read = await store.links.create(_link())
        moved = await store.links.move_outlook_id(read, OTHER_OUTLOOK_ID)

        assert moved.outlook_id == OTHER_OUTLOOK_ID
        assert await store.links.get_by_outlook(MAILBOX, ItemKind.CONTACT, OUTLOOK_ID) is None
        assert await store.links.get_by_outlook(MAILBOX, ItemKind.CONTACT, OTHER_OUTLOOK_ID) == moved
        assert await store.links.get_by_crm(MAILBOX, "contact", CRM_ID) == moved
        with pytest.raises(LinkConflict):
            await store.links.move_outlook_id(read, "third-id")
        assert await store.links.count(MAILBOX) == 1

    async def test_move_onto_a_linked_outlook_id_is_refused(self, store: Store) -> None:
        read = await store.links.create(_link())
        await store.links.create(_link(outlook_id=OTHER_OUTLOOK_ID, crm_id=OTHER_CRM_ID))
        with pytest.raises(LinkAlreadyExists):
            await store.links.move_outlook_id(read, OTHER_OUTLOOK_ID)
        assert await store.links.get_by_crm(MAILBOX, "contact", CRM_ID) == read

    async def test_list_and_count_by_kind(self, store: Store) -> None:
        await store.links.create(_link())
        await store.links.create(_link("task-1", OTHER_CRM_ID, ItemKind.TASK))
        await store.links.create(dataclasses.replace(_link("other-mailbox-item"), mailbox_id="someone-else"))

        assert await _outlook_ids(store) == sorted([OUTLOOK_ID, "task-1"])
        assert await _outlook_ids(store, ItemKind.TASK) == ["task-1"]
        assert await store.links.count(MAILBOX) == 2
        assert await store.links.count(MAILBOX, ItemKind.EMAIL) == 0

    async def test_many_merge_bases_survive_compressed_across_properties(self, store: Store) -> None:
        """A record with thousands of synced units still fits one entity (compressed, chunked)."""
        noise = random.Random(7)
        bases = {
            f"unit{n}": FieldBase(noise.randbytes(16).hex(), noise.randbytes(16).hex()) for n in range(2500)
        }

        created = await store.links.create(
            dataclasses.replace(_link(), field_bases=bases, owned_by_user=False)
        )
        read = await store.links.get_by_crm(MAILBOX, "contact", CRM_ID)

        assert read == created
        assert read is not None
        assert read.field_bases == bases
        assert read.owned_by_user is False


class TestRoutingIndex:
    """Which mailboxes link a CRM record, in one read: routing a CRM change to them."""

    async def test_the_index_names_every_mailbox_linking_a_record(self, store: Store) -> None:
        others = [f"5f0b1c1e-0000-4000-8000-00000000010{n}" for n in range(3)]
        first = await store.links.create(_link())
        await store.links.create(dataclasses.replace(_link(), mailbox_id=others[0]))
        await store.links.create_many(
            [
                dataclasses.replace(_link(), mailbox_id=others[1]),
                dataclasses.replace(
                    _link(outlook_id=OTHER_OUTLOOK_ID, crm_id=OTHER_CRM_ID), mailbox_id=others[1]
                ),
            ]
        )
        assert await store.links.mailboxes_linking("contact", CRM_ID) == {MAILBOX, others[0], others[1]}
        assert await store.links.mailboxes_linking("contact", CRM_ID.upper()) == {MAILBOX, *others[:2]}
        assert await store.links.mailboxes_linking("contact", OTHER_CRM_ID) == {others[1]}
        assert await store.links.mailboxes_linking("task", CRM_ID) == set()

        await store.links.delete(first)
        assert await store.links.mailboxes_linking("contact", CRM_ID) == {others[0], others[1]}

    async def test_a_stale_delete_keeps_the_record_indexed_for_its_new_link(self, store: Store) -> None:
        old = await store.links.create(_link())
        await store.links.delete(old)
        await store.links.create(_link(outlook_id=OTHER_OUTLOOK_ID))
        await store.links.delete(old)
        assert await store.links.mailboxes_linking("contact", CRM_ID) == {MAILBOX}

    async def test_reindex_counts_the_links_and_marks_the_mailbox(self, store: Store) -> None:
        await store.links.create_many([_link(), _link(outlook_id=OTHER_OUTLOOK_ID, crm_id=OTHER_CRM_ID)])
        assert await store.links.reindex(MAILBOX) == 2
        assert await store.links.indexed(MAILBOX)
        assert await store.links.mailboxes_linking("contact", OTHER_CRM_ID) == {MAILBOX}
