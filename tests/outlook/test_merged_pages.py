"""Delta pages merged for the CRM (``shared.outlook.delta.merged_pages``): fewer, larger CRM round
trips without ever storing a link past an uncommitted item."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.domain.model import ItemKind, OutlookItem
from shared.outlook.delta import DeltaPage, merged_pages


def _item(item_id: str, change_key: str = "1") -> OutlookItem:
    return OutlookItem(mailbox_id="m", item_id=item_id, kind=ItemKind.TASK, change_key=change_key)


async def _graph(pages: list[DeltaPage], fail_after: int | None = None) -> AsyncIterator[DeltaPage]:
    for index, page in enumerate(pages):
        if index == fail_after:
            raise ConnectionError("Graph is down")
        yield page


def _pages(count: int, size: int) -> list[DeltaPage]:
    return [
        DeltaPage(
            [_item(f"{n}-{i}") for i in range(size)],
            f"next{n}" if n < count - 1 else None,
            "delta" if n == count - 1 else None,
        )
        for n in range(count)
    ]


async def test_pages_merge_up_to_the_limit_and_carry_the_last_link() -> None:
    merged = [page async for page in merged_pages(_graph(_pages(7, 200)), limit=1000)]
    assert [len(page.items) for page in merged] == [1000, 400]
    assert [(page.next_link, page.delta_link) for page in merged] == [("next4", None), (None, "delta")]


async def test_an_item_listed_twice_keeps_its_last_state() -> None:
    pages = [DeltaPage([_item("a"), _item("b")], "next", None), DeltaPage([_item("a", "2")], None, "delta")]
    merged = [page async for page in merged_pages(_graph(pages), 1000)]
    assert [(item.item_id, item.change_key) for item in merged[0].items] == [("b", "1"), ("a", "2")]


async def test_pages_read_before_a_failure_are_handed_out_before_it() -> None:
    merged: list[DeltaPage] = []

    async def read() -> None:
        async for page in merged_pages(_graph(_pages(3, 200), fail_after=2), 1000):
            merged.append(page)

    with pytest.raises(ConnectionError):
        await read()
    assert [len(page.items) for page in merged] == [400]
    assert merged[0].next_link == "next1"  # the link stored is the last page read
