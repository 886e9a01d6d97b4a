"""The in-memory audit trail."""

from __future__ import annotations

from collections.abc import Sequence

from shared.store.records import AuditRecord


class MemoryAuditTrail:
    def __init__(self) -> None:
        self._records: dict[str, list[AuditRecord]] = {}

    async def append(self, record: AuditRecord) -> None:
        self._records.setdefault(record.mailbox_id, []).append(record)

    async def append_many(self, records: Sequence[AuditRecord]) -> None:
        if len({record.mailbox_id for record in records}) > 1:
            raise ValueError("append_many takes the records of one mailbox")
        for record in records:
            await self.append(record)

    async def list_recent(self, mailbox_id: str, limit: int = 100) -> list[AuditRecord]:
        newest_first = sorted(self._records.get(mailbox_id, []), key=lambda record: record.at, reverse=True)
        return newest_first[: max(limit, 0)]
