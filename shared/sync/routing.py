"""Routing: which mailboxes a CRM change concerns, and one queued run per mailbox.

A changed record concerns the mailbox of its owner, the mailboxes of its activity parties that are
registered users (organizer, required and optional attendees), and every mailbox that already links
it (its reverse link rows): that last one is how a record that left a user's filter, changed hands or
was deleted reaches the mailbox holding its copy. A deleted record concerns only the mailboxes that
link it. Whether a record then belongs in a mailbox is not decided here but by the run, with the
user's synchronization filter (:mod:`shared.sync.crm_filter`).

The owner and the parties are read as the application (the routing step sees every record); the
run reads as the user.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shared.crm.port import CrmQueryPort
from shared.store.crm_jobs import MAX_IDS, CrmWork, CrmWorkQueue, CrmWorkSource
from shared.store.ports import Store
from shared.sync.crm_filter import OPTIONAL_ATTENDEE, ORGANIZER, REQUIRED_ATTENDEE

_PRIMARY = {"contact": "contactid", "task": "activityid", "appointment": "activityid"}
_ROUTED_PARTIES = (ORGANIZER, REQUIRED_ATTENDEE, OPTIONAL_ATTENDEE)
_IDS_PER_QUERY = 50


@dataclass(frozen=True, slots=True)
class RecordPeople:
    """Who a changed record names: its owner and the users among its activity parties."""

    owner: uuid.UUID | None = None
    parties: frozenset[uuid.UUID] = frozenset()


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

    def __init__(self, *, store: Store, crm: CrmQueryPort, queue: CrmWorkQueue) -> None:
        self._store = store
        self._crm = crm
        self._queue = queue

    async def route(self, work: CrmWork) -> int:
        """Enqueue one run per concerned mailbox; the number of runs enqueued."""
        mailboxes = [m async for m in self._store.registry.list_mailboxes(enabled_only=True)]
        users = {uuid.UUID(m.crm_user_id): m.mailbox_id for m in mailboxes}
        people = await self.people(work.table, list(work.changed))
        if work.owner is not None:
            for record_id in work.changed:
                known = people.get(record_id, RecordPeople())
                people[record_id] = RecordPeople(known.owner or work.owner, known.parties)
        routes = Routes()
        for deleted, ids in ((False, work.changed), (True, work.deleted)):
            for record_id in ids:
                linked = [
                    m.mailbox_id
                    for m in mailboxes
                    if await self._store.links.get_by_crm(m.mailbox_id, work.table, str(record_id))
                    is not None
                ]
                concerned = (
                    linked if deleted else mailboxes_for(people.get(record_id, RecordPeople()), users, linked)
                )
                routes.add(concerned, record_id, deleted=deleted)
        runs = 0
        for mailbox_id in sorted(set(routes.changed) | set(routes.deleted)):
            changed, gone = routes.changed.get(mailbox_id, []), routes.deleted.get(mailbox_id, [])
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
        return runs

    async def people(self, table: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, RecordPeople]:
        """Owner and user parties of each record, read as the application (a gone record: absent)."""
        found: dict[uuid.UUID, RecordPeople] = {}
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            rows = await self._crm.query(
                table, where=_any(_PRIMARY[table], chunk), select=["_ownerid_value"], caller=None
            )
            for row in rows:
                owner = row.get("_ownerid_value")
                found[uuid.UUID(str(row[_PRIMARY[table]]))] = RecordPeople(
                    uuid.UUID(owner) if owner else None
                )
            if table != "appointment":
                continue
            masks = " or ".join(f"participationtypemask eq {mask}" for mask in _ROUTED_PARTIES)
            where = f"{_any('_activityid_value', chunk)} and ({masks})"
            parties = await self._crm.query(
                "activityparty", where=where, select=["_activityid_value", "_partyid_value"], caller=None
            )
            for row in parties:
                activity, party = row.get("_activityid_value"), row.get("_partyid_value")
                if activity and party:
                    key = uuid.UUID(str(activity))
                    known = found.get(key, RecordPeople())
                    found[key] = RecordPeople(known.owner, known.parties | {uuid.UUID(str(party))})
        return found
