"""The in-memory link map, findable from either side, with the table store's key and batch rules."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence

from shared.domain.model import ItemKind
from shared.store.errors import (
    LinkAlreadyExists,
    LinkConflict,
)
from shared.store.keys import encode_key
from shared.store.memory.common import Clock, new_etag
from shared.store.ports import check_link_batch, create_each, transaction_chunks
from shared.store.records import Link

_OutlookKey = tuple[str, ItemKind, str]
_CrmKey = tuple[str, str, str]


def _outlook_key(link: Link) -> _OutlookKey:
    return (link.mailbox_id, link.kind, link.outlook_id)


def _crm_key(link: Link) -> _CrmKey:
    return (link.mailbox_id, link.crm_table, link.crm_id)


class MemoryLinkStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._by_outlook: dict[_OutlookKey, Link] = {}
        self._by_crm: dict[_CrmKey, _OutlookKey] = {}

    async def get_by_outlook(self, mailbox_id: str, kind: ItemKind, outlook_id: str) -> Link | None:
        return self._by_outlook.get((mailbox_id, kind, outlook_id))

    async def get_by_crm(self, mailbox_id: str, crm_table: str, crm_id: str) -> Link | None:
        pointer = self._by_crm.get((mailbox_id, crm_table, crm_id))
        return self._by_outlook.get(pointer) if pointer else None

    @staticmethod
    def _check_keys(link: Link) -> None:
        """Refuse the identifiers the table store cannot key (InvalidKey)."""
        for identifier in (link.mailbox_id, link.outlook_id, link.crm_table, link.crm_id):
            encode_key(identifier)

    def _stored(self, link: Link) -> Link:
        self._check_keys(link)
        return dataclasses.replace(
            link,
            field_bases=dict(link.field_bases),
            updated_at=self._clock(),
            etag=new_etag(),
        )

    def _current(self, link: Link) -> Link:
        """The stored link ``link`` was read from; LinkConflict if it changed or is gone."""
        if link.etag is None:
            raise ValueError("this operation needs a link read from the store (it carries the etag)")
        current = self._by_outlook.get(_outlook_key(link))
        if current is None or current.etag != link.etag or _crm_key(current) != _crm_key(link):
            raise LinkConflict
        return current

    async def create(self, link: Link) -> Link:
        if _outlook_key(link) in self._by_outlook:
            raise LinkAlreadyExists("outlook")
        if _crm_key(link) in self._by_crm:
            raise LinkAlreadyExists("crm")
        stored = self._stored(link)
        self._by_outlook[_outlook_key(stored)] = stored
        self._by_crm[_crm_key(stored)] = _outlook_key(stored)
        return stored

    async def update(self, link: Link) -> Link:
        self._current(link)
        stored = self._stored(link)
        self._by_outlook[_outlook_key(stored)] = stored
        return stored

    async def create_many(self, links: Sequence[Link]) -> list[Link]:
        """One by one: the end state a transaction, or its link-by-link redo after a conflict, leaves."""
        check_link_batch(links, read_earlier=False)
        for link in links:  # as the table store prepares every row before its first transaction
            self._check_keys(link)
        created, refused = await create_each(self.create, links)
        if refused is not None:
            raise refused
        return created

    async def update_many(self, links: Sequence[Link]) -> None:
        """Per transaction-sized chunk, every link is checked before any is written (all or nothing)."""
        check_link_batch(links, read_earlier=True)
        for chunk in transaction_chunks(links):
            for link in chunk:
                self._current(link)
            for link in chunk:
                await self.update(link)

    async def delete(self, link: Link) -> None:
        if link.etag is None:
            raise ValueError("this operation needs a link read from the store (it carries the etag)")
        if _outlook_key(link) in self._by_outlook:
            self._current(link)
            del self._by_outlook[_outlook_key(link)]
        if self._by_crm.get(_crm_key(link)) == _outlook_key(link):
            del self._by_crm[_crm_key(link)]

    async def move_outlook_id(self, link: Link, new_outlook_id: str) -> Link:
        if new_outlook_id == link.outlook_id:
            return link
        self._current(link)
        moved = self._stored(dataclasses.replace(link, outlook_id=new_outlook_id))
        if _outlook_key(moved) in self._by_outlook:
            raise LinkAlreadyExists("outlook")
        del self._by_outlook[_outlook_key(link)]
        self._by_outlook[_outlook_key(moved)] = moved
        self._by_crm[_crm_key(moved)] = _outlook_key(moved)
        return moved

    async def list_links(self, mailbox_id: str, kind: ItemKind | None = None) -> AsyncIterator[Link]:
        chosen = [
            link
            for (mailbox, link_kind, _), link in self._by_outlook.items()
            if mailbox == mailbox_id and kind in (None, link_kind)
        ]
        for link in sorted(chosen, key=lambda link: (link.kind.value, encode_key(link.outlook_id))):
            yield link

    async def count(self, mailbox_id: str, kind: ItemKind | None = None) -> int:
        return sum([1 async for _ in self.list_links(mailbox_id, kind)])

    async def mailboxes_linking(self, crm_table: str, crm_id: str) -> set[str]:
        return {
            mailbox
            for (mailbox, table, linked_id) in self._by_crm
            if table == crm_table and linked_id.lower() == crm_id.lower()
        }

    async def indexed(self, mailbox_id: str) -> bool:
        return True  # the in-memory map answers from the links themselves

    async def reindex(self, mailbox_id: str) -> int:
        return await self.count(mailbox_id)
