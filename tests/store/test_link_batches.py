"""Link batches: ``create_many`` / ``update_many`` write a delta page's links in entity-group
transactions (at most 100 entities and 4 MiB each: learn.microsoft.com/rest/api/storageservices
/performing-entity-group-transactions), with the same outcome as ``create`` / ``update`` per link.

The contract class runs on Azurite (which enforces both transaction limits) and on the fake; the
round-trip counts are checked on Azurite, over its real HTTP, with an azure-core request hook.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.pipeline import PipelineRequest
from azure.data.tables.aio import TableClient

from shared.domain.bases import FieldBase
from shared.domain.model import ItemKind
from shared.store import Store, open_store
from shared.store.azure import AzureLinkStore
from shared.store.errors import InvalidKey, LinkAlreadyExists, LinkConflict
from shared.store.records import Link
from tests.store.helpers import ManualClock

MAILBOX = "7d1e4c1e-0000-4000-8000-00000000000b"


def _links(count: int, *, start: int = 0, mailbox_id: str = MAILBOX) -> list[Link]:
    return [
        Link(
            mailbox_id=mailbox_id,
            kind=ItemKind.EMAIL,
            outlook_id=f"AAMkAD/{n}+item==",  # Graph ids carry '/', '+', '='
            crm_table="email",
            crm_id=str(uuid.UUID(int=n + 1)),
            outlook_change_key=f"CQAA{n}",
            crm_etag=f'W/"{1000 + n}"',
            outlook_hash=f"{n:064x}",
            owned_by_user=n % 2 == 0,
            field_bases={"subject": FieldBase(f"{n:032x}", f"{n + 1:032x}")},
        )
        for n in range(start, start + count)
    ]


def _as_given(link: Link) -> Link:
    return dataclasses.replace(link, etag=None, updated_at=None)


async def _stored(store: Store) -> list[Link]:
    """The mailbox's links in input order (``_links`` numbers the CRM ids in order)."""
    return sorted([link async for link in store.links.list_links(MAILBOX)], key=lambda link: link.crm_id)


class TestLinkBatchesContract:
    async def test_create_many_stores_each_link_as_create_would(
        self, store: Store, clock: ManualClock
    ) -> None:
        given = _links(120)  # three transactions' worth
        created = await store.links.create_many(given)

        assert [_as_given(link) for link in created] == given
        assert all(link.etag and link.updated_at == clock.now for link in created)
        # Each link carries the ETag its own row got (rows of one transaction may share a timestamp,
        # so ETags need not be distinct): the stored rows, read back one by one, are the links returned.
        assert await _stored(store) == created
        for link in (created[0], created[50], created[119]):
            assert await store.links.get_by_crm(MAILBOX, "email", link.crm_id) == link
        assert await store.links.update(dataclasses.replace(created[60], crm_hash="c" * 64))

    async def test_existing_rows_fail_their_transaction_then_every_other_link_is_created(
        self, store: Store
    ) -> None:
        given = _links(60)
        outlook_taken = await store.links.create(dataclasses.replace(given[55], crm_id="another-record"))
        crm_taken = await store.links.create(dataclasses.replace(given[3], outlook_id="another-item"))

        with pytest.raises(LinkAlreadyExists) as refused:
            await store.links.create_many(given)

        assert refused.value.side == "crm"  # given[3]: the first refusal, in input order
        stored = {link.outlook_id: link for link in await _stored(store)}
        assert len(stored) == 60
        assert stored[given[55].outlook_id] == outlook_taken
        assert stored["another-item"] == crm_taken
        assert given[3].outlook_id not in stored
        assert await store.links.get_by_crm(MAILBOX, "email", given[4].crm_id) == stored[given[4].outlook_id]
        assert await store.links.get_by_crm(MAILBOX, "email", given[59].crm_id) is not None

    async def test_a_link_listed_twice_is_refused_the_second_time(self, store: Store) -> None:
        first, second = _links(2)
        with pytest.raises(LinkAlreadyExists) as refused:
            await store.links.create_many([first, second, dataclasses.replace(first, crm_id="other")])
        assert refused.value.side == "outlook"
        assert [_as_given(link) for link in await _stored(store)] == [first, second]

    async def test_empty_and_mixed_batches(self, store: Store) -> None:
        assert await store.links.create_many([]) == []
        await store.links.update_many([])
        mixed = [*_links(1), *_links(1, start=1, mailbox_id="someone-else")]
        with pytest.raises(ValueError, match="one mailbox"):
            await store.links.create_many(mixed)
        unkeyable = dataclasses.replace(_links(1, start=2)[0], crm_id="")
        with pytest.raises(InvalidKey):  # refused before the first transaction, as by create
            await store.links.create_many([*_links(2), unkeyable])
        assert await store.links.count(MAILBOX) == 0

    async def test_update_many_rewrites_both_rows(self, store: Store, clock: ManualClock) -> None:
        created = await store.links.create_many(_links(70))
        clock.advance(5)
        changed = [
            dataclasses.replace(link, crm_etag='W/"2"', field_bases={"n": FieldBase("2" * 32, "2" * 32)})
            for link in created
        ]

        await store.links.update_many(changed)

        stored = await _stored(store)
        assert [_as_given(link) for link in stored] == [_as_given(link) for link in changed]
        assert all(link.updated_at == clock.now for link in stored)
        assert not {link.etag for link in stored} & {link.etag for link in created}
        assert await store.links.get_by_crm(MAILBOX, "email", created[69].crm_id) in stored

    async def test_a_stale_link_fails_its_transaction_and_stops_the_rest(self, store: Store) -> None:
        created = await store.links.create_many(_links(110))
        await store.links.update(dataclasses.replace(created[55], crm_hash="d" * 64))

        with pytest.raises(LinkConflict):
            await store.links.update_many([dataclasses.replace(link, crm_hash="e" * 64) for link in created])

        hashes = [link.crm_hash for link in await _stored(store)]
        assert hashes[:50] == ["e" * 64] * 50  # the transactions before it: written
        assert hashes[50:] == [None] * 5 + ["d" * 64] + [None] * 54  # its own and later ones: not

    async def test_update_many_of_a_deleted_link_conflicts(self, store: Store) -> None:
        first, second = await store.links.create_many(_links(2))
        await store.links.delete(second)
        with pytest.raises(LinkConflict):
            await store.links.update_many([first, second])
        assert await _stored(store) == [first]

    async def test_update_many_needs_links_read_once_each(self, store: Store) -> None:
        [created] = await store.links.create_many(_links(1))
        with pytest.raises(ValueError, match="etag"):
            await store.links.update_many([dataclasses.replace(created, etag=None)])
        with pytest.raises(ValueError, match="twice"):
            await store.links.update_many([created, created])
        assert await _stored(store) == [created]


class RequestLog:
    """Every HTTP request the Tables client sends: method, path and body size."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, int]] = []

    def __call__(self, request: PipelineRequest[Any]) -> None:
        http = request.http_request
        body = http.body if isinstance(http.body, bytes | str) else b""
        self.requests.append((http.method, http.url.split("?")[0].rsplit("/", 1)[-1], len(body)))

    def batches(self) -> list[int]:
        return [size for method, path, size in self.requests if method == "POST" and path == "$batch"]

    def queries(self) -> int:
        return sum(1 for method, _, _ in self.requests if method == "GET")


@pytest.fixture
async def logged_links(
    storage_connection_string: str, table_prefix: str, clock: ManualClock
) -> AsyncIterator[tuple[AzureLinkStore, RequestLog]]:
    """An Azurite link store whose client logs its requests."""
    store = await open_store(connection_string=storage_connection_string, prefix=table_prefix, clock=clock)
    log = RequestLog()
    client = TableClient.from_connection_string(
        storage_connection_string, f"{table_prefix}links", raw_request_hook=log
    )
    yield AzureLinkStore(client, clock), log
    await client.close()
    await store.close()


async def test_a_page_of_links_takes_few_round_trips(logged_links: tuple[AzureLinkStore, RequestLog]) -> None:
    links, log = logged_links
    created = await links.create_many(_links(1001))
    # 50 links (100 entities) per transaction, and their routing index: these record ids all fall
    # in one index partition, 100 rows per transaction.
    assert len(log.batches()) == 21 + 11
    await links.update_many(created[:100])
    assert len(log.batches()) == 32 + 2

    assert len([link async for link in links.list_links(MAILBOX)]) == 1001
    assert await links.count(MAILBOX) == 1001
    assert log.queries() == 4  # 1000 rows per page


async def test_large_links_are_split_under_the_payload_limit(
    logged_links: tuple[AzureLinkStore, RequestLog],
) -> None:
    """About 160 KB of merge bases per link: 30 of them in one transaction would be over 4 MiB, which
    Azurite refuses (413) as Table Storage does."""
    links, log = logged_links
    noise = random.Random(3)
    given = [
        dataclasses.replace(
            link,
            field_bases={
                f"u{n}": FieldBase(noise.randbytes(16).hex(), noise.randbytes(16).hex()) for n in range(3000)
            },
        )
        for link in _links(30)
    ]

    created = await links.create_many(given)

    assert [_as_given(link) for link in created] == given
    batches = log.batches()
    assert len(batches) == 2 + 1  # the links in two, their routing index in one
    assert sum(batches) > 4 * 1024 * 1024
    assert all(size <= 4 * 1024 * 1024 for size in batches)
