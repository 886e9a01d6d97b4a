"""Routing a CRM change reads the routing index once, whatever the number of mailboxes; links written
before the index existed are still found (point reads) until the sweep indexes their mailbox.
The store on Azurite, the CRM reads on the Dataverse simulator, the routed work on an Azurite queue."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.crm.dataverse import DataverseClient
from shared.domain.model import ItemKind
from shared.store import Store
from shared.store.crm_jobs import CrmWork, CrmWorkQueue, CrmWorkSource
from shared.store.jobs import JobQueue, open_job_queue
from shared.store.records import Link
from shared.sync.dispatch import sweep
from shared.sync.routing import Router
from tests.crm.conftest import queued


@pytest.fixture
async def sync_jobs(storage_connection_string: str, table_prefix: str) -> AsyncIterator[JobQueue]:
    jobs = await open_job_queue(
        queue_name=f"sweep-{table_prefix}".lower(), connection_string=storage_connection_string
    )
    yield jobs
    await jobs.client.delete_queue()
    await jobs.close()


@pytest.fixture
async def links_table(storage_connection_string: str, table_prefix: str) -> AsyncIterator[TableClient]:
    """The link map's table itself, to leave a link as a version before the index wrote it."""
    async with TableServiceClient.from_connection_string(storage_connection_string) as service:
        yield service.get_table_client(f"{table_prefix}links")


async def _mailbox(store: Store) -> str:
    mailbox_id = str(uuid.uuid4())
    await store.registry.register(
        mailbox_id=mailbox_id,
        upn=f"{mailbox_id[:8]}@contoso.example",
        crm_user_id=str(uuid.uuid4()),
        crm_caller_object_id=mailbox_id,
    )
    return mailbox_id


def _link(mailbox_id: str, record_id: uuid.UUID) -> Link:
    return Link(
        mailbox_id=mailbox_id,
        kind=ItemKind.CONTACT,
        outlook_id=f"AAMk-{uuid.uuid4().hex}",
        crm_table="contact",
        crm_id=str(record_id),
    )


async def test_a_crm_delete_reaches_every_mailbox_linking_it_indexed_or_from_before_the_index(
    crm: DataverseClient,
    store: Store,
    queue: CrmWorkQueue,
    sync_jobs: JobQueue,
    links_table: TableClient,
) -> None:
    record = uuid.uuid4()
    indexed, older, unrelated = await _mailbox(store), await _mailbox(store), await _mailbox(store)
    await store.links.reindex(indexed)  # as onboarding does
    await store.links.reindex(unrelated)
    await store.links.create(_link(indexed, record))
    await store.links.create(_link(older, record))
    await store.links.create(_link(unrelated, uuid.uuid4()))
    # The older mailbox's link as a version before the index wrote it: no index row, no mark.
    await links_table.delete_entity(f"r|contact|{str(record)[0]}", f"{record}|{older}")
    assert await store.links.mailboxes_linking("contact", str(record)) == {indexed}
    assert not await store.links.indexed(older)

    router = Router(store=store, crm=crm, queue=queue)
    assert (
        await router.route(CrmWork(table="contact", deleted=(record,), source=CrmWorkSource.CHANGE_TRACKING))
        == 2
    )
    routed = await queued(queue)
    assert sorted((w.mailbox_id, w.deleted) for w in routed) == sorted(
        [(indexed, (record,)), (older, (record,))]
    )

    # The sweep indexes the older mailbox's links once; from then on the index alone routes.
    await sweep(store, sync_jobs)
    assert await store.links.indexed(older)
    assert await store.links.mailboxes_linking("contact", str(record)) == {indexed, older}
