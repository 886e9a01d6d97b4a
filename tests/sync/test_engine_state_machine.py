"""The real engine under random edits and faults: a Hypothesis state machine over MailboxSyncJob (and
the Applier it runs) on the in-memory store, the in-memory CRM and the in-memory Outlook.

vdirsyncer's approach (tests/unit/sync/test_sync.py), on the engine itself instead of a stand-in: users
create, edit and delete contacts, appointments, tasks and tracked mail on both sides; syncs run with
faults armed - a 412 or 429 inside a CRM batch, throttled Graph calls, an expired delta token, a link
write that is lost or that raises after it was written, a lease lost to another worker, a crash
before any step k of the commit order (CRM, Outlook, link rows). A faulted run may fail (the queue
retries it); nothing may be lost or duplicated for it.

After a quiet sync (every fault off; a full resync of each resource, since changes made in the CRM
reach the engine through the Outlook side's re-read until CRM change tracking syncs them; then delta
runs until one reports no work) the machine checks:

- a further full resync has nothing left to do;
- every link points at a live Outlook item in scope and a live CRM record, once each side;
- every Outlook item in scope is linked, to the record its stamp or deterministic id names; no other
  record derived from it exists (nothing duplicated);
- linked items agree with their records in every column the field maps sync towards the CRM or both
  ways (tasks' status maps lossily: a Canceled CRM task shows as completed in To Do);
- nothing lost: the engine deleted a CRM record only when the user removed (deleted, filed away,
  untracked) the Outlook item it derives from, and an Outlook item only when a CRM user deleted its
  record.

Two engine gaps this machine found are closed and asserted: a record deleted in the CRM whose
Outlook item the delete policy keeps stays deleted (a tombstone link; no later read re-creates it),
and a full read drops the link of a message deleted or filed away before it.

CRM-side edits touch two-way columns only: an edit of a ``to_crm`` column stays in the CRM by design.
Records created in the CRM are never linked (the CRM -> Outlook direction is its own issue) and
never touched. A second mailbox syncs mail only, so copies of one message in two mailboxes meet one
CRM email. The mass-delete brake is off (ratio 1.0): it has its own tests in tests/engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from shared.crm.errors import CrmError
from shared.domain.mailbox_settings import MailboxSettings, OutlookDeletePolicy, TieBreak
from shared.domain.model import (
    Appointment,
    Contact,
    Email,
    EmailAddress,
    Importance,
    ItemKind,
    Task,
    TaskStatus,
)
from shared.outlook.errors import GraphError
from shared.store import open_memory_store
from shared.store.errors import LeaseHeld, LeaseLost
from shared.store.ports import Store
from shared.store.records import AuditRecord, Lease
from shared.store.records import Link as StoredLink
from shared.sync.fieldmaps import canonical_crm_value, crm_record_id, field_map, natural_key
from shared.sync.fieldmaps.task import STATE_OF_STATUS
from shared.sync.job import MailboxSyncJob
from shared.sync.run import JobOptions, SyncRunReport
from tests.fakes.crm import FakeCrm
from tests.fakes.outlook import CALENDAR, CONTACTS, FakeItem, FakeOutlook

T = TypeVar("T")
START = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
KINDS = tuple(ItemKind)
TRACKED = "Tracked to Dynamics 365"
INBOX, ARCHIVE = "inbox", "archive"
# Columns that hold activity parties: written, never read back (see shared.sync.applier).
PARTY_COLUMNS = frozenset({"from", "to", "cc", "bcc", "organizer", "requiredattendees", "optionalattendees"})
CRM_WRITES = frozenset({"upsert", "create", "delete", "apply_batch"})
OUTLOOK_WRITES = frozenset(
    {
        "create_contact",
        "update_contact",
        "delete_contact",
        "create_event",
        "update_event",
        "delete_event",
        "create_task",
        "update_task",
        "delete_task",
        "set_message_categories",
    }
)


class Crash(Exception):
    """The worker died here (an exception injected between two steps of the commit order)."""


class LinkWriteLost(Exception):
    """The link store answered with an error although the write was made (a timeout after commit)."""


class Clock:
    """Test time: one second passes on every reading, so leases are renewed within a run."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


class Tripwire:
    """Counts the writes of the commit order (CRM, Outlook, link rows) and raises :class:`Crash` before
    the armed one."""

    def __init__(self) -> None:
        self.countdown: int | None = None
        self.active = False  # only the job's writes count, not the users'

    def step(self, name: str) -> None:
        if self.countdown is None or not self.active:
            return
        if self.countdown == 0:
            self.countdown = None
            raise Crash(name)
        self.countdown -= 1

    def crm(self, call: str) -> None:
        if call in CRM_WRITES:
            self.step(f"crm.{call}")

    def outlook(self, call: str) -> None:
        if call in OUTLOOK_WRITES:
            self.step(f"outlook.{call}")


class FlakyLinks:
    """The link store with a lost write (dropped without a word) or an error after the write."""

    def __init__(self, inner: Any, tripwire: Tripwire) -> None:
        self._inner = inner
        self._tripwire = tripwire
        self.drop_next = False
        self.raise_after_next = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _write(self, name: str, write: Callable[[], Awaitable[T]], dropped: T) -> T:
        self._tripwire.step(f"links.{name}")
        if self.drop_next:
            self.drop_next = False
            return dropped
        result = await write()
        if self.raise_after_next:
            self.raise_after_next = False
            raise LinkWriteLost(name)
        return result

    async def create(self, link: StoredLink) -> StoredLink:
        return await self._write("create", lambda: self._inner.create(link), link)

    async def update(self, link: StoredLink) -> StoredLink:
        return await self._write("update", lambda: self._inner.update(link), link)

    async def create_many(self, links: Sequence[StoredLink]) -> list[StoredLink]:
        return await self._write("create_many", lambda: self._inner.create_many(links), list(links))

    async def update_many(self, links: Sequence[StoredLink]) -> None:
        await self._write("update_many", lambda: self._inner.update_many(links), None)

    async def delete(self, link: StoredLink) -> None:
        await self._write("delete", lambda: self._inner.delete(link), None)

    async def move_outlook_id(self, link: StoredLink, new_outlook_id: str) -> StoredLink:
        return await self._write("move", lambda: self._inner.move_outlook_id(link, new_outlook_id), link)


class RecordedAudit:
    """The audit trail, with every record also kept in order for the checks."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.records: list[AuditRecord] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def append(self, record: AuditRecord) -> None:
        self.records.append(record)
        await self._inner.append(record)

    async def append_many(self, records: Sequence[AuditRecord]) -> None:
        self.records.extend(records)
        await self._inner.append_many(records)


class LosableLeases:
    """The sync state store whose next lease renewal finds the lease taken over."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.lose_next = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def renew(self, lease: Lease, seconds: int) -> Lease:
        if self.lose_next:
            self.lose_next = False
            raise LeaseLost
        renewed: Lease = await self._inner.renew(lease, seconds)
        return renewed


# -- what users write -----------------------------------------------------------------------------

_words = st.text(alphabet="abcxyz", min_size=1, max_size=6)
_optional = st.one_of(st.none(), _words)
_addresses = st.sampled_from(["ann@fabrikam.example", "bob@fabrikam.example", "cy@fabrikam.example"])

_contact_fields = st.fixed_dictionaries(
    {},
    optional={
        "given_name": _optional,
        "surname": _optional,
        "job_title": _optional,
        "business_phone": _optional,
        "notes": _optional,
        "email_addresses": st.lists(_addresses, max_size=2, unique=True).map(
            lambda found: tuple(EmailAddress(address=a) for a in found)
        ),
    },
)
_contact_crm = st.fixed_dictionaries(
    {},
    optional={
        "firstname": _optional,
        "lastname": _optional,
        "jobtitle": _optional,
        "telephone1": _optional,
        "description": _optional,
    },
)
_hours = st.integers(min_value=-24 * 5, max_value=24 * 20)  # some appointments are over
_appointment_fields = st.fixed_dictionaries(
    {},
    optional={
        "subject": _optional,
        "location": _optional,
        "body": _optional,
        "importance": st.sampled_from(Importance),
        "start": _hours.map(lambda h: START + dt.timedelta(hours=h)),
    },
)
_appointment_crm = st.fixed_dictionaries(
    {}, optional={"subject": _optional, "location": _optional, "description": _optional}
)
_task_fields = st.fixed_dictionaries(
    {},
    optional={
        "subject": _optional,
        "body": _optional,
        "importance": st.sampled_from(Importance),
        "status": st.sampled_from(TaskStatus),
    },
)
_task_crm = st.fixed_dictionaries(
    {},
    optional={
        "subject": _optional,
        "description": _optional,
        "prioritycode": st.sampled_from([0, 1, 2]),
        "statuscode": st.sampled_from(sorted(STATE_OF_STATUS)),
    },
)
_CRM_EDITS: dict[ItemKind, st.SearchStrategy[dict[str, Any]]] = {
    ItemKind.CONTACT: _contact_crm,
    ItemKind.APPOINTMENT: _appointment_crm,
    ItemKind.TASK: _task_crm,
}
_SHOWN_AS = {2: TaskStatus.NOT_STARTED, 3: TaskStatus.IN_PROGRESS, 4: TaskStatus.WAITING_ON_OTHERS}
_SHOWN_AS |= {5: TaskStatus.COMPLETED, 6: TaskStatus.COMPLETED, 7: TaskStatus.DEFERRED}


def _appointment(fields: dict[str, Any], old: Appointment | None = None) -> Appointment:
    base = old or Appointment(subject="Meeting", start=START, end=START + dt.timedelta(hours=1))
    changed = base.model_copy(update=fields)
    if "start" in fields:
        changed = changed.model_copy(update={"end": fields["start"] + dt.timedelta(hours=1)})
    return changed


def _crm_fields(kind: ItemKind, values: dict[str, Any]) -> dict[str, Any]:
    if kind is ItemKind.TASK and "statuscode" in values:
        values = values | {"statecode": STATE_OF_STATUS[values["statuscode"]]}
    return values


class EngineMachine(RuleBasedStateMachine):
    """One mailbox, four kinds, both sides, and the real job between them."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.tripwire = Tripwire()
        self.crm = FakeCrm()
        self.crm.before_call = self.tripwire.crm
        self.outlook = FakeOutlook(page_size=3, clock=self.clock)
        self.outlook.before_call = self.tripwire.outlook
        self.user = self.crm.add_user()
        self.someone_else = self.crm.add_user()
        box = self.outlook.add_mailbox()
        self.mailbox_id, self.address, self.task_list = box.mailbox_id, box.address, box.default_task_list
        # A second mailbox that syncs mail only: copies of one message in two mailboxes, one CRM email.
        self.colleague = self.crm.add_user()
        self.other_box = self.outlook.add_mailbox().mailbox_id
        memory = open_memory_store(clock=self.clock)
        self.audit = RecordedAudit(memory.audit)
        self.links = FlakyLinks(memory.links, self.tripwire)
        self.leases = LosableLeases(memory.sync_state)
        self.store: Store = dataclasses.replace(
            memory, links=self.links, sync_state=self.leases, audit=self.audit
        )
        self.job = MailboxSyncJob(
            store=self.store,
            crm=self.crm,
            reader=self.outlook.reader(),  # satisfies shared.sync.ports.OutlookReader
            writer=self.outlook.writer(),  # type: ignore[arg-type]  # the job still takes the concrete writer
            options=JobOptions(lease_seconds=8, mass_delete_ratio=1.0),
            clock=self.clock,
            owner="worker:machine",
        )
        self.crm_made: set[uuid.UUID] = set()  # records created in the CRM by its users
        self.messages = 0
        self.other_lease: Lease | None = None
        self.released: set[uuid.UUID] = set()  # records whose Outlook item the user removed
        self.crm_deleted: set[uuid.UUID] = set()  # records the CRM's users deleted

    def run(self, step: Awaitable[T]) -> T:
        return self.loop.run_until_complete(step)

    def teardown(self) -> None:
        try:
            self.quiet_sync_and_check()
        finally:
            self.loop.close()

    def targets(self) -> list[tuple[str, ItemKind]]:
        """Every (mailbox, kind) the engine syncs."""
        return [(self.mailbox_id, kind) for kind in KINDS] + [(self.other_box, ItemKind.EMAIL)]

    def resource(self, mailbox_id: str, kind: ItemKind) -> str:
        return {
            ItemKind.CONTACT: f"users/{mailbox_id}/contacts",
            ItemKind.APPOINTMENT: f"users/{mailbox_id}/events",
            ItemKind.TASK: f"users/{mailbox_id}/todo/lists/{self.task_list}/tasks",
            ItemKind.EMAIL: f"users/{mailbox_id}/mailFolders('{INBOX}')/messages",
        }[kind]

    @initialize(tie_break=st.sampled_from(TieBreak), delete_policy=st.sampled_from(OutlookDeletePolicy))
    def register(self, tie_break: TieBreak, delete_policy: OutlookDeletePolicy) -> None:
        settings_ = MailboxSettings(
            tracked_category=TRACKED, conflict_tie_break=tie_break, outlook_delete_policy=delete_policy
        )
        self.run(
            self.store.registry.register(
                mailbox_id=self.mailbox_id,
                upn=self.address,
                crm_user_id=str(self.user.systemuserid),
                crm_caller_object_id=self.user.object_id,
                settings=settings_,
            )
        )
        self.run(
            self.store.registry.register(
                mailbox_id=self.other_box,
                upn=self.outlook.mailboxes[self.other_box].address,
                crm_user_id=str(self.colleague.systemuserid),
                crm_caller_object_id=self.colleague.object_id,
                settings=settings_.model_copy(update={"item_kinds": frozenset({ItemKind.EMAIL})}),
            )
        )

    # -- Outlook users ------------------------------------------------------------------------------

    def _box(self, other: bool) -> str:
        return self.other_box if other else self.mailbox_id

    def _pick(self, kind: ItemKind, pick: int, mailbox_id: str | None = None) -> FakeItem | None:
        found = self.outlook.items(mailbox_id or self.mailbox_id, kind)
        items = sorted(found.values(), key=lambda item: item.item_id)
        return items[pick % len(items)] if items else None

    @rule(fields=_contact_fields)
    def outlook_creates_contact(self, fields: dict[str, Any]) -> None:
        self.outlook.user_create(self.mailbox_id, Contact(**fields))

    @rule(fields=_appointment_fields)
    def outlook_creates_appointment(self, fields: dict[str, Any]) -> None:
        self.outlook.user_create(self.mailbox_id, _appointment(fields))

    @rule(fields=_task_fields)
    def outlook_creates_task(self, fields: dict[str, Any]) -> None:
        self.outlook.user_create(self.mailbox_id, Task(**fields))

    @rule(
        subject=_words,
        sender=_addresses,
        to=st.sampled_from(["me", "colleague", "both", "me, from me"]),
        tracked=st.tuples(st.booleans(), st.booleans()),
    )
    def mail_arrives(self, subject: str, sender: str, to: str, tracked: tuple[bool, bool]) -> None:
        """A message in one mailbox, or copies of it in both (one internetMessageId), or one the
        mailbox's user sent to an outside address (outgoing)."""
        self.messages += 1
        mine = self.address
        outgoing = to == "me, from me"
        email = Email(
            subject=subject,
            sender=EmailAddress(address=mine if outgoing else sender),
            to=(EmailAddress(address=sender if outgoing else mine),),
            sent=START,
            received=START,
            internet_message_id=f"<m{self.messages}@fabrikam.example>",
            conversation_id=f"conv-{self.messages}",
        )
        boxes = {"me": [0], "colleague": [1], "both": [0, 1], "me, from me": [0]}[to]
        for index in boxes:
            categories = (TRACKED,) if tracked[index] else ()
            mailbox_id = self._box(index == 1)
            self.outlook.user_create(mailbox_id, email, categories=categories, body=f"body {subject}")

    @rule(
        kind=st.sampled_from([ItemKind.CONTACT, ItemKind.APPOINTMENT, ItemKind.TASK]),
        pick=st.integers(0),
        data=st.data(),
    )
    def outlook_edits(self, kind: ItemKind, pick: int, data: st.DataObject) -> None:
        item = self._pick(kind, pick)
        if item is None:
            return
        content = item.content
        if isinstance(content, Contact):
            changed: Any = content.model_copy(update=data.draw(_contact_fields))
        elif isinstance(content, Appointment):
            changed = _appointment(data.draw(_appointment_fields), content)
        else:
            changed = content.model_copy(update=data.draw(_task_fields))
        self.outlook.user_update(self.mailbox_id, item.item_id, changed)

    def release(self, mailbox_id: str, item: FakeItem) -> None:
        """The user removed (deleted, filed away, untracked) an item: the engine may now delete what
        derives from it in the CRM, as the delete policy says."""
        self.released |= self.candidates(mailbox_id, item)

    @rule(kind=st.sampled_from(KINDS), pick=st.integers(0))
    def outlook_deletes(self, kind: ItemKind, pick: int) -> None:
        item = self._pick(kind, pick)
        if item is not None:
            self.release(self.mailbox_id, item)
            self.outlook.user_delete(self.mailbox_id, item.item_id)

    @rule(pick=st.integers(0), track=st.booleans(), other=st.booleans())
    def user_tracks_or_untracks(self, pick: int, track: bool, other: bool) -> None:
        item = self._pick(ItemKind.EMAIL, pick, self._box(other))
        if item is None:
            return
        kept = [c for c in item.categories if c.casefold() != TRACKED.casefold()]
        if not track:
            self.release(self._box(other), item)
        self.outlook.user_update(
            self._box(other), item.item_id, categories=[*kept, TRACKED] if track else kept
        )

    @rule(pick=st.integers(0), other=st.booleans())
    def user_files_mail_away(self, pick: int, other: bool) -> None:
        item = self._pick(ItemKind.EMAIL, pick, self._box(other))
        if item is not None and item.container == INBOX:
            self.release(self._box(other), item)
            self.outlook.user_move(self._box(other), item.item_id, ARCHIVE)

    # -- CRM users --------------------------------------------------------------------------------

    def _records(self, kind: ItemKind) -> list[uuid.UUID]:
        return sorted(self.crm.rows(field_map(kind).table))

    @rule(kind=st.sampled_from([ItemKind.CONTACT, ItemKind.APPOINTMENT, ItemKind.TASK]), data=st.data())
    def crm_user_creates(self, kind: ItemKind, data: st.DataObject) -> None:
        values = data.draw(_CRM_EDITS[kind])
        record_id = self.crm.new_id()
        self.crm_made.add(record_id)
        self.run(
            self.crm.create(
                field_map(kind).table,
                _crm_fields(kind, values),
                id=record_id,
                caller=self.someone_else.object_id,
            )
        )

    @rule(
        kind=st.sampled_from([ItemKind.CONTACT, ItemKind.APPOINTMENT, ItemKind.TASK]),
        pick=st.integers(0),
        data=st.data(),
    )
    def crm_user_edits(self, kind: ItemKind, pick: int, data: st.DataObject) -> None:
        records = self._records(kind)
        if not records:
            return
        values = data.draw(_CRM_EDITS[kind])
        self.crm.edit(field_map(kind).table, records[pick % len(records)], _crm_fields(kind, values))

    @rule(kind=st.sampled_from(KINDS), pick=st.integers(0))
    def crm_user_deletes(self, kind: ItemKind, pick: int) -> None:
        records = self._records(kind)
        if records:
            record_id = records[pick % len(records)]
            self.crm_deleted.add(record_id)
            self.crm.remove(field_map(kind).table, record_id)

    @rule(kind=st.sampled_from(KINDS), pick=st.integers(0))
    def crm_record_changes_hands(self, kind: ItemKind, pick: int) -> None:
        records = self._records(kind)
        if records:
            record = self.crm.records[(field_map(kind).table, records[pick % len(records)])]
            record.owner = self.someone_else.systemuserid
            self.crm.edit(record.table, record.id, {})

    # -- faults -----------------------------------------------------------------------------------

    @rule(status=st.sampled_from([412, 429]), op_index=st.integers(0, 4))
    def crm_batch_operation_fails(self, status: int, op_index: int) -> None:
        self.crm.inject("apply_batch", status, op_index=op_index)  # type: ignore[arg-type]

    @rule(call=st.sampled_from(["get", "get_many", "upsert", "delete", "find_by_email", "apply_batch"]))
    def crm_throttles(self, call: str) -> None:
        self.crm.inject(call, 429)  # type: ignore[arg-type]

    @rule(
        call=st.sampled_from(
            [
                "delta",
                "fetch_message_bodies",
                "set_message_categories",
                "update_contact",
                "update_event",
                "update_task",
                "delete_event",
                "set_message_categories",
            ]
        ),
        status=st.sampled_from([429, 503]),
    )
    def graph_throttles(self, call: str, status: int) -> None:
        self.outlook.inject(call, status)  # type: ignore[arg-type]

    @rule(other=st.booleans())
    def delta_tokens_expire(self, other: bool) -> None:
        self.outlook.expire_delta_tokens(self._box(other))

    @rule(raise_after=st.booleans())
    def a_link_write_goes_wrong(self, raise_after: bool) -> None:
        if raise_after:
            self.links.raise_after_next = True
        else:
            self.links.drop_next = True

    @rule(step=st.integers(0, 8))
    def crash_before_step(self, step: int) -> None:
        self.tripwire.countdown = step

    @rule()
    def lease_lost_mid_run(self) -> None:
        self.leases.lose_next = True

    @precondition(lambda self: self.other_lease is None)
    @rule()
    def another_worker_holds_the_mailbox(self) -> None:
        self.other_lease = self.run(self.leases.try_acquire(self.mailbox_id, "worker:other", 20))

    @precondition(lambda self: self.other_lease is not None)
    @rule()
    def the_other_worker_finishes(self) -> None:
        assert self.other_lease is not None
        self.run(self.leases.release(self.other_lease))
        self.other_lease = None

    _FAULTS = st.one_of(
        st.tuples(st.just("crm batch"), st.sampled_from([412, 429]), st.integers(0, 4)),
        st.tuples(st.just("crm call"), st.sampled_from(["get", "get_many", "upsert", "delete"]), st.just(0)),
        st.tuples(
            st.just("graph"),
            st.sampled_from(["delta", "fetch_message_bodies", "set_message_categories"]),
            st.just(0),
        ),
        st.tuples(st.just("link write"), st.booleans(), st.just(0)),
        st.tuples(st.just("crash"), st.integers(0, 5), st.just(0)),
        st.tuples(st.just("lease"), st.none(), st.just(0)),
    )

    @rule(fault=_FAULTS, which=st.integers(0, len(KINDS)), full=st.booleans())
    def sync_with_a_fault(self, fault: tuple[str, Any, int], which: int, full: bool) -> None:
        """One fault armed, then a run (the same faults as the rules above, more often met by a run)."""
        name, value, index = fault
        if name == "crm batch":
            self.crm_batch_operation_fails(value, index)
        elif name == "crm call":
            self.crm_throttles(value)
        elif name == "graph":
            self.graph_throttles(value, 429)
        elif name == "link write":
            self.a_link_write_goes_wrong(value)
        elif name == "crash":
            self.crash_before_step(value)
        else:
            self.lease_lost_mid_run()
        self.sync(which, full)

    # -- syncs ------------------------------------------------------------------------------------

    async def _sync(self, mailbox_id: str, kind: ItemKind, *, full: bool) -> SyncRunReport:
        if full:
            await self.store.sync_state.reset(mailbox_id, self.resource(mailbox_id, kind))
        return await self.job.run(mailbox_id, self.resource(mailbox_id, kind))

    @rule(which=st.integers(0, len(KINDS)), full=st.booleans())
    def sync(self, which: int, full: bool) -> None:
        """A queued run: an injected fault may fail it (the queue retries); nothing else may."""
        mailbox_id, kind = self.targets()[which]
        self.tripwire.active = True
        try:
            self.run(self._sync(mailbox_id, kind, full=full))
        except (Crash, LinkWriteLost, LeaseHeld, LeaseLost) as error:
            event(f"a run failed: {type(error).__name__}")
        except CrmError as error:  # one the engine should have parked is a failure
            if not (error.retryable or error.status == 412):
                raise
            event(f"a run failed: {type(error).__name__}")
        except GraphError as error:
            if error.status not in (429, 503):
                raise
            event(f"a run failed: {type(error).__name__}")
        finally:
            self.tripwire.active = False

    @rule()
    def quiet_sync_and_check(self) -> None:
        """Every fault off, sync until quiet, then the invariants of the module docstring."""
        self.crm.clear_faults()
        self.outlook.clear_faults()
        self.tripwire.countdown = None
        if self.links.drop_next or self.links.raise_after_next or self.leases.lose_next:
            event("a fault was left unused by the runs")
        self.links.drop_next = self.links.raise_after_next = False
        self.leases.lose_next = False
        if self.other_lease is not None:
            self.the_other_worker_finishes()
        for mailbox_id, kind in self.targets():
            self.settle(mailbox_id, kind)  # Outlook's own changes first: a full read lists no removed mail
            self.run(self._sync(mailbox_id, kind, full=True))  # the CRM's changes reach the engine so
            self.settle(mailbox_id, kind)
            self.assert_full_resync_is_quiet(mailbox_id, kind)
        for mailbox_id, kind in self.targets():
            self.check(mailbox_id, kind)
        self.check_nothing_lost()

    def check_nothing_lost(self) -> None:
        """The engine deleted in the CRM only what derives from an item the user removed, and in
        Outlook only items whose CRM record a CRM user deleted."""
        for _table, record_id in self.crm.deletions:
            assert record_id in self.released, (
                "the engine deleted a CRM record whose Outlook item is still there"
            )
        for mailbox_id, item in self.outlook.deletions:
            assert self.candidates(mailbox_id, item) & self.crm_deleted, (
                "the engine deleted an Outlook item whose CRM record was not deleted"
            )

    def settle(self, mailbox_id: str, kind: ItemKind) -> None:
        for _ in range(4):
            report = self.run(self._sync(mailbox_id, kind, full=False))
            if not (report.items_synced or report.crm_writes):
                return
        raise AssertionError(f"{kind.value}: delta runs kept finding work")

    def assert_full_resync_is_quiet(self, mailbox_id: str, kind: ItemKind) -> None:
        """Another full read has nothing to do: in particular it re-creates no record the CRM's users
        deleted while the delete policy kept its Outlook item (the tombstone holds)."""
        again = self.run(self._sync(mailbox_id, kind, full=True))
        assert (again.items_synced, again.crm_writes) == (0, 0), f"{kind.value}: a full resync still had work"

    # -- the invariants ---------------------------------------------------------------------------

    def in_scope(self, mailbox_id: str, kind: ItemKind) -> dict[str, FakeItem]:
        items = self.outlook.items(mailbox_id, kind)
        if kind is ItemKind.EMAIL:
            return {i: m for i, m in items.items() if m.container == INBOX and TRACKED in m.categories}
        if kind is ItemKind.TASK:
            return {i: t for i, t in items.items() if t.container == self.task_list}
        return {i: e for i, e in items.items() if e.container in (CONTACTS, CALENDAR)}

    def candidates(self, mailbox_id: str, item: FakeItem) -> set[uuid.UUID]:
        """The records an Outlook item may be linked to: its stamp, and its deterministic id."""
        found = {crm_record_id(item.kind, natural_key(mailbox_id, item.item_id, item.content))}
        if item.crm_id:
            found.add(uuid.UUID(item.crm_id))
        return found

    def adoptable(self, mailbox_id: str, item: FakeItem) -> set[uuid.UUID]:
        """Existing records the engine adopts for an item (shared.sync.adoption): for a contact, the
        contacts the mailbox's user owns that hold its first email address."""
        content = item.content
        if not isinstance(content, Contact) or not content.email_addresses:
            return set()
        address = content.email_addresses[0].address.casefold()
        owner = self.user.systemuserid if mailbox_id == self.mailbox_id else self.colleague.systemuserid
        return {
            record_id
            for record_id, record in self.crm.rows("contact").items()
            if record.owner == owner
            and any(
                str(record.columns.get(column) or "").casefold() == address
                for column in ("emailaddress1", "emailaddress2", "emailaddress3")
            )
        }

    def check(self, mailbox_id: str, kind: ItemKind) -> None:
        table = field_map(kind).table
        links = self.run(self._links(mailbox_id, kind))
        items = self.in_scope(mailbox_id, kind)
        records = self.crm.rows(table)
        crm_ids = [uuid.UUID(link.crm_id) for link in links]
        assert len(set(crm_ids)) == len(crm_ids), f"{kind.value}: two items linked to one record"
        for link in links:
            assert link.outlook_id in items, (
                f"{kind.value}: a link to an Outlook item that is gone or out of scope"
            )
            if link.crm_deleted:  # a tombstone: the CRM's users deleted the record, the item is kept
                assert kind is not ItemKind.EMAIL, "a tombstone for mail (mail is untracked instead)"
                assert uuid.UUID(link.crm_id) in self.crm_deleted, "a tombstone of a record nobody deleted"
                assert uuid.UUID(link.crm_id) not in records, "a tombstone of a record that exists"
                event("a CRM delete stands: tombstone")
                continue
            assert uuid.UUID(link.crm_id) in records, f"{kind.value}: a link to a CRM record that is gone"
        tombstones = {link.outlook_id for link in links if link.crm_deleted}
        linked = {link.outlook_id: uuid.UUID(link.crm_id) for link in links}
        for item_id, item in items.items():
            adoptable = self.adoptable(mailbox_id, item)
            assert item_id in linked, f"{kind.value}: an Outlook item in scope is not linked"
            derived = self.candidates(mailbox_id, item)
            assert linked[item_id] in derived | adoptable, (
                f"{kind.value}: linked to a record not derived from it"
            )
            assert not (derived - {linked[item_id]}) & set(records), (
                f"{kind.value}: two CRM records for one item"
            )
            if item_id in tombstones:
                continue
            self.assert_agree(mailbox_id, kind, item, records[linked[item_id]].columns)
        assert not (self.crm_made & set(crm_ids)), "a record made in the CRM got linked"

    async def _links(self, mailbox_id: str, kind: ItemKind) -> list[StoredLink]:
        return [link async for link in self.store.links.list_links(mailbox_id, kind)]

    def assert_agree(self, mailbox_id: str, kind: ItemKind, item: FakeItem, columns: dict[str, Any]) -> None:
        fmap = field_map(kind)
        content = self.outlook.outlook_item(self.outlook.mailboxes[mailbox_id], item).item
        assert content is not None
        if isinstance(content, Email) and item.body is not None:  # the body the job fetched
            content = content.model_copy(
                update={"body": item.body.content, "body_is_html": item.body.is_html}
            )
        projected = fmap.project(content).values
        directions = fmap.directions({})
        lossy = {"statuscode", "statecode", "percentcomplete"} if kind is ItemKind.TASK else set()
        for column in fmap.columns:
            if column in PARTY_COLUMNS or column in lossy or directions.get(column) is None:
                continue
            if directions[column].value not in ("two_way", "to_crm"):
                continue
            assert projected.get(column) == canonical_crm_value(columns.get(column)), (
                f"{kind.value}.{column} differs between Outlook and the CRM"
            )
        if kind is ItemKind.TASK:
            assert isinstance(item.content, Task)
            status = columns["statuscode"]
            assert columns["statecode"] == STATE_OF_STATUS[status], "a task status reason outside its state"
            assert _SHOWN_AS[status] is item.content.status, "To Do does not show the CRM task status"


EngineMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestEngineStateMachine = EngineMachine.TestCase
