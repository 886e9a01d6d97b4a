"""Routing a CRM delete to the mailboxes that link the record, at many mailboxes (real Azurite).

    python -m bench.routing [--mailboxes 1000] [--records 50] [--holders 3]

Registers ``--mailboxes`` mailboxes with 20 links each; each of ``--records`` CRM records is linked
in ``--holders`` of them. Then it routes one change-tracking message deleting those records
(``Router.route``, as the CRM -> Outlook worker does; a delete reads nothing from Dataverse) twice:
with the mailboxes' links as a version before the routing index left them (one point read per
mailbox and record), then after the sweep's one-time ``reindex`` (one index query per record).
Each pass must route every record to exactly its holders. Target: routing time independent of the
number of mailboxes (issue 14: 10,000 mailboxes).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from typing import Any

from bench._common import print_results
from shared.domain.model import ItemKind
from shared.store.azure.service import open_store
from shared.store.crm_jobs import CrmWork, CrmWorkQueue, CrmWorkSource
from shared.store.jobs import open_job_queue
from shared.store.records import Link
from shared.sync.concurrency import bounded_gather
from shared.sync.routing import Router
from simulators.azurite import Azurite

LINKS_PER_MAILBOX = 20


class _NoDataverse:
    """Routing deletes reads nothing from Dataverse; any read would be a surprise worth failing on."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"routing a delete read Dataverse ({name})")


def _link(mailbox_id: str, record: uuid.UUID) -> Link:
    return Link(
        mailbox_id=mailbox_id,
        kind=ItemKind.CONTACT,
        outlook_id=f"AAMk-{uuid.uuid4().hex}",
        crm_table="contact",
        crm_id=str(record),
    )


async def _run(mailboxes: int, records: int, holders: int) -> None:
    with Azurite() as azurite:
        store = await open_store(connection_string=azurite.connection_string, prefix="routebench")
        jobs = await open_job_queue(queue_name="routebench", connection_string=azurite.connection_string)
        queue = CrmWorkQueue(jobs)
        noise = random.Random(1)
        ids = [str(uuid.UUID(int=noise.getrandbits(128), version=4)) for _ in range(mailboxes)]
        changed = [uuid.UUID(int=noise.getrandbits(128), version=4) for _ in range(records)]
        expected = {record: set(noise.sample(ids, holders)) for record in changed}
        started = time.perf_counter()
        for mailbox_id in ids:
            await store.registry.register(
                mailbox_id=mailbox_id,
                upn=f"{mailbox_id[:8]}@contoso.example",
                crm_user_id=str(uuid.uuid4()),
                crm_caller_object_id=mailbox_id,
            )
            mine = [record for record, holding in expected.items() if mailbox_id in holding]
            others = [uuid.uuid4() for _ in range(LINKS_PER_MAILBOX - len(mine))]
            # Written without the index rows' mark: as links from before the routing index.
            await store.links.create_many([_link(mailbox_id, record) for record in [*mine, *others]])
        setup = time.perf_counter() - started
        router = Router(store=store, crm=_NoDataverse(), queue=queue)  # type: ignore[arg-type]
        work = CrmWork(table="contact", deleted=tuple(changed), source=CrmWorkSource.CHANGE_TRACKING)

        async def routed() -> tuple[float, int]:
            begin = time.perf_counter()
            runs = await router.route(work)
            took = time.perf_counter() - begin
            got: dict[uuid.UUID, set[str]] = {}
            while batch := [m async for m in jobs.client.receive_messages(max_messages=32)]:
                for message in batch:
                    routed_work = CrmWork.parse(message.content)
                    for record in routed_work.deleted:
                        got.setdefault(record, set()).add(str(routed_work.mailbox_id))
                    await jobs.client.delete_message(message)
            assert got == expected, "a record was routed to the wrong mailboxes"
            return took, runs

        before, runs = await routed()
        begin = time.perf_counter()
        await bounded_gather(store.links.reindex(mailbox_id) for mailbox_id in ids)  # as the sweep does
        reindex = time.perf_counter() - begin
        after, _ = await routed()
        await jobs.client.delete_queue()
        await jobs.close()
        await store.close()
    print_results(
        f"routing a delete of {records} records linked in {holders} of {mailboxes} mailboxes ({runs} runs)",
        [
            ("set-up (register, 20 links each)", f"{setup:.1f} s", ""),
            ("before the index (point reads)", f"{before:.2f} s", f"{records * mailboxes} point reads"),
            ("one-time reindex of every mailbox", f"{reindex:.1f} s", "the sweep, once, 16 at a time"),
            ("with the index", f"{after:.2f} s", f"{records} index queries"),
            ("speed-up", f"{before / after:.0f}x", "target: independent of the mailboxes"),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mailboxes", type=int, default=1000)
    parser.add_argument("--records", type=int, default=50)
    parser.add_argument("--holders", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(_run(args.mailboxes, args.records, args.holders))


if __name__ == "__main__":
    main()
