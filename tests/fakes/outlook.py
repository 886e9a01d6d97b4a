"""An in-memory Outlook: mailboxes in dicts behind the two faces the sync job uses, a
:class:`FakeDeltaReader` (what :class:`shared.outlook.delta.DeltaReader` does) and a
:class:`FakeOutlookWriter` (what :class:`shared.outlook.writers.OutlookWriter` does). Tests only.

tests/contract/test_outlook_contract.py runs the same behaviours against these and against the real
reader and writer on the Graph simulator. What they keep of Graph ("Use delta query to track
changes in Microsoft Graph data", learn.microsoft.com/graph/delta-query-overview):

- a delta round pages (``next_link``) until a page carries the ``delta_link``; a first round lists
  what is there, a later one what changed since its link, the latest state of each item once, and
  ``removed`` entries for items deleted (or moved out of the folder / the calendar window);
- message delta is per mail folder; calendar delta is a ``calendarView`` window fixed by the first
  round and reports no CRM id stamp (no ``$expand`` there); To Do tasks carry no stamp and no
  change key;
- every write gives the item a new change key; the stamp is an extended property written
  with a create (or an update);
- message bodies are read only by ``fetch_message_bodies`` (``None`` for a deleted message).

Fault injection (:meth:`FakeOutlook.inject`): the next call of a named reader/writer method raises
:class:`GraphThrottled` (429 or 503: what msgraph-core raises once its retries gave up);
:meth:`FakeOutlook.expire_delta_tokens` makes every link issued so far raise
:class:`DeltaTokenExpired`, as Graph's 410 ``syncStateNotFound``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from shared.domain.model import (
    Appointment,
    Contact,
    Email,
    EmailAddress,
    EventKind,
    ItemKind,
    OutlookItem,
    Task,
    TaskStatus,
)
from shared.outlook.delta import DeltaPage, MessageBody
from shared.outlook.errors import DeltaTokenExpired, GraphError, GraphThrottled, ItemNotFound
from shared.outlook.writers import STAMPABLE_KINDS

Content = Contact | Appointment | Task | Email
FaultStatus = Literal[429, 503]
CONTACTS = "contacts"
CALENDAR = "calendar"
_LINK = "https://fake.graph/v1.0/delta"
_NAMESPACE = uuid.UUID("0b7e4f9c-3d21-4a8e-b5c6-7f1e2d3c4b5a")


@dataclass
class FakeItem:
    """One item as the mailbox holds it."""

    item_id: str
    kind: ItemKind
    container: str  # mail folder, To Do list, "contacts" or "calendar"
    content: Content
    change_key: str
    seq: int
    categories: tuple[str, ...] = ()
    crm_id: str | None = None
    body: MessageBody | None = None  # messages only


@dataclass
class FakeMailbox:
    mailbox_id: str
    address: str
    default_task_list: str
    items: dict[str, FakeItem] = field(default_factory=dict)
    removed: dict[str, tuple[str, int]] = field(default_factory=dict)  # item id -> (container, seq)
    # where each item was at a seq: a move out of a container reports it removed there
    left: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    generation: int = 0
    master_categories: list[str] = field(default_factory=list)


@dataclass
class _Round:
    """A delta round in progress: the ids still to list and the link that ends it."""

    mailbox_id: str
    collection: str
    pending: list[str]
    removed: list[str]
    delta_link: str
    window: tuple[dt.datetime, dt.datetime] | None


class FakeOutlook:
    """All fake mailboxes; a user's own edits go through the ``user_*`` methods."""

    def __init__(self, *, page_size: int = 200, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.page_size = page_size
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        #: Called with the method's name before every reader/writer call (a test's tripwire: it may raise).
        self.before_call: Callable[[str], None] | None = None
        #: Items the writer deleted (mailbox id, the item as it was), in order.
        self.deletions: list[tuple[str, FakeItem]] = []
        self.mailboxes: dict[str, FakeMailbox] = {}
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)  # ids Graph chooses: deterministic, so runs repeat
        self._rounds: dict[str, _Round] = {}
        self._faults: list[tuple[str, FaultStatus]] = []
        self.calls: list[str] = []

    # -- set-up, user edits, inspection ---------------------------------------------------------

    def add_mailbox(self, mailbox_id: str | None = None, address: str | None = None) -> FakeMailbox:
        mailbox_id = mailbox_id or str(uuid.uuid5(_NAMESPACE, f"mailbox {next(self._ids)}"))
        box = FakeMailbox(
            mailbox_id, address or f"user-{mailbox_id[:8]}@sim.crmsync.test", f"list-{next(self._ids)}"
        )
        self.mailboxes[mailbox_id] = box
        return box

    def _next(self) -> int:
        return next(self._seq)

    def _new_id(self) -> str:
        return f"AAMkAG{uuid.uuid5(_NAMESPACE, str(next(self._ids))).hex}="  # ids carry base64 characters

    def _new_ical_uid(self) -> str:
        return (
            "040000008200E00074C5B7101A82E008" + uuid.uuid5(_NAMESPACE, str(next(self._ids))).hex[:28].upper()
        )

    def _touch(self, item: FakeItem) -> None:
        item.seq = self._next()
        item.change_key = f"ck{item.seq}"

    def user_create(
        self,
        mailbox_id: str,
        content: Content,
        *,
        folder: str = "inbox",
        categories: Sequence[str] = (),
        body: str | None = None,
        task_list: str | None = None,
    ) -> str:
        """The user (or a sender) creates an item; messages land in ``folder``."""
        box = self.mailboxes[mailbox_id]
        kind = content.kind
        container = {
            ItemKind.CONTACT: CONTACTS,
            ItemKind.APPOINTMENT: CALENDAR,
            ItemKind.TASK: task_list or box.default_task_list,
            ItemKind.EMAIL: folder,
        }[kind]
        item = FakeItem(self._new_id(), kind, container, content, "", 0, tuple(categories))
        if isinstance(content, Appointment):
            item.content = self._as_graph_keeps_event(box, content, None)
        if isinstance(content, Contact):
            item.content = self._as_graph_keeps_contact(content)
        if isinstance(content, Task):
            item.content = self._as_graph_keeps_task(content, None, self.clock())
        if isinstance(content, Email):
            item.body = MessageBody(body or content.body or "", is_html=False)
            item.content = content.model_copy(update={"body": None, "body_is_html": False})
        self._touch(item)
        box.items[item.item_id] = item
        return item.item_id

    def user_update(
        self,
        mailbox_id: str,
        item_id: str,
        content: Content | None = None,
        *,
        categories: Sequence[str] | None = None,
    ) -> None:
        item = self.mailboxes[mailbox_id].items[item_id]
        if content is not None:
            item.content = content
        if categories is not None:
            item.categories = tuple(categories)
        self._touch(item)

    def user_move(self, mailbox_id: str, item_id: str, folder: str) -> None:
        box = self.mailboxes[mailbox_id]
        item = box.items[item_id]
        box.left.setdefault(item_id, []).append((item.container, self._next()))
        item.container = folder
        self._touch(item)

    def user_delete(self, mailbox_id: str, item_id: str) -> None:
        box = self.mailboxes[mailbox_id]
        item = box.items.pop(item_id)
        box.removed[item_id] = (item.container, self._next())

    def item(self, mailbox_id: str, item_id: str) -> FakeItem | None:
        return self.mailboxes[mailbox_id].items.get(item_id)

    def items(self, mailbox_id: str, kind: ItemKind) -> dict[str, FakeItem]:
        return {i: item for i, item in self.mailboxes[mailbox_id].items.items() if item.kind is kind}

    def inject(self, call: str, status: FaultStatus = 429) -> None:
        """The next call of reader/writer method ``call`` raises :class:`GraphThrottled`."""
        self._faults.append((call, status))

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def pending_faults(self) -> int:
        return len(self._faults)

    def expire_delta_tokens(self, mailbox_id: str) -> None:
        self.mailboxes[mailbox_id].generation += 1

    def _enter(self, call: str) -> None:
        self.calls.append(call)
        if self.before_call is not None:
            self.before_call(call)
        for fault in self._faults:
            if fault[0] == call:
                self._faults.remove(fault)
                status = fault[1]
                raise GraphThrottled(
                    "Too many requests" if status == 429 else "Service unavailable",
                    status=status,
                    code="TooManyRequests" if status == 429 else "ServiceUnavailable",
                    retry_after="1",
                )

    def reader(self) -> FakeDeltaReader:
        return FakeDeltaReader(self)

    def writer(self) -> FakeOutlookWriter:
        return FakeOutlookWriter(self)

    # -- what Graph keeps of a write --------------------------------------------------------------

    def _as_graph_keeps_event(
        self, box: FakeMailbox, new: Appointment, old: Appointment | None
    ) -> Appointment:
        """Organizer, iCalUId and the event type are Graph's (a write cannot set them), and the zone
        of the first write stays the event's original start time zone."""
        return new.model_copy(
            update={
                "organizer": old.organizer if old else EmailAddress(address=box.address, name="Sim User"),
                "ical_uid": old.ical_uid if old else self._new_ical_uid(),
                "event_kind": EventKind.SERIES_MASTER if new.recurrence else EventKind.SINGLE,
                "series_master_id": None,
                "time_zone": old.time_zone if old else new.time_zone or "UTC",
            }
        )

    @staticmethod
    def _as_graph_keeps_contact(new: Contact) -> Contact:
        """Outlook composes displayName from the name parts when none is given."""
        if new.display_name:
            return new
        parts = (new.given_name, new.middle_name, new.surname)
        return new.model_copy(update={"display_name": " ".join(p for p in parts if p) or None})

    @staticmethod
    def _as_graph_keeps_task(new: Task, old: Task | None, now: dt.datetime) -> Task:
        """A To Do write leaves out unset dates (task_to_graph), so Graph keeps the old ones; To Do sets
        the completion time when the status becomes completed and clears it otherwise."""
        start = new.start or (old.start if old else None)
        due = new.due or (old.due if old else None)
        completed = new.completed or (old.completed if old else None)
        if new.status is not TaskStatus.COMPLETED:
            completed = None
        elif completed is None:
            completed = now.replace(microsecond=0)
        return new.model_copy(update={"start": start, "due": due, "completed": completed})

    def outlook_item(self, box: FakeMailbox, item: FakeItem, *, stamp: bool = True) -> OutlookItem:
        content = item.content
        if isinstance(content, Email):
            sender = content.sender
            outgoing = bool(sender and sender.address.casefold() == box.address.casefold())
            content = content.model_copy(update={"is_outgoing": outgoing})
        return OutlookItem(
            mailbox_id=box.mailbox_id,
            item_id=item.item_id,
            kind=item.kind,
            change_key=None if item.kind is ItemKind.TASK else item.change_key,
            folder_id=item.container,
            categories=item.categories,
            crm_id=item.crm_id if stamp else None,
            item=content,
        )

    # -- delta rounds -----------------------------------------------------------------------------

    def _in(self, item: FakeItem, collection: str, window: tuple[dt.datetime, dt.datetime] | None) -> bool:
        if item.container != collection:
            return False
        if window is not None and isinstance(item.content, Appointment):
            return item.content.end > window[0] and item.content.start < window[1]
        return True

    def _delta_link(
        self, box: FakeMailbox, collection: str, window: tuple[dt.datetime, dt.datetime] | None
    ) -> str:
        bounds = f"{window[0].timestamp():.0f}:{window[1].timestamp():.0f}" if window else "-"
        return f"{_LINK}?m={box.mailbox_id}&c={collection}&g={box.generation}&s={self._next()}&w={bounds}"

    def start_round(
        self,
        mailbox_id: str,
        collection: str,
        link: str | None,
        window: tuple[dt.datetime, dt.datetime] | None = None,
    ) -> str:
        """Open a round and return its first page's id (a next link)."""
        box = self.mailboxes[mailbox_id]
        if link is None:
            pending = sorted(i for i, item in box.items.items() if self._in(item, collection, window))
            removed: list[str] = []
        else:
            params = dict(part.split("=", 1) for part in link.split("?", 1)[1].split("&"))
            if params.get("m") != mailbox_id or params.get("c") != collection:
                raise GraphError("the link belongs to another resource", status=400, code="BadRequest")
            if int(params["g"]) != box.generation:
                raise DeltaTokenExpired("The sync state is not valid", status=410, code="syncStateNotFound")
            since = int(params["s"])
            if params["w"] != "-":
                start, end = (dt.datetime.fromtimestamp(int(v), dt.UTC) for v in params["w"].split(":"))
                window = (start, end)
            pending, removed = [], []
            for item_id, item in sorted(box.items.items()):
                if item.seq <= since:
                    continue
                (pending if self._in(item, collection, window) else removed).append(item_id)
            removed += [i for i, (c, seq) in box.removed.items() if c == collection and seq > since]
            removed += [
                i
                for i, moves in box.left.items()
                if i not in removed
                and i not in pending
                and any(c == collection and s > since for c, s in moves)
            ]
            removed = sorted(set(removed))
        token = f"round{next(self._ids)}"
        self._rounds[token] = _Round(
            mailbox_id, collection, pending, removed, self._delta_link(box, collection, window), window
        )
        return token

    def page(self, token: str, kind: ItemKind, *, stamps: bool) -> DeltaPage:
        state = self._rounds[token]
        box = self.mailboxes[state.mailbox_id]
        entries: list[OutlookItem] = []
        while (state.pending or state.removed) and len(entries) < self.page_size:
            if state.pending:
                item = box.items.get(state.pending.pop(0))
                # one deleted or moved out meanwhile is reported by the next round
                if item is not None and self._in(item, state.collection, state.window):
                    entries.append(self.outlook_item(box, item, stamp=stamps))
            else:
                item_id = state.removed.pop(0)
                entries.append(
                    OutlookItem(mailbox_id=box.mailbox_id, item_id=item_id, kind=kind, removed=True)
                )
        if state.pending or state.removed:
            return DeltaPage(entries, f"{_LINK}?next={token}", None)
        del self._rounds[token]
        return DeltaPage(entries, None, state.delta_link)


class FakeDeltaReader:
    """:class:`shared.outlook.delta.DeltaReader` over a :class:`FakeOutlook`."""

    def __init__(self, outlook: FakeOutlook) -> None:
        self._outlook = outlook

    async def _pages(
        self,
        mailbox: str,
        collection: str,
        kind: ItemKind,
        link: str | None,
        window: tuple[dt.datetime, dt.datetime] | None = None,
        *,
        stamps: bool = True,
    ) -> AsyncIterator[DeltaPage]:
        outlook = self._outlook
        outlook._enter("delta")
        if link is not None and "?next=" in link:
            token = link.split("?next=", 1)[1]
            if token not in outlook._rounds:
                raise DeltaTokenExpired("The sync state is not valid", status=410, code="syncStateNotFound")
        else:
            token = outlook.start_round(mailbox, collection, link, window)
        while True:
            page = outlook.page(token, kind, stamps=stamps)
            yield page
            if page.next_link is None:
                return
            outlook._enter("delta")

    def messages(
        self,
        mailbox: str,
        *,
        folder: str = "inbox",
        link: str | None = None,
        mailbox_address: str | None = None,
        with_body: bool = False,  # the fake's pages never carry bodies: they are read on their own
    ) -> AsyncIterator[DeltaPage]:
        return self._pages(mailbox, folder, ItemKind.EMAIL, link)

    def contacts(self, mailbox: str, *, link: str | None = None) -> AsyncIterator[DeltaPage]:
        return self._pages(mailbox, CONTACTS, ItemKind.CONTACT, link)

    def events(
        self,
        mailbox: str,
        *,
        window_start: dt.datetime | None = None,
        window_end: dt.datetime | None = None,
        link: str | None = None,
    ) -> AsyncIterator[DeltaPage]:
        window = None
        if link is None:
            if window_start is None or window_end is None:
                raise ValueError("a first calendar delta needs window_start and window_end")
            window = (window_start, window_end)
        return self._pages(mailbox, CALENDAR, ItemKind.APPOINTMENT, link, window, stamps=False)

    def tasks(self, mailbox: str, list_id: str, *, link: str | None = None) -> AsyncIterator[DeltaPage]:
        return self._pages(mailbox, list_id, ItemKind.TASK, link)

    async def read_items(
        self,
        mailbox: str,
        kind: ItemKind,
        item_ids: Sequence[str],
        *,
        task_list_id: str | None = None,
        mailbox_address: str | None = None,
    ) -> list[OutlookItem]:
        """Items by id as their delta pages would list them; one gone (or of another kind) comes
        back ``removed``, as the real reader reports a 404."""
        outlook = self._outlook
        outlook._enter("read_items")
        box = outlook.mailboxes[mailbox]
        read: list[OutlookItem] = []
        for item_id in dict.fromkeys(item_ids):
            item = box.items.get(item_id)
            if item is None or item.kind is not kind:
                read.append(OutlookItem(mailbox_id=mailbox, item_id=item_id, kind=kind, removed=True))
            else:
                read.append(outlook.outlook_item(box, item, stamp=kind is not ItemKind.APPOINTMENT))
        return read

    async def fetch_message_body(self, mailbox: str, message_id: str) -> MessageBody:
        self._outlook._enter("fetch_message_body")
        item = self._outlook.item(mailbox, message_id)
        if item is None or item.kind is not ItemKind.EMAIL or item.body is None:
            raise ItemNotFound(
                "The specified object was not found in the store.", status=404, code="ErrorItemNotFound"
            )
        return item.body

    async def fetch_message_bodies(
        self, mailbox: str, message_ids: Sequence[str]
    ) -> dict[str, MessageBody | None]:
        self._outlook._enter("fetch_message_bodies")
        bodies: dict[str, MessageBody | None] = {}
        for message_id in dict.fromkeys(message_ids):
            item = self._outlook.item(mailbox, message_id)
            bodies[message_id] = item.body if item is not None and item.kind is ItemKind.EMAIL else None
        return bodies


class FakeOutlookWriter:
    """:class:`shared.outlook.writers.OutlookWriter` over a :class:`FakeOutlook`."""

    def __init__(self, outlook: FakeOutlook) -> None:
        self._outlook = outlook

    def _box(self, mailbox: str) -> FakeMailbox:
        return self._outlook.mailboxes[mailbox]

    def _existing(self, mailbox: str, kind: ItemKind, item_id: str, container: str | None = None) -> FakeItem:
        item = self._box(mailbox).items.get(item_id)
        if item is None or item.kind is not kind or (container is not None and item.container != container):
            raise ItemNotFound(
                "The specified object was not found in the store.", status=404, code="ErrorItemNotFound"
            )
        return item

    def _created(
        self,
        mailbox: str,
        content: Content,
        container: str,
        crm_id: str | None,
        categories: Sequence[str] | None,
    ) -> OutlookItem:
        box = self._box(mailbox)
        item = FakeItem(
            self._outlook._new_id(), content.kind, container, content, "", 0, tuple(categories or ()), crm_id
        )
        self._outlook._touch(item)
        box.items[item.item_id] = item
        return self._outlook.outlook_item(box, item)

    def _updated(
        self,
        mailbox: str,
        item: FakeItem,
        content: Content,
        crm_id: str | None,
        categories: Sequence[str] | None,
    ) -> OutlookItem:
        item.content = content
        if crm_id is not None:
            item.crm_id = crm_id
        if categories is not None:
            item.categories = tuple(categories)
        self._outlook._touch(item)
        return self._outlook.outlook_item(self._box(mailbox), item).model_copy(update={"crm_id": crm_id})

    def _delete(self, mailbox: str, kind: ItemKind, item_id: str) -> None:
        item = self._box(mailbox).items.get(item_id)
        if item is not None and item.kind is kind:
            self._outlook.deletions.append((mailbox, item))
            self._outlook.user_delete(mailbox, item_id)

    async def create_contact(
        self,
        mailbox: str,
        contact: Contact,
        *,
        crm_id: str | None = None,
        categories: Sequence[str] | None = None,
    ) -> OutlookItem:
        self._outlook._enter("create_contact")
        return self._created(
            mailbox, self._outlook._as_graph_keeps_contact(contact), CONTACTS, crm_id, categories
        )

    async def update_contact(
        self,
        mailbox: str,
        item_id: str,
        contact: Contact,
        *,
        crm_id: str | None = None,
        categories: Sequence[str] | None = None,
    ) -> OutlookItem:
        self._outlook._enter("update_contact")
        return self._updated(
            mailbox,
            self._existing(mailbox, ItemKind.CONTACT, item_id),
            self._outlook._as_graph_keeps_contact(contact),
            crm_id,
            categories,
        )

    async def delete_contact(self, mailbox: str, item_id: str) -> None:
        self._outlook._enter("delete_contact")
        self._delete(mailbox, ItemKind.CONTACT, item_id)

    async def create_event(
        self,
        mailbox: str,
        appointment: Appointment,
        *,
        crm_id: str | None = None,
        categories: Sequence[str] | None = None,
    ) -> OutlookItem:
        self._outlook._enter("create_event")
        kept = self._outlook._as_graph_keeps_event(
            self._box(mailbox), appointment.model_copy(update={"event_kind": EventKind.SINGLE}), None
        )
        return self._created(mailbox, kept, CALENDAR, crm_id, categories)

    async def update_event(
        self,
        mailbox: str,
        item_id: str,
        appointment: Appointment,
        *,
        crm_id: str | None = None,
        categories: Sequence[str] | None = None,
    ) -> OutlookItem:
        self._outlook._enter("update_event")
        item = self._existing(mailbox, ItemKind.APPOINTMENT, item_id)
        assert isinstance(item.content, Appointment)
        kept = self._outlook._as_graph_keeps_event(self._box(mailbox), appointment, item.content)
        return self._updated(mailbox, item, kept, crm_id, categories)

    async def delete_event(self, mailbox: str, item_id: str) -> None:
        self._outlook._enter("delete_event")
        self._delete(mailbox, ItemKind.APPOINTMENT, item_id)

    async def default_task_list(self, mailbox: str) -> str:
        self._outlook._enter("default_task_list")
        return self._box(mailbox).default_task_list

    async def create_task(
        self, mailbox: str, list_id: str, task: Task, *, categories: Sequence[str] | None = None
    ) -> OutlookItem:
        self._outlook._enter("create_task")
        return self._created(
            mailbox,
            self._outlook._as_graph_keeps_task(task, None, self._outlook.clock()),
            list_id,
            None,
            categories,
        )

    async def update_task(
        self, mailbox: str, list_id: str, item_id: str, task: Task, *, categories: Sequence[str] | None = None
    ) -> OutlookItem:
        self._outlook._enter("update_task")
        item = self._existing(mailbox, ItemKind.TASK, item_id, list_id)
        assert isinstance(item.content, Task)
        return self._updated(
            mailbox,
            item,
            self._outlook._as_graph_keeps_task(task, item.content, self._outlook.clock()),
            None,
            categories,
        )

    async def delete_task(self, mailbox: str, list_id: str, item_id: str) -> None:
        self._outlook._enter("delete_task")
        self._delete(mailbox, ItemKind.TASK, item_id)

    async def set_message_categories(self, mailbox: str, message_id: str, categories: Sequence[str]) -> None:
        self._outlook._enter("set_message_categories")
        item = self._existing(mailbox, ItemKind.EMAIL, message_id)
        item.categories = tuple(categories)
        self._outlook._touch(item)

    async def ensure_master_category(self, mailbox: str, name: str, color: object = None) -> None:
        self._outlook._enter("ensure_master_category")
        box = self._box(mailbox)
        if all(existing.casefold() != name.casefold() for existing in box.master_categories):
            box.master_categories.append(name)

    def _stamp(self, mailbox: str, kind: ItemKind, item_id: str, crm_id: str) -> bool:
        if kind not in STAMPABLE_KINDS:
            raise ValueError(f"{kind.value} items cannot carry extended properties in Graph v1.0")
        item = self._box(mailbox).items.get(item_id)
        if item is None or item.kind is not kind:
            return False
        item.crm_id = crm_id
        self._outlook._touch(item)
        return True

    async def stamp_crm_id(self, mailbox: str, kind: ItemKind, item_id: str, crm_id: str) -> None:
        self._outlook._enter("stamp_crm_id")
        if not self._stamp(mailbox, kind, item_id, crm_id):
            raise ItemNotFound(
                "The specified object was not found in the store.", status=404, code="ErrorItemNotFound"
            )

    async def find_created(
        self, mailbox: str, kind: ItemKind, crm_id: uuid.UUID, *, title: str, task_list_id: str | None
    ) -> OutlookItem | None:
        self._outlook._enter("find_created")
        box = self._box(mailbox)
        for item in box.items.values():
            if item.kind is kind and item.crm_id == str(crm_id):
                return self._outlook.outlook_item(box, item)
        return None

    async def read_crm_id(self, mailbox: str, kind: ItemKind, item_id: str) -> str | None:
        self._outlook._enter("read_crm_id")
        if kind not in STAMPABLE_KINDS:
            return None
        return self._existing(mailbox, kind, item_id).crm_id


__all__ = ["FakeDeltaReader", "FakeItem", "FakeMailbox", "FakeOutlook", "FakeOutlookWriter"]
