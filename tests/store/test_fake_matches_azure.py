"""Differential test: random sequences of link writes give the same outcomes on Azurite and on the fake.

The contract classes pin down chosen cases; this explores interleavings nobody wrote down
(stale writes after moves, re-linking freed records...). Each example works in its own
mailbox partition, so examples share one pair of stores.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared.domain.model import ItemKind
from shared.store import Store, open_memory_store, open_store
from shared.store.errors import LinkAlreadyExists, LinkConflict
from shared.store.records import Link

Operation = tuple[str, int, int]
operations = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "create",
                "create_many",
                "update",
                "update_stale",
                "update_many",
                "delete",
                "delete_stale",
                "move",
            ]
        ),
        st.integers(0, 2),
        st.integers(0, 2),
    ),
    max_size=10,
)


@pytest.fixture
async def both_stores(
    storage_connection_string: str, table_prefix: str
) -> AsyncIterator[tuple[Store, Store]]:
    azure = await open_store(connection_string=storage_connection_string, prefix=table_prefix)
    yield azure, open_memory_store()
    await azure.close()


def _outlook_id(index: int) -> str:
    return f"AAMk/{index}+=="


def _new_link(mailbox_id: str, item: int, other: int) -> Link:
    return Link(
        mailbox_id=mailbox_id,
        kind=ItemKind.CONTACT,
        outlook_id=_outlook_id(item),
        crm_table="contact",
        crm_id=f"crm-{other}",
    )


async def _replay(store: Store, mailbox_id: str, steps: list[Operation]) -> list[object]:
    """Apply ``steps``; return every outcome and the final map, in backend-neutral terms."""
    first_read: dict[int, Link] = {}
    outcomes: list[object] = []
    for operation, item, other in steps:
        try:
            if operation == "create":
                first_read.setdefault(item, await store.links.create(_new_link(mailbox_id, item, other)))
                outcomes.append("created")
                continue
            if operation == "create_many":  # this pair and the next (wrapping), maybe with a conflict
                pair = [
                    _new_link(mailbox_id, item, other),
                    _new_link(mailbox_id, (item + 1) % 3, (other + 1) % 3),
                ]
                outcomes.append(len(await store.links.create_many(pair)))
                continue
            if operation == "update_many":  # every current link at once
                current_links = [link async for link in store.links.list_links(mailbox_id)]
                await store.links.update_many(
                    [dataclasses.replace(link, crm_hash=str(other)) for link in current_links]
                )
                outcomes.append(operation)
                continue
            current = await store.links.get_by_outlook(mailbox_id, ItemKind.CONTACT, _outlook_id(item))
            if current is None:
                outcomes.append("absent")
                continue
            target = first_read.get(item, current) if operation.endswith("_stale") else current
            if operation.startswith("update"):
                await store.links.update(dataclasses.replace(target, crm_hash=str(other)))
            elif operation.startswith("delete"):
                await store.links.delete(target)
                first_read.pop(item, None)
            else:
                await store.links.move_outlook_id(target, _outlook_id(other))
            outcomes.append(operation)
        except (LinkAlreadyExists, LinkConflict) as refused:
            outcomes.append(type(refused).__name__)
    final = sorted(
        [(link.outlook_id, link.crm_id, link.crm_hash) async for link in store.links.list_links(mailbox_id)]
    )
    by_crm = [await store.links.get_by_crm(mailbox_id, "contact", f"crm-{index}") for index in range(3)]
    return [*outcomes, final, [link.outlook_id if link else None for link in by_crm]]


# No shrinking: each shrink step replays over HTTP, which would take minutes; the failing
# sequence is at most ten steps and readable as it is.
@settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=operations)
async def test_fake_and_azure_agree(both_stores: tuple[Store, Store], steps: list[Operation]) -> None:
    azure, memory = both_stores
    mailbox_id = uuid.uuid4().hex
    assert await _replay(azure, mailbox_id, steps) == await _replay(memory, mailbox_id, steps)
