"""Sync-state contract: delta links, the dirty flag the webhook sets, and the mailbox lease."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import pytest

from shared.domain.model import ItemKind
from shared.store import Store, open_store
from shared.store.errors import LeaseHeld, LeaseLost, StaleWrite
from shared.store.records import (
    LATENCY_BOUNDS_S,
    LATENCY_SLOT,
    LATENCY_SLOTS,
    LatencySlot,
    SyncState,
    latency_slot_start,
)
from tests.store.helpers import HTTP_LOG, ManualClock, race, response_statuses

MAILBOX = "5f0b1c1e-0000-4000-8000-00000000000a"
RESOURCE = "users/5f0b1c1e-0000-4000-8000-00000000000a/contacts"
DELTA = "https://graph.microsoft.com/v1.0/me/contacts/delta?$deltatoken=abc%2B/="


def _s(seconds: int) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)


async def _dirty(store: Store) -> set[tuple[str, str]]:
    return {(mark.mailbox_id, mark.resource) async for mark in store.sync_state.list_dirty()}


class TestSyncStateContract:
    async def test_the_sweep_notes_a_listed_mark_unless_it_changed_since(
        self, store: Store, clock: ManualClock
    ) -> None:
        await store.sync_state.mark_dirty(MAILBOX, RESOURCE)
        [mark] = [m async for m in store.sync_state.list_dirty()]
        assert mark.swept_at is None
        clock.advance(600)
        assert await store.sync_state.note_swept(mark, clock.now)
        [noted] = [m async for m in store.sync_state.list_dirty()]
        assert (noted.dirty_since, noted.swept_at) == (mark.dirty_since, clock.now)
        assert not await store.sync_state.note_swept(mark, clock.now)  # stale ETag: nothing written
        await store.sync_state.mark_dirty(MAILBOX, RESOURCE)  # notified again
        assert not await store.sync_state.note_swept(noted, clock.now)

    async def test_a_delta_link_is_stored_only_under_the_lease_as_last_renewed(
        self, store: Store, clock: ManualClock
    ) -> None:
        first = await store.sync_state.try_acquire(MAILBOX, "worker-a", 30)
        saved = await store.sync_state.save_delta_link_fenced(
            MAILBOX, RESOURCE, DELTA, lease=first, seconds=30
        )
        assert saved.expires_at == clock.now + _s(30)  # the write renewed the lease
        with pytest.raises(LeaseLost):  # the ETag before that write is stale now
            await store.sync_state.save_delta_link_fenced(
                MAILBOX, RESOURCE, DELTA + "x", lease=first, seconds=30
            )

        clock.advance(31)  # expired: another worker takes the mailbox over
        second = await store.sync_state.try_acquire(MAILBOX, "worker-b", 30)
        with pytest.raises(LeaseLost):
            await store.sync_state.save_delta_link_fenced(
                MAILBOX, RESOURCE, DELTA + "old", lease=saved, seconds=30
            )
        assert (await store.sync_state.get_state(MAILBOX, RESOURCE)).delta_link == DELTA
        await store.sync_state.save_delta_link_fenced(
            MAILBOX, RESOURCE, DELTA + "new", lease=second, seconds=30
        )
        assert (await store.sync_state.get_state(MAILBOX, RESOURCE)).delta_link == DELTA + "new"

    async def test_nothing_stored_is_an_empty_clean_state(self, store: Store) -> None:
        assert await store.sync_state.get_state(MAILBOX, RESOURCE) == SyncState(
            mailbox_id=MAILBOX, resource=RESOURCE
        )

    async def test_a_calendar_link_keeps_its_window_start(self, store: Store, clock: ManualClock) -> None:
        lease = await store.sync_state.try_acquire(MAILBOX, "worker-a", 60)
        start = clock.now - dt.timedelta(days=30)
        lease = await store.sync_state.save_delta_link_fenced(
            MAILBOX, RESOURCE, DELTA, lease=lease, seconds=60, window_start=start
        )
        assert (await store.sync_state.get_state(MAILBOX, RESOURCE)).window_start == start
        await store.sync_state.save_delta_link_fenced(MAILBOX, RESOURCE, DELTA, lease=lease, seconds=60)
        assert (await store.sync_state.get_state(MAILBOX, RESOURCE)).window_start is None

    async def test_delta_link_error_and_reset(self, store: Store, clock: ManualClock) -> None:
        lease = await store.sync_state.try_acquire(MAILBOX, "worker-a", 60)
        lease = await store.sync_state.save_delta_link_fenced(
            MAILBOX, RESOURCE, DELTA, lease=lease, seconds=60
        )
        await store.sync_state.record_error(MAILBOX, RESOURCE, "graph_throttled")
        state = await store.sync_state.get_state(MAILBOX, RESOURCE)
        assert (state.delta_link, state.last_sync_at, state.last_error) == (
            DELTA,
            clock.now,
            "graph_throttled",
        )

        await store.sync_state.save_delta_link_fenced(MAILBOX, RESOURCE, DELTA + "2", lease=lease, seconds=60)
        state = await store.sync_state.get_state(MAILBOX, RESOURCE)
        assert (state.delta_link, state.last_error) == (DELTA + "2", None)

        await store.sync_state.reset(MAILBOX, RESOURCE)
        assert (await store.sync_state.get_state(MAILBOX, RESOURCE)).delta_link is None
        with pytest.raises(ValueError, match="reason code"):
            await store.sync_state.record_error(MAILBOX, RESOURCE, "user@contoso.example failed")

    async def test_only_the_first_notification_of_a_burst_makes_it_dirty(
        self, store: Store, clock: ManualClock
    ) -> None:
        assert await store.sync_state.mark_dirty(MAILBOX, RESOURCE) is True
        since = clock.now
        clock.advance(3)
        assert await store.sync_state.mark_dirty(MAILBOX, RESOURCE) is False

        state = await store.sync_state.get_state(MAILBOX, RESOURCE)
        assert (state.dirty, state.dirty_since) == (True, since)
        assert await _dirty(store) == {(MAILBOX, RESOURCE)}

    async def test_racing_notifications_enqueue_exactly_once(self, store: Store) -> None:
        won, lost = await race(*(store.sync_state.mark_dirty(MAILBOX, RESOURCE) for _ in range(5)))
        assert lost == []
        assert sorted(won) == [False, False, False, False, True]

    async def test_clear_dirty_then_a_new_notification_dirties_again(self, store: Store) -> None:
        await store.sync_state.mark_dirty(MAILBOX, RESOURCE)
        assert await store.sync_state.clear_dirty(await store.sync_state.get_state(MAILBOX, RESOURCE))

        assert not (await store.sync_state.get_state(MAILBOX, RESOURCE)).dirty
        assert await _dirty(store) == set()
        assert await store.sync_state.mark_dirty(MAILBOX, RESOURCE) is True

    async def test_a_mailboxs_dirty_resources_are_one_read(self, store: Store) -> None:
        other = RESOURCE.replace("contacts", "events")
        await store.sync_state.mark_dirty(MAILBOX, RESOURCE)
        await store.sync_state.mark_dirty(MAILBOX, other)
        await store.sync_state.mark_dirty("another-mailbox", RESOURCE)
        await store.sync_state.clear_dirty(await store.sync_state.get_state(MAILBOX, other))

        assert await store.sync_state.dirty_resources(MAILBOX) == [RESOURCE]

    async def test_a_notification_after_the_read_keeps_it_dirty(self, store: Store) -> None:
        await store.sync_state.mark_dirty(MAILBOX, RESOURCE)
        read = await store.sync_state.get_state(MAILBOX, RESOURCE)
        await store.sync_state.mark_dirty(MAILBOX, RESOURCE)

        assert await store.sync_state.clear_dirty(read) is False
        assert (await store.sync_state.get_state(MAILBOX, RESOURCE)).dirty

    async def test_dirty_flags_are_per_mailbox_and_resource(self, store: Store) -> None:
        await store.sync_state.mark_dirty(MAILBOX, RESOURCE)
        await store.sync_state.mark_dirty(MAILBOX, "me/events")
        await store.sync_state.mark_dirty("other-mailbox", RESOURCE)
        clean = await store.sync_state.get_state(MAILBOX, "me/todo/lists/x/tasks")

        assert await _dirty(store) == {
            (MAILBOX, RESOURCE),
            (MAILBOX, "me/events"),
            ("other-mailbox", RESOURCE),
        }
        assert await store.sync_state.clear_dirty(clean)  # nothing to clear
        assert len(await _dirty(store)) == 3


class TestLeaseContract:
    async def test_acquire_renew_release(self, store: Store, clock: ManualClock) -> None:
        lease = await store.sync_state.try_acquire(MAILBOX, "worker-a", 60)
        assert (lease.owner, lease.expires_at) == ("worker-a", clock.now + _s(60))

        clock.advance(30)
        renewed = await store.sync_state.renew(lease, 60)
        assert renewed.expires_at == clock.now + _s(60)
        with pytest.raises(LeaseLost):  # the old etag is spent
            await store.sync_state.renew(lease, 60)

        await store.sync_state.release(renewed)
        other = await store.sync_state.try_acquire(MAILBOX, "worker-b", 60)
        assert other.owner == "worker-b"

    async def test_an_unexpired_lease_is_never_taken_over(self, store: Store, clock: ManualClock) -> None:
        lease = await store.sync_state.try_acquire(MAILBOX, "worker-a", 60)
        clock.advance(59)
        with pytest.raises(LeaseHeld) as held:
            await store.sync_state.try_acquire(MAILBOX, "worker-b", 60)
        assert (held.value.owner, held.value.expires_at) == ("worker-a", lease.expires_at)
        assert (await store.sync_state.renew(lease, 60)).owner == "worker-a"

    async def test_not_even_the_same_owner_takes_an_unexpired_lease_twice(self, store: Store) -> None:
        lease = await store.sync_state.try_acquire(MAILBOX, "worker-a", 60)
        with pytest.raises(LeaseHeld):
            await store.sync_state.try_acquire(MAILBOX, "worker-a", 60)
        assert (await store.sync_state.renew(lease, 60)).owner == "worker-a"

    async def test_an_expired_lease_is_taken_over_and_the_old_holder_loses_it(
        self, store: Store, clock: ManualClock
    ) -> None:
        stale = await store.sync_state.try_acquire(MAILBOX, "worker-a", 60)
        clock.advance(61)
        taken = await store.sync_state.try_acquire(MAILBOX, "worker-b", 60)

        with pytest.raises(LeaseLost):
            await store.sync_state.renew(stale, 60)
        await store.sync_state.release(stale)  # not ours any more: a no-op
        with pytest.raises(LeaseHeld):
            await store.sync_state.try_acquire(MAILBOX, "worker-c", 60)
        assert (await store.sync_state.renew(taken, 60)).owner == "worker-b"

    @pytest.mark.parametrize("expired_first", [False, True], ids=["free", "expired"])
    async def test_racing_acquirers_exactly_one_wins(
        self, store: Store, clock: ManualClock, expired_first: bool
    ) -> None:
        if expired_first:
            await store.sync_state.try_acquire(MAILBOX, "crashed-worker", 60)
            clock.advance(120)
        won, lost = await race(
            *(store.sync_state.try_acquire(MAILBOX, f"worker-{index}", 60) for index in range(4))
        )
        assert len(won) == 1
        assert [type(error) for error in lost] == [LeaseHeld] * 3
        assert (await store.sync_state.renew(won[0], 60)).owner == won[0].owner

    async def test_lease_terms_must_be_positive(self, store: Store) -> None:
        with pytest.raises(ValueError, match="positive"):
            await store.sync_state.try_acquire(MAILBOX, "worker-a", 0)


async def test_taking_a_free_mailbox_is_one_storage_round_trip(
    table_prefix: str, storage_connection_string: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every run of either direction takes the lease, and a released lease's row is gone: reading
    it first made two round trips of one (chaos: 3,526 lease reads at 1,500 operations)."""
    store = await open_store(connection_string=storage_connection_string, prefix=table_prefix)
    try:
        with caplog.at_level(logging.INFO, logger=HTTP_LOG):
            lease = await store.sync_state.try_acquire(MAILBOX, "worker-a", 60)
            assert response_statuses(caplog) == ["201"]
            caplog.clear()
            with pytest.raises(LeaseHeld):
                await store.sync_state.try_acquire(MAILBOX, "worker-b", 60)
            assert response_statuses(caplog) == ["200", "409"]  # held: its holder and expiry read
            await store.sync_state.release(lease)
    finally:
        await store.close()


class TestDeleteLogContract:
    async def test_the_delete_log_round_trips_and_refuses_a_stale_write(
        self, store: Store, clock: ManualClock
    ) -> None:
        empty = await store.sync_state.get_delete_log(MAILBOX, ItemKind.TASK)
        assert (empty.recent, empty.refused, empty.etag) == ((), 0, None)
        hour = clock.now.replace(minute=0)
        stored = await store.sync_state.put_delete_log(
            dataclasses.replace(empty, recent=((hour, 3),), refused=7)
        )
        read = await store.sync_state.get_delete_log(MAILBOX, ItemKind.TASK)
        assert (read.recent, read.refused, read.etag) == (((hour, 3),), 7, stored.etag)
        assert (await store.sync_state.get_delete_log(MAILBOX, ItemKind.CONTACT)).refused == 0

        with pytest.raises(StaleWrite):  # written since ``empty`` was read
            await store.sync_state.put_delete_log(dataclasses.replace(empty, refused=1))
        await store.sync_state.put_delete_log(dataclasses.replace(read, recent=(), refused=0))
        assert (await store.sync_state.get_delete_log(MAILBOX, ItemKind.TASK)).refused == 0


class TestLatencySlotsContract:
    """The last hour's latency figures: one row per ring position, added to, never lost."""

    @staticmethod
    def _slot(start: dt.datetime, counts: tuple[int, ...], direction: str = "to_crm") -> LatencySlot:
        return LatencySlot(mailbox_id=MAILBOX, direction=direction, start=start, counts=counts)

    async def test_runs_of_one_slot_add_up_and_directions_stay_apart(self, store: Store) -> None:
        start = latency_slot_start(dt.datetime(2026, 11, 22, 9, 4, tzinfo=dt.UTC))
        width = len(LATENCY_BOUNDS_S) + 1
        one = tuple(1 if i == 2 else 0 for i in range(width))
        await store.sync_state.add_latencies(self._slot(start, one))
        await store.sync_state.add_latencies(self._slot(start, one))
        await store.sync_state.add_latencies(self._slot(start, one, "to_outlook"))
        slots = {slot.direction: slot for slot in await store.sync_state.latency_slots(MAILBOX)}
        assert slots["to_crm"].counts[2] == 2
        assert sum(slots["to_crm"].counts) == 2
        assert slots["to_outlook"].counts[2] == 1
        assert slots["to_crm"].start == start
        assert await store.sync_state.latency_slots("another-mailbox") == []

    async def test_a_ring_position_reused_by_a_later_slot_starts_over(self, store: Store) -> None:
        width = len(LATENCY_BOUNDS_S) + 1
        first = latency_slot_start(dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC))
        later = first + LATENCY_SLOT * LATENCY_SLOTS  # the same ring position, seventy minutes on
        await store.sync_state.add_latencies(self._slot(first, (5,) + (0,) * (width - 1)))
        await store.sync_state.add_latencies(self._slot(later, (0,) * (width - 1) + (1,)))
        [slot] = await store.sync_state.latency_slots(MAILBOX)
        assert (slot.start, sum(slot.counts), slot.counts[-1]) == (later, 1, 1)

    async def test_concurrent_adders_lose_nothing(self, store: Store) -> None:
        width = len(LATENCY_BOUNDS_S) + 1
        start = latency_slot_start(dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC))
        one = (1,) + (0,) * (width - 1)
        won, lost = await race(*(store.sync_state.add_latencies(self._slot(start, one)) for _ in range(4)))
        assert (len(won), lost) == (4, [])
        [slot] = await store.sync_state.latency_slots(MAILBOX)
        assert slot.counts[0] == 4


class TestCreateIntents:
    """The intent a CRM -> Outlook run records before its Graph creates (crm_run), per table."""

    async def test_intents_are_listed_per_mailbox_and_table_until_cleared(self, store: Store) -> None:
        ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(120)]  # over one transaction's 100
        await store.sync_state.note_creates(
            MAILBOX, "task", {ids[0]: "Call back", **dict.fromkeys(ids[1:], "")}
        )
        await store.sync_state.note_creates(MAILBOX, "contact", {ids[0]: ""})
        pending = await store.sync_state.pending_creates(MAILBOX, "task")
        assert (len(pending), pending[ids[0]]) == (120, "Call back")
        assert await store.sync_state.pending_creates("another-mailbox", "task") == {}
        await store.sync_state.clear_creates(MAILBOX, "task", [*ids[:110], "not-recorded"])
        assert sorted(await store.sync_state.pending_creates(MAILBOX, "task")) == ids[110:]
        assert list(await store.sync_state.pending_creates(MAILBOX, "contact")) == [ids[0]]
