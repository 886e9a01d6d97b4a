"""An in-memory CRM, mailboxes and link store, and an applier that runs the planner's actions on them:
the harness of the planner's scenario tests (tests/sync/test_planner.py) only.

The planner is pure, so this is how vdirsyncer tests its sync algorithm: plain dicts stand in for
the two servers, with the semantics the planner relies on - versions that change on every write,
``If-Match`` preconditions, upsert by id, server-assigned Outlook ids.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

from shared.domain.model import Appointment, Contact, Email, ItemKind, Task
from shared.sync.fieldmaps import CrmValue, crm_record_id, field_map, natural_key
from shared.sync.plan import (
    Action,
    Conflict,
    CreateInCrm,
    CreateInOutlook,
    CrmState,
    DeleteInCrm,
    DeleteInOutlook,
    DropLink,
    GoneReason,
    Link,
    OutlookState,
    Skip,
    SyncPolicy,
    UnlinkOnly,
    UpdateCrm,
    UpdateOutlook,
    WriteLink,
)
from shared.sync.planner import plan_item

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
USER = "crm-user-1"
Neutral = Contact | Appointment | Task | Email


class PreconditionFailedError(Exception):
    """412: the version given in If-Match is not the current one."""


@dataclass
class Record:
    values: dict[str, CrmValue]
    etag: str
    owner: str


@dataclass
class Item:
    item: Neutral
    change_key: str
    tracked: bool = True
    crm_id: uuid.UUID | None = None  # the CRM id stamped on the item (extended property)


@dataclass
class Mailbox:
    mailbox_id: str
    user: str
    items: dict[str, Item] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)  # by Outlook id

    def link_of_record(self, record_id: uuid.UUID) -> Link | None:
        return next((link for link in self.links.values() if link.crm_id == record_id), None)


@dataclass
class World:
    kind: ItemKind
    policy: SyncPolicy = field(default_factory=SyncPolicy)
    records: dict[uuid.UUID, Record] = field(default_factory=dict)
    mailboxes: dict[str, Mailbox] = field(default_factory=dict)
    log: list[Action] = field(default_factory=list)
    crash_before_links: bool = False
    unread: frozenset[str] = frozenset()
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def version(self, prefix: str) -> str:
        return f"{prefix}{next(self._versions)}"

    def mailbox(self, mailbox_id: str = "mbx-1", user: str = USER) -> Mailbox:
        return self.mailboxes.setdefault(mailbox_id, Mailbox(mailbox_id, user))

    # -- what users do ------------------------------------------------------------------------

    def outlook_create(self, mailbox: Mailbox, item: Neutral) -> str:
        item_id = self.version("AAMk=/+")  # Graph ids carry / + =
        mailbox.items[item_id] = Item(item, self.version("ck"))
        return item_id

    def outlook_edit(self, mailbox: Mailbox, item_id: str, **changes: Any) -> None:
        entry = mailbox.items[item_id]
        entry.item = entry.item.model_copy(update=changes)
        entry.change_key = self.version("ck")

    def crm_create(self, values: dict[str, CrmValue], owner: str = USER) -> uuid.UUID:
        record_id = uuid.UUID(int=next(self._versions))
        self.records[record_id] = Record(dict(values), self.version("W/"), owner)
        return record_id

    def crm_edit(self, record_id: uuid.UUID, **values: CrmValue) -> None:
        record = self.records[record_id]
        record.values.update(values)
        record.etag = self.version("W/")

    # -- states the caller hands the planner -------------------------------------------------

    def outlook_state(self, mailbox: Mailbox, item_id: str) -> OutlookState:
        entry = mailbox.items.get(item_id)
        if entry is None:
            return OutlookState(item_id, gone=GoneReason.DELETED)
        gone = None if entry.tracked else GoneReason.UNTRACKED
        return OutlookState(item_id, entry.change_key, entry.item, gone, entry.crm_id)

    def crm_state(self, mailbox: Mailbox, record_id: uuid.UUID) -> CrmState:
        record = self.records.get(record_id)
        if record is None:
            return CrmState(record_id, None)
        # Like a $select: every mapped column comes back, null where the record has no value,
        # except the columns this CRM adapter does not read back (``unread``).
        columns = [column for column in field_map(self.kind).columns if column not in self.unread]
        values = {column: record.values.get(column) for column in columns}
        return CrmState(record_id, values, record.etag, record.owner == mailbox.user)

    # -- one full reconciliation pass of a mailbox (links, then Outlook, then CRM) -------------

    def sync(
        self, mailbox: Mailbox, *, pull_crm: bool = True, crash_before_links: bool = False
    ) -> list[Action]:
        """``pull_crm``: route every unlinked CRM record to this mailbox (a filter that takes all).
        ``crash_before_links``: every plan stops before its link write, as if the worker died."""
        self.crash_before_links = crash_before_links
        done: list[Action] = []
        for link in list(mailbox.links.values()):
            done += self.run(
                mailbox,
                outlook=self.outlook_state(mailbox, link.outlook_id),
                link=link,
                crm=self.crm_state(mailbox, link.crm_id),
            )
        for item_id, entry in list(mailbox.items.items()):
            if item_id in mailbox.links or not entry.tracked:
                continue
            # A stamped item finds its record even without a link (a lost link write).
            record_id = entry.crm_id or crm_record_id(
                self.kind, natural_key(mailbox.mailbox_id, item_id, entry.item)
            )
            done += self.run(
                mailbox,
                outlook=self.outlook_state(mailbox, item_id),
                link=mailbox.link_of_record(record_id),  # the link looked up by the CRM side
                crm=self.crm_state(mailbox, record_id),
            )
        if pull_crm and field_map(self.kind).blank is not None:
            for record_id in list(self.records):
                if mailbox.link_of_record(record_id) is None:
                    # An Outlook item stamped with the record's id is its copy, linked or not.
                    stamped = [
                        i for i, entry in mailbox.items.items() if entry.crm_id == record_id and entry.tracked
                    ]
                    outlook = self.outlook_state(mailbox, stamped[0]) if stamped else None
                    done += self.run(
                        mailbox, outlook=outlook, link=None, crm=self.crm_state(mailbox, record_id)
                    )
        return done

    def run(
        self, mailbox: Mailbox, *, outlook: OutlookState | None, link: Link | None, crm: CrmState | None
    ) -> list[Action]:
        actions = plan_item(
            self.kind,
            mailbox_id=mailbox.mailbox_id,
            outlook=outlook,
            link=link,
            crm=crm,
            policy=self.policy,
            now=NOW,
        )
        self.apply(mailbox, actions)
        return actions

    # -- the applier --------------------------------------------------------------------------

    def apply(self, mailbox: Mailbox, actions: list[Action]) -> None:
        written_item: tuple[str, str] | None = None  # (Outlook id, change key) of this plan's write
        written_etag: str | None = None
        for action in actions:
            if self.crash_before_links and isinstance(action, WriteLink | UnlinkOnly | DropLink):
                return
            self.log.append(action)
            match action:
                case CreateInCrm(record_id=record_id, values=values, then_update=later):
                    record = self.records.get(record_id)
                    if record is None:  # replaying a create upserts
                        self.records[record_id] = record = Record({}, "", mailbox.user)
                    record.values.update(values | later)
                    record.etag = written_etag = self.version("W/")
                case UpdateCrm(record_id=record_id, values=values, if_match=if_match):
                    record = self.records[record_id]
                    if if_match is not None and if_match != record.etag:
                        raise PreconditionFailedError(str(record_id))
                    record.values.update(values)
                    record.etag = written_etag = self.version("W/")
                case DeleteInCrm(record_id=record_id):
                    self.records.pop(record_id, None)
                case CreateInOutlook(item=item, crm_id=crm_id):
                    item_id = self.outlook_create(mailbox, item)
                    mailbox.items[item_id].crm_id = crm_id
                    written_item = (item_id, mailbox.items[item_id].change_key)
                case UpdateOutlook(item_id=item_id, item=item, if_match=if_match):
                    entry = mailbox.items[item_id]
                    if if_match is not None and if_match != entry.change_key:
                        raise PreconditionFailedError(item_id)
                    entry.item = item
                    entry.change_key = self.version("ck")
                    written_item = (item_id, entry.change_key)
                case DeleteInOutlook(item_id=item_id):
                    mailbox.items.pop(item_id, None)
                case WriteLink(link=new_link, outlook_from_write=from_outlook, crm_from_write=from_crm):
                    if from_outlook:
                        assert written_item is not None
                        new_link = dataclasses.replace(
                            new_link, outlook_id=written_item[0], outlook_change_key=written_item[1]
                        )
                    if from_crm:
                        assert written_etag is not None
                        new_link = dataclasses.replace(new_link, crm_etag=written_etag)
                    stale = [key for key, old in mailbox.links.items() if old.crm_id == new_link.crm_id]
                    for key in stale:
                        del mailbox.links[key]
                    mailbox.links[new_link.outlook_id] = new_link
                case UnlinkOnly(outlook_id=outlook_id, tombstone=tombstone) if tombstone is not None:
                    mailbox.links[outlook_id] = tombstone  # the CRM's delete stands; the item is kept
                case UnlinkOnly(outlook_id=outlook_id, kept=kept):
                    mailbox.links.pop(outlook_id, None)
                    kept_item = mailbox.items.get(outlook_id)
                    if kept_item is not None and kept == "outlook":
                        kept_item.tracked = False  # the applier untracks what it keeps only in Outlook
                case DropLink(outlook_id=outlook_id):
                    mailbox.links.pop(outlook_id, None)
                case Conflict() | Skip():
                    pass
