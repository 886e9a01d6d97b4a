"""Sync state on Table Storage: per (mailbox, resource) delta links and dirty flags, and the mailbox lease."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient

from shared.domain.model import ItemKind
from shared.store.azure.common import (
    Clock,
    Entity,
    as_utc,
    entity_etag,
    if_match,
    put_row,
    query,
    required_utc,
)
from shared.store.azure.transactions import submit_transaction
from shared.store.errors import (
    LeaseHeld,
    LeaseLost,
    StaleWrite,
)
from shared.store.keys import SEPARATOR, decode_key, encode_key, key_range, row_key
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

_LEASE_ROW = "lease"
_STATE = "state"
_DIRTY = "dirty"
_DELETES = "deletes"
_LATENCY = "latency"
_SAFETY_READ = "safetyread"
_CREATE = "create"
_TRANSACTION_ROWS = 100  # entity-group transactions hold at most 100 entities
_LATENCY_TRIES = 5


class AzureSyncStateStore:
    """PartitionKey = mailbox; rows ``state|<resource>``, ``dirty|<resource>`` and ``lease``.

    The dirty flag is a row of its own so that marking it is a single insert: whichever
    notification creates the row is the one that made the resource dirty (and enqueues).
    """

    # Bound on the "seen dirty" hint; past it the hint starts over (it only orders two writes).
    _HINT_LIMIT = 10_000

    def __init__(self, table: TableClient, clock: Clock) -> None:
        self._table = table
        self._clock = clock
        # (mailbox, resource) pairs this process last left dirty: which write mark_dirty tries first.
        self._seen_dirty: set[tuple[str, str]] = set()

    async def dirty_resources(self, mailbox_id: str) -> list[str]:
        """One range query over the mailbox's ``dirty|`` rows."""
        low, high = key_range(_DIRTY)
        return [
            decode_key(entity["RowKey"].split(SEPARATOR, 1)[1])
            async for entity in query(
                self._table,
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                {"pk": encode_key(mailbox_id), "low": low, "high": high},
            )
        ]

    async def get_state(self, mailbox_id: str, resource: str) -> SyncState:
        """One round trip: the state and dirty rows in one partition query."""
        encoded = encode_key(resource)
        state_row, dirty_row = row_key(_STATE, encoded), row_key(_DIRTY, encoded)
        rows = {
            entity["RowKey"]: entity
            async for entity in query(
                self._table,
                # Spaces around the @names: the SDK finds parameters by splitting on spaces.
                "PartitionKey eq @pk and ( RowKey eq @state or RowKey eq @dirty )",
                {"pk": encode_key(mailbox_id), "state": state_row, "dirty": dirty_row},
            )
        }
        state: Entity = rows.get(state_row, {})
        dirty = rows.get(dirty_row)
        return SyncState(
            mailbox_id=mailbox_id,
            resource=resource,
            delta_link=state.get("delta_link"),
            window_start=as_utc(state.get("window_start")),
            last_sync_at=as_utc(state.get("last_sync_at")),
            last_error=state.get("last_error"),
            dirty=dirty is not None,
            dirty_since=as_utc(dirty["dirty_since"]) if dirty is not None else None,
            dirty_etag=entity_etag(dirty) if dirty is not None else None,
        )

    async def mark_dirty(self, mailbox_id: str, resource: str) -> bool:
        """One round trip in a burst's common cases: an insert when clean, a touch when already dirty.

        Two writes decide it, and either order is correct, so a per-process hint only picks the one
        likely to succeed at once: a pair this process left dirty is touched first (Merge Entity
        with ``If-Match: *`` updates an existing entity only, learn.microsoft.com/rest/api/
        storageservices/merge-entity; 404 = a run cleared it, so insert), any other pair is inserted
        first (Insert Entity: 409 = already dirty, so touch). Only the insert that creates the row
        returns True (enqueue then): at most one job per dirty resource. The touch changes the row's
        ETag, so a ``clear_dirty`` holding an ETag read before this notification fails and the flag
        stays set. Either write is durable before this returns; storage errors propagate (5xx).
        """
        pair = (mailbox_id, resource)
        keys = {"PartitionKey": encode_key(mailbox_id), "RowKey": row_key(_DIRTY, encode_key(resource))}
        now = self._clock()
        if pair in self._seen_dirty and await self._touch_dirty(keys, now):
            return False
        try:
            await self._table.create_entity(
                {
                    **keys,
                    "mailbox_id": mailbox_id,
                    "resource": resource,
                    "dirty_since": now,
                    "notified_at": now,
                }
            )
            made_dirty = True
        except ResourceExistsError:
            # False from the touch: a run cleared the flag just now; its delta starts after this change.
            await self._touch_dirty(keys, now)
            made_dirty = False
        if len(self._seen_dirty) >= self._HINT_LIMIT:
            self._seen_dirty.clear()
        self._seen_dirty.add(pair)
        return made_dirty

    async def _touch_dirty(self, keys: Entity, now: dt.datetime) -> bool:
        """MERGE the dirty row if it exists (a new ETag); False if there is none (404)."""
        try:
            await self._table.update_entity({**keys, "notified_at": now}, mode=UpdateMode.MERGE)
        except ResourceNotFoundError:
            return False
        return True

    async def clear_dirty(self, state: SyncState) -> bool:
        if state.dirty_etag is None:
            return True
        try:
            await self._table.delete_entity(
                encode_key(state.mailbox_id),
                row_key(_DIRTY, encode_key(state.resource)),
                **if_match(state.dirty_etag),
            )
        except ResourceModifiedError:
            return False
        self._seen_dirty.discard((state.mailbox_id, state.resource))
        return True

    async def list_dirty(self) -> AsyncIterator[DirtyMark]:
        low, high = key_range(_DIRTY)
        async for entity in query(
            self._table, "RowKey ge @low and RowKey lt @high", {"low": low, "high": high}
        ):
            yield DirtyMark(
                mailbox_id=entity["mailbox_id"],
                resource=entity["resource"],
                dirty_since=required_utc(entity["dirty_since"]),
                swept_at=as_utc(entity.get("swept_at")),
                etag=entity_etag(entity),
            )

    async def note_swept(self, mark: DirtyMark, at: dt.datetime) -> bool:
        """One MERGE If-Match the listed ETag (a notification's touch or a run's clear wins)."""
        if mark.etag is None:
            return False
        keys = {
            "PartitionKey": encode_key(mark.mailbox_id),
            "RowKey": row_key(_DIRTY, encode_key(mark.resource)),
        }
        try:
            await self._table.update_entity(
                {**keys, "swept_at": at}, mode=UpdateMode.MERGE, **if_match(mark.etag)
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    async def _write_state(self, mailbox_id: str, resource: str, mode: UpdateMode, **properties: Any) -> None:
        entity = {
            "PartitionKey": encode_key(mailbox_id),
            "RowKey": row_key(_STATE, encode_key(resource)),
            "mailbox_id": mailbox_id,
            "resource": resource,
            **properties,
        }
        await self._table.upsert_entity(entity, mode=mode)

    async def save_delta_link(self, mailbox_id: str, resource: str, delta_link: str) -> None:
        """Replaces the row, so a successful sync also clears ``last_error``."""
        await self._write_state(
            mailbox_id, resource, UpdateMode.REPLACE, delta_link=delta_link, last_sync_at=self._clock()
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
        """One entity-group transaction in the mailbox's partition: the lease row replaced If-Match
        the lease's ETag (renewed) and the state row replaced (a successful sync also clears
        ``last_error``). Both or neither (learn.microsoft.com/rest/api/storageservices/
        performing-entity-group-transactions): 412/404 on the lease -> LeaseLost, nothing stored."""
        if lease.mailbox_id != mailbox_id:
            raise ValueError("the lease is another mailbox's")
        now = self._clock()
        renewed = _lease_entity(mailbox_id, lease.owner, lease_expiry(now, seconds))
        state = {
            "PartitionKey": encode_key(mailbox_id),
            "RowKey": row_key(_STATE, encode_key(resource)),
            "mailbox_id": mailbox_id,
            "resource": resource,
            "delta_link": delta_link,
            "last_sync_at": now,
        }
        if window_start is not None:
            state["window_start"] = window_start
        try:
            results = await submit_transaction(
                self._table,
                [
                    ("update", renewed, {"mode": UpdateMode.REPLACE, **if_match(lease.etag)}),
                    ("upsert", state, {"mode": UpdateMode.REPLACE}),
                ],
            )
        except TableTransactionError as exc:
            if exc.status_code in (404, 412):
                raise LeaseLost from exc
            raise
        return _lease_from(mailbox_id, renewed, results[0]["etag"])

    async def record_error(self, mailbox_id: str, resource: str, reason_code: str) -> None:
        await self._write_state(
            mailbox_id, resource, UpdateMode.MERGE, last_error=check_reason_code(reason_code)
        )

    async def get_delete_log(self, mailbox_id: str, kind: ItemKind) -> DeleteLog:
        try:
            entity = await self._table.get_entity(encode_key(mailbox_id), row_key(_DELETES, kind.value))
        except ResourceNotFoundError:
            return DeleteLog(mailbox_id=mailbox_id, kind=kind)
        recent = tuple(
            (dt.datetime.fromisoformat(at), int(n)) for at, n in json.loads(entity.get("recent") or "[]")
        )
        return DeleteLog(
            mailbox_id=mailbox_id,
            kind=kind,
            recent=recent,
            refused=int(entity.get("refused") or 0),
            etag=entity_etag(entity),
        )

    async def put_delete_log(self, log: DeleteLog) -> DeleteLog:
        """Row ``deletes|<kind>``: insert (no etag) or replace If-Match; StaleWrite on a race."""
        entity = {
            "PartitionKey": encode_key(log.mailbox_id),
            "RowKey": row_key(_DELETES, log.kind.value),
            "recent": json.dumps([[at.isoformat(), n] for at, n in log.recent]),
            "refused": log.refused,
        }
        return dataclasses.replace(log, etag=await put_row(self._table, entity, log.etag, "delete log"))

    async def last_safety_read(self, mailbox_id: str) -> dt.datetime | None:
        try:
            entity = await self._table.get_entity(encode_key(mailbox_id), _SAFETY_READ)
        except ResourceNotFoundError:
            return None
        return required_utc(entity["at"])

    async def note_safety_read(self, mailbox_id: str, at: dt.datetime) -> None:
        """Row ``safetyread``, upserted (one sweep run writes it; a lost race only repeats a read)."""
        entity = {"PartitionKey": encode_key(mailbox_id), "RowKey": _SAFETY_READ, "at": at}
        await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    async def add_latencies(self, slot: LatencySlot) -> None:
        """Row ``latency|<direction>|<ring position>``: read, add (or start over for a new slot),
        write If-Match; a race with another adder is retried on the fresh row."""
        key = (
            encode_key(slot.mailbox_id),
            row_key(_LATENCY, slot.direction, str(latency_ring_position(slot.start))),
        )
        for _ in range(_LATENCY_TRIES):
            try:
                current: TableEntity | None = await self._table.get_entity(*key)
            except ResourceNotFoundError:
                current = None
            counts = slot.counts
            if current is not None and required_utc(current["start"]) == slot.start:
                stored = json.loads(current["counts"])
                counts = tuple(a + b for a, b in zip(counts, stored, strict=True))
            entity = {
                "PartitionKey": key[0],
                "RowKey": key[1],
                "direction": slot.direction,
                "start": slot.start,
                "counts": json.dumps(list(counts)),
            }
            with contextlib.suppress(StaleWrite):  # another run added first: add to its row
                etag = None if current is None else entity_etag(current)
                await put_row(self._table, entity, etag, "latency slot")
                return
        raise StaleWrite("latency slot")

    async def latency_slots(self, mailbox_id: str) -> list[LatencySlot]:
        low, high = key_range(_LATENCY)
        return [
            LatencySlot(
                mailbox_id=mailbox_id,
                direction=entity["direction"],
                start=required_utc(entity["start"]),
                counts=tuple(json.loads(entity["counts"])),
            )
            async for entity in query(
                self._table,
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                {"pk": encode_key(mailbox_id), "low": low, "high": high},
            )
        ]

    async def reset(self, mailbox_id: str, resource: str) -> None:
        await self._write_state(mailbox_id, resource, UpdateMode.REPLACE)

    async def note_creates(self, mailbox_id: str, table: str, creates: Mapping[str, str]) -> None:
        """Rows ``create|<table>|<crm id>`` (the title in ``title``), upserted in entity-group
        transactions: one request per 100, all in the mailbox's partition."""
        rows = [{**self._create_key(mailbox_id, table, i), "title": t} for i, t in creates.items()]
        await self._transactions("upsert", rows)

    async def pending_creates(self, mailbox_id: str, table: str) -> dict[str, str]:
        low, high = key_range(_CREATE, table)
        return {
            decode_key(str(entity["RowKey"])[len(low) :]): str(entity.get("title") or "")
            async for entity in query(
                self._table,
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                {"pk": encode_key(mailbox_id), "low": low, "high": high},
            )
        }

    async def clear_creates(self, mailbox_id: str, table: str, crm_ids: Sequence[str]) -> None:
        pending = await self.pending_creates(mailbox_id, table)  # a delete of a gone row fails the batch
        keys = [self._create_key(mailbox_id, table, i) for i in dict.fromkeys(crm_ids) if i in pending]
        await self._transactions("delete", keys)

    @staticmethod
    def _create_key(mailbox_id: str, table: str, crm_id: str) -> Entity:
        return {"PartitionKey": encode_key(mailbox_id), "RowKey": row_key(_CREATE, table, encode_key(crm_id))}

    async def _transactions(self, verb: str, rows: Sequence[Entity]) -> None:
        for start in range(0, len(rows), _TRANSACTION_ROWS):
            chunk = rows[start : start + _TRANSACTION_ROWS]
            await submit_transaction(self._table, [(verb, row) for row in chunk])

    async def try_acquire(self, mailbox_id: str, owner: str, seconds: int) -> Lease:
        """One round trip when the mailbox is free (a released lease's row is gone): insert the
        lease row; if it is there, read it and overwrite it If-Match when expired. Of two racers
        exactly one write succeeds; the other gets LeaseHeld."""
        now = self._clock()
        entity = _lease_entity(mailbox_id, owner, lease_expiry(now, seconds))
        try:
            result = await self._table.create_entity(entity)
        except ResourceExistsError:
            pass
        else:
            return _lease_from(mailbox_id, entity, result["etag"])
        try:
            current = await self._table.get_entity(entity["PartitionKey"], _LEASE_ROW)
        except ResourceNotFoundError as exc:  # released in between: the next try may have it
            raise LeaseHeld(None, None) from exc
        holder, until = current["owner"], required_utc(current["expires_at"])
        if until > now:
            raise LeaseHeld(holder, until)
        try:
            result = await self._table.update_entity(
                entity, mode=UpdateMode.REPLACE, **if_match(entity_etag(current))
            )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise LeaseHeld(None, None) from exc
        return _lease_from(mailbox_id, entity, result["etag"])

    async def renew(self, lease: Lease, seconds: int) -> Lease:
        """One round trip, If-Match the lease's ETag."""
        entity = _lease_entity(lease.mailbox_id, lease.owner, lease_expiry(self._clock(), seconds))
        try:
            result = await self._table.update_entity(entity, mode=UpdateMode.REPLACE, **if_match(lease.etag))
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise LeaseLost from exc
        return _lease_from(lease.mailbox_id, entity, result["etag"])

    async def release(self, lease: Lease) -> None:
        # 412: taken over after expiry, so it is someone else's now and not ours to delete.
        with contextlib.suppress(ResourceModifiedError):
            await self._table.delete_entity(encode_key(lease.mailbox_id), _LEASE_ROW, **if_match(lease.etag))


def _lease_entity(mailbox_id: str, owner: str, expires_at: dt.datetime) -> Entity:
    return {
        "PartitionKey": encode_key(mailbox_id),
        "RowKey": _LEASE_ROW,
        "owner": owner,
        "expires_at": expires_at,
    }


def _lease_from(mailbox_id: str, entity: Entity, etag: str) -> Lease:
    return Lease(mailbox_id=mailbox_id, owner=entity["owner"], expires_at=entity["expires_at"], etag=etag)
