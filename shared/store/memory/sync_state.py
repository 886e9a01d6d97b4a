"""In-memory sync state: delta links, dirty flags and the mailbox lease."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence

from shared.domain.model import ItemKind
from shared.store.errors import (
    LeaseHeld,
    LeaseLost,
    StaleWrite,
)
from shared.store.keys import encode_key
from shared.store.memory.common import Clock, new_etag
from shared.store.records import (
    DeleteLog,
    DirtyMark,
    LatencySlot,
    Lease,
    SyncState,
    check_reason_code,
    latency_ring_position,
    lease_expiry,
)


class MemorySyncStateStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._states: dict[tuple[str, str], SyncState] = {}
        self._dirty: dict[tuple[str, str], tuple[dt.datetime, str]] = {}
        self._swept: dict[tuple[str, str], dt.datetime] = {}
        self._leases: dict[str, Lease] = {}
        self._deletes: dict[tuple[str, ItemKind], DeleteLog] = {}
        self._latency: dict[tuple[str, str, int], LatencySlot] = {}
        self._safety_reads: dict[str, dt.datetime] = {}
        self._creates: dict[tuple[str, str, str], str] = {}

    async def note_creates(self, mailbox_id: str, table: str, creates: Mapping[str, str]) -> None:
        self._creates |= {(mailbox_id, table, crm_id): title for crm_id, title in creates.items()}

    async def pending_creates(self, mailbox_id: str, table: str) -> dict[str, str]:
        return {i: title for (m, t, i), title in self._creates.items() if (m, t) == (mailbox_id, table)}

    async def clear_creates(self, mailbox_id: str, table: str, crm_ids: Sequence[str]) -> None:
        for crm_id in crm_ids:
            self._creates.pop((mailbox_id, table, crm_id), None)

    async def get_state(self, mailbox_id: str, resource: str) -> SyncState:
        state = self._states.get((mailbox_id, resource), SyncState(mailbox_id=mailbox_id, resource=resource))
        dirty = self._dirty.get((mailbox_id, resource))
        if dirty is None:
            return state
        return dataclasses.replace(state, dirty=True, dirty_since=dirty[0], dirty_etag=dirty[1])

    async def dirty_resources(self, mailbox_id: str) -> list[str]:
        return sorted(resource for mailbox, resource in self._dirty if mailbox == mailbox_id)

    async def mark_dirty(self, mailbox_id: str, resource: str) -> bool:
        encode_key(mailbox_id)
        existing = self._dirty.get((mailbox_id, resource))
        since = existing[0] if existing else self._clock()
        if existing is None:
            self._swept.pop((mailbox_id, resource), None)
        self._dirty[(mailbox_id, resource)] = (since, new_etag())
        return existing is None

    async def clear_dirty(self, state: SyncState) -> bool:
        current = self._dirty.get((state.mailbox_id, state.resource))
        if state.dirty_etag is None or current is None:
            return True
        if current[1] != state.dirty_etag:
            return False
        del self._dirty[(state.mailbox_id, state.resource)]
        self._swept.pop((state.mailbox_id, state.resource), None)
        return True

    async def list_dirty(self) -> AsyncIterator[DirtyMark]:
        for (mailbox_id, resource), (since, etag) in list(self._dirty.items()):
            swept = self._swept.get((mailbox_id, resource))
            yield DirtyMark(
                mailbox_id=mailbox_id, resource=resource, dirty_since=since, swept_at=swept, etag=etag
            )

    async def note_swept(self, mark: DirtyMark, at: dt.datetime) -> bool:
        key = (mark.mailbox_id, mark.resource)
        current = self._dirty.get(key)
        if current is None or current[1] != mark.etag:
            return False
        etag = new_etag()
        self._dirty[key] = (current[0], etag)
        self._swept[key] = at
        return True

    async def save_delta_link(self, mailbox_id: str, resource: str, delta_link: str) -> None:
        self._states[(mailbox_id, resource)] = SyncState(
            mailbox_id=mailbox_id, resource=resource, delta_link=delta_link, last_sync_at=self._clock()
        )

    async def save_delta_link_fenced(
        self,
        mailbox_id: str,
        resource: str,
        delta_link: str,
        *,
        lease: Lease,
        seconds: int,
        window_start: dt.datetime | None = None,
    ) -> Lease:
        if lease.mailbox_id != mailbox_id:
            raise ValueError("the lease is another mailbox's")
        renewed = await self.renew(lease, seconds)  # LeaseLost: nothing stored
        await self.save_delta_link(mailbox_id, resource, delta_link)
        key = (mailbox_id, resource)
        self._states[key] = dataclasses.replace(self._states[key], window_start=window_start)
        return renewed

    async def record_error(self, mailbox_id: str, resource: str, reason_code: str) -> None:
        key = (mailbox_id, resource)
        state = self._states.get(key, SyncState(mailbox_id=mailbox_id, resource=resource))
        self._states[key] = dataclasses.replace(state, last_error=check_reason_code(reason_code))

    async def get_delete_log(self, mailbox_id: str, kind: ItemKind) -> DeleteLog:
        return self._deletes.get((mailbox_id, kind), DeleteLog(mailbox_id=mailbox_id, kind=kind))

    async def put_delete_log(self, log: DeleteLog) -> DeleteLog:
        current = self._deletes.get((log.mailbox_id, log.kind))
        if (current.etag if current else None) != log.etag:
            raise StaleWrite("delete log")
        stored = dataclasses.replace(log, etag=new_etag())
        self._deletes[(log.mailbox_id, log.kind)] = stored
        return stored

    async def last_safety_read(self, mailbox_id: str) -> dt.datetime | None:
        return self._safety_reads.get(mailbox_id)

    async def note_safety_read(self, mailbox_id: str, at: dt.datetime) -> None:
        self._safety_reads[mailbox_id] = at

    async def add_latencies(self, slot: LatencySlot) -> None:
        key = (slot.mailbox_id, slot.direction, latency_ring_position(slot.start))
        current = self._latency.get(key)
        if current is not None and current.start == slot.start:
            counts = tuple(a + b for a, b in zip(slot.counts, current.counts, strict=True))
            slot = dataclasses.replace(slot, counts=counts)
        self._latency[key] = slot

    async def latency_slots(self, mailbox_id: str) -> list[LatencySlot]:
        return [slot for (mailbox, _, _), slot in sorted(self._latency.items()) if mailbox == mailbox_id]

    async def reset(self, mailbox_id: str, resource: str) -> None:
        self._states[(mailbox_id, resource)] = SyncState(mailbox_id=mailbox_id, resource=resource)

    async def try_acquire(self, mailbox_id: str, owner: str, seconds: int) -> Lease:
        now = self._clock()
        expires_at = lease_expiry(now, seconds)
        current = self._leases.get(mailbox_id)
        if current is not None and current.expires_at > now:
            raise LeaseHeld(current.owner, current.expires_at)
        lease = Lease(mailbox_id=mailbox_id, owner=owner, expires_at=expires_at, etag=new_etag())
        self._leases[mailbox_id] = lease
        return lease

    async def renew(self, lease: Lease, seconds: int) -> Lease:
        current = self._leases.get(lease.mailbox_id)
        if current is None or current.etag != lease.etag:
            raise LeaseLost
        renewed = dataclasses.replace(lease, expires_at=lease_expiry(self._clock(), seconds), etag=new_etag())
        self._leases[lease.mailbox_id] = renewed
        return renewed

    async def release(self, lease: Lease) -> None:
        current = self._leases.get(lease.mailbox_id)
        if current is not None and current.etag == lease.etag:
            del self._leases[lease.mailbox_id]
