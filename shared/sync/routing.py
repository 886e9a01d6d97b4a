"""Routing: which mailboxes a CRM change concerns, and one queued run per mailbox.

A changed record concerns the mailbox of its owner, the mailboxes of its activity parties that are
registered users (organizer, required and optional attendees), and every mailbox that already links
it (its reverse link rows): that last one is how a record that left a user's filter, changed hands or
was deleted reaches the mailbox holding its copy. A deleted record concerns only the mailboxes that
link it. Whether a record then belongs in a mailbox is decided by the run, with the user's
synchronization filter (:mod:`shared.sync.crm_filter`).

A user's own Outlook filter may also take records the user neither owns nor attends ("contacts in
my city"): those mailboxes are found by their filters (:meth:`Router.by_filter`), evaluated by
Dataverse as the user on the changed ids.

The owner and the parties are read as the application (the routing step sees every record); the
run reads as the user.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from shared.crm.errors import CrmError
from shared.crm.port import CrmQueryPort
from shared.store.crm_jobs import MAX_IDS, CrmWork, CrmWorkQueue, CrmWorkSource
from shared.store.ports import Store
from shared.store.records import Mailbox
from shared.sync.concurrency import TtlCache, bounded_gather
from shared.sync.crm_changes import TABLES
from shared.sync.crm_filter import (
    OPTIONAL_ATTENDEE,
    ORGANIZER,
    REQUIRED_ATTENDEE,
    members_of,
    reaches_beyond_the_user,
    user_filters,
)
from shared.sync.crm_routed import RoutedVersions
from shared.sync.policies import kind_enabled

_PRIMARY = {"contact": "contactid", "task": "activityid", "appointment": "activityid"}
_ROUTED_PARTIES = (ORGANIZER, REQUIRED_ATTENDEE, OPTIONAL_ATTENDEE)
_PARTIES = "appointment_activity_parties"  # appointment -> activityparty, collection-valued
_PARTIES_EXPAND = f"{_PARTIES}($select=_partyid_value,participationtypemask)"
_IDS_PER_QUERY = 50
logger = logging.getLogger(__name__)
_FILTER_READS_AT_ONCE = 8  # mailboxes whose filters are read and evaluated concurrently


@dataclass(frozen=True, slots=True)
class RecordPeople:
    """Who a changed record names: its owner and the users among its activity parties; and the
    record's version (``@odata.etag``) when they were read."""

    owner: uuid.UUID | None = None
    parties: frozenset[uuid.UUID] = frozenset()
    version: str | None = None


@dataclass
class Routes:
    """Per mailbox, the changed and deleted ids to run."""

    changed: dict[str, list[uuid.UUID]] = field(default_factory=dict)
    deleted: dict[str, list[uuid.UUID]] = field(default_factory=dict)

    def add(self, mailboxes: Iterable[str], record_id: uuid.UUID, *, deleted: bool) -> None:
        target = self.deleted if deleted else self.changed
        for mailbox in mailboxes:
            ids = target.setdefault(mailbox, [])
            if record_id not in ids:
                ids.append(record_id)


def mailboxes_for(people: RecordPeople, users: Mapping[uuid.UUID, str], linked: Iterable[str]) -> set[str]:
    """The mailboxes one changed record concerns (pure; see the module docstring)."""
    named = {*people.parties, *([people.owner] if people.owner is not None else [])}
    return {users[user] for user in named if user in users} | set(linked)


def _any(column: str, ids: list[uuid.UUID]) -> str:
    return "(" + " or ".join(f"{column} eq {i}" for i in ids) + ")"


class Router:
    """Turns routing work into per-mailbox runs on the CRM -> Outlook queue."""

    def __init__(
        self,
        *,
        store: Store,
        crm: CrmQueryPort,
        queue: CrmWorkQueue,
        filter_ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        routed: RoutedVersions | None = None,
    ) -> None:
        self._store = store
        self._crm = crm
        self._queue = queue
        self.routed = routed or RoutedVersions()
        self._filters: TtlCache[tuple[str, str], list[str] | None] = TtlCache(filter_ttl_seconds, clock)

    async def route(self, work: CrmWork, *, owners: Mapping[uuid.UUID, uuid.UUID] | None = None) -> int:
        """Enqueue one run per concerned mailbox; the number of runs enqueued. A mailbox whose run
        for a record at the version read here is queued already (:mod:`shared.sync.crm_routed`: the
        webhook's and change tracking's reports of one change) gets no second one for it. ``owners``:
        owner hints per record (the webhook's, of work routed together), like ``work.owner``."""
        mailboxes = [m async for m in self._store.registry.list_mailboxes(enabled_only=True)]
        users = {uuid.UUID(m.crm_user_id): m.mailbox_id for m in mailboxes}
        people = await self.people(work.table, list(work.changed))
        hints = dict.fromkeys(work.changed, work.owner) if work.owner is not None else {}
        for record_id, owner in (hints | dict(owners or {})).items():
            known = people.get(record_id, RecordPeople())
            people[record_id] = RecordPeople(known.owner or owner, known.parties, known.version)
        routes = Routes()
        enabled = {m.mailbox_id for m in mailboxes}
        unindexed = [m.mailbox_id for m in mailboxes if not await self._store.links.indexed(m.mailbox_id)]
        for deleted, ids in ((False, work.changed), (True, work.deleted)):
            holders = await bounded_gather(
                self._linking(work.table, record_id, enabled, unindexed) for record_id in ids
            )
            for record_id, linked in zip(ids, holders, strict=True):
                concerned = (
                    linked if deleted else mailboxes_for(people.get(record_id, RecordPeople()), users, linked)
                )
                routes.add(concerned, record_id, deleted=deleted)
        await self.by_filter(work.table, mailboxes, list(work.changed), routes)
        runs = 0
        versions = {record_id: found.version for record_id, found in people.items()}
        for mailbox_id in sorted(set(routes.changed) | set(routes.deleted)):
            changed = [
                record_id
                for record_id in routes.changed.get(mailbox_id, [])
                if not self.routed.queued(mailbox_id, work.table, record_id, versions.get(record_id))
            ]
            gone = routes.deleted.get(mailbox_id, [])
            for start in range(0, max(len(changed), len(gone)), MAX_IDS):
                await self._queue.enqueue(
                    CrmWork(
                        table=work.table,
                        changed=tuple(changed[start : start + MAX_IDS]),
                        deleted=tuple(gone[start : start + MAX_IDS]),
                        mailbox_id=mailbox_id,
                        source=CrmWorkSource.ROUTED,
                        enqueued_at=work.enqueued_at,
                        traceparent=work.traceparent,
                    )
                )
                runs += 1
                queued = [(r, versions.get(r)) for r in changed[start : start + MAX_IDS]]
                self.routed.note(mailbox_id, work.table, [*queued, *((r, None) for r in gone)])
        return runs

    async def _linking(
        self, table: str, record_id: uuid.UUID, enabled: set[str], unindexed: list[str]
    ) -> list[str]:
        """The enabled mailboxes linking the record: one index read, plus a point read in each
        mailbox whose links are not indexed yet (written before the index; the sweep indexes them)."""
        links = self._store.links
        found = await links.mailboxes_linking(table, str(record_id)) & enabled
        for mailbox_id in unindexed:
            if await links.get_by_crm(mailbox_id, table, str(record_id)) is not None:
                found.add(mailbox_id)
        return sorted(found)

    async def by_filter(
        self, table: str, mailboxes: Iterable[Mailbox], ids: list[uuid.UUID], routes: Routes
    ) -> None:
        """Add to ``routes`` the mailboxes whose own filter selects changed records they were not
        routed for (neither owner, party nor link).

        Cost: the users' filters are read as each user (Dataverse shows a user's personal filters to
        that user alone, so no single query lists everyone's), once per mailbox and table per
        ``filter_ttl_seconds`` (the worker's cache; a filter edited in Dynamics routes within that
        time, as the run's own cache, :mod:`shared.sync.user_reads`): at 10,000 mailboxes about 10,000
        reads per TTL and table, however many changes there are. Per routed batch (up to ``MAX_IDS``
        ids), only the mailboxes with a filter that can reach beyond ownership and attendance
        (:func:`~shared.sync.crm_filter.reaches_beyond_the_user`; Dynamics' defaults cannot) cost
        one impersonated FetchXML per such filter and 50 ids: that grows with those mailboxes, not
        with the records of a batch. At most ``_FILTER_READS_AT_ONCE`` mailboxes are asked at a time.
        The run evaluates the filter again: routing only decides who is asked."""
        kind = TABLES[table]

        async def selected(mailbox: Mailbox) -> set[uuid.UUID]:
            routed = set(routes.changed.get(mailbox.mailbox_id, ()))
            missing = [record_id for record_id in ids if record_id not in routed]
            if not missing or not kind_enabled(mailbox.settings, kind):
                return set()
            try:
                return await self._selected_by_filter(mailbox, table, missing)
            except CrmError as error:
                if error.retryable:
                    raise  # throttled or unavailable: the routing work is retried
                # One user's state (disabled, removed, a filter Dataverse refuses) never stops
                # the routing of everyone else; that mailbox's own runs report it.
                logger.warning("routing by filter skipped a mailbox: %s", type(error).__name__)
                return set()

        chosen = list(mailboxes)
        found = await bounded_gather((selected(mailbox) for mailbox in chosen), _FILTER_READS_AT_ONCE)
        for mailbox, members in zip(chosen, found, strict=True):
            for record_id in ids:
                if record_id in members:
                    routes.add([mailbox.mailbox_id], record_id, deleted=False)

    async def _selected_by_filter(self, mailbox: Mailbox, table: str, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        replacement = mailbox.settings.filter_for(TABLES[table])
        filters = [replacement] if replacement is not None else await self._user_filters(mailbox, table)
        wide = [f for f in filters or () if reaches_beyond_the_user(f, table)]
        if not wide:
            return set()
        return await members_of(self._crm, table, wide, caller=mailbox.crm_caller_object_id, ids=ids)

    async def _user_filters(self, mailbox: Mailbox, table: str) -> list[str] | None:
        """The user's Outlook filters of ``table``, read as the user at most once per TTL."""
        return await self._filters.get(
            (mailbox.mailbox_id, table),
            lambda: user_filters(
                self._crm, table, user_id=uuid.UUID(mailbox.crm_user_id), caller=mailbox.crm_caller_object_id
            ),
        )

    async def people(self, table: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, RecordPeople]:
        """Owner and user parties of each record, read as the application (a gone record: absent):
        one request per 50 records, an appointment's party rows expanded in it."""
        found: dict[uuid.UUID, RecordPeople] = {}
        expand = _PARTIES_EXPAND if table == "appointment" else None
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            where = _any(_PRIMARY[table], chunk)
            select = ["_ownerid_value"]
            rows = await self._crm.query(table, where=where, select=select, caller=None, expand=expand)
            for row in rows:
                owner = row.get("_ownerid_value")
                parties = frozenset(
                    uuid.UUID(str(party["_partyid_value"]))
                    for party in row.get(_PARTIES, ())
                    if party.get("_partyid_value") and party.get("participationtypemask") in _ROUTED_PARTIES
                )
                etag = row.get("@odata.etag")
                found[uuid.UUID(str(row[_PRIMARY[table]]))] = RecordPeople(
                    uuid.UUID(owner) if owner else None, parties, str(etag) if etag else None
                )
        return found
