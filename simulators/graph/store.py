"""The in-memory mailboxes: users, folders, items, categories, and the change hook.

Every Outlook item keeps two ids, as Exchange does (learn.microsoft.com/graph/outlook-immutable-id):
an *immutable* id that survives moves, and a *REST* id that changes when a message moves to
another folder. Both are accepted on input; ``Prefer: IdType="ImmutableId"`` picks which one
responses carry.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from simulators.graph.core import GraphError, Json, change_key, not_found, opaque_id, utcnow


class Kind(enum.StrEnum):
    MESSAGE = "message"
    CONTACT = "contact"
    EVENT = "event"
    TASK = "todoTask"


# learn.microsoft.com/graph/api/resources/mailfolder: well-known folder names usable in place of ids.
WELL_KNOWN_MAIL_FOLDERS = {
    "inbox": "Inbox",
    "drafts": "Drafts",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "archive": "Archive",
    "junkemail": "Junk Email",
    "outbox": "Outbox",
}


@dataclass
class Folder:
    """A mail folder, contact folder or To Do list (they differ only in what they hold)."""

    id: str
    display_name: str
    parent_id: str | None
    well_known: str | None = None
    change_key: str = field(default_factory=change_key)
    extended: dict[str, Json] = field(default_factory=dict)  # lower-cased property id -> {"id", "value"}


@dataclass
class Item:
    kind: Kind
    immutable_id: str
    rest_id: str
    container: str
    props: Json
    created: dt.datetime
    modified: dt.datetime
    change_key: str = field(default_factory=change_key)
    extended: dict[str, Json] = field(default_factory=dict)  # lower-cased property id -> {"id", "value"}
    attachments: dict[str, Json] = field(default_factory=dict)
    # events only: originalStart (UTC ISO) -> exception overrides, or None for a cancelled occurrence
    exceptions: dict[str, Json | None] = field(default_factory=dict)
    exception_keys: dict[str, str] = field(default_factory=dict)
    # To Do tasks only: linkedResource id -> linkedResource JSON (resources/linkedresource)
    linked: dict[str, Json] = field(default_factory=dict)
    # events only: an attendee's copy of a meeting points at (organizer mailbox id, organizer's event id)
    meeting: tuple[str, str] | None = None

    def touch(self) -> None:
        self.modified = utcnow()
        self.change_key = change_key()

    def visible_id(self, immutable: bool) -> str:
        return self.immutable_id if immutable else self.rest_id


ChangeListener = Callable[["Mailbox", Item, str, str], None]
"""(mailbox, item, changeType, container the change happened in)."""


@dataclass
class Mailbox:
    id: str
    user_principal_name: str
    display_name: str
    mail: str
    created: dt.datetime = field(default_factory=utcnow)
    mail_folders: dict[str, Folder] = field(default_factory=dict)
    contact_folders: dict[str, Folder] = field(default_factory=dict)
    todo_lists: dict[str, Folder] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    rest_ids: dict[str, str] = field(default_factory=dict)
    occurrences: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (master, originalStart)
    categories: dict[str, Json] = field(default_factory=dict)
    default_contacts: str = ""
    default_tasks: str = ""
    msg_root: str = ""
    root_folder: Folder | None = None

    def as_user(self) -> Json:
        """learn.microsoft.com/graph/api/resources/user: the default property set of GET /users/{id}."""
        given, _, surname = self.display_name.partition(" ")
        return {
            "id": self.id,
            "businessPhones": [],
            "displayName": self.display_name,
            "givenName": given or None,
            "jobTitle": None,
            "mail": self.mail,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": None,
            "surname": surname or None,
            "userPrincipalName": self.user_principal_name,
        }

    # -- folders ------------------------------------------------------------------------------

    def mail_folder(self, key: str) -> Folder:
        """By id or well-known name (learn.microsoft.com/graph/api/resources/mailfolder)."""
        lowered = key.lower()
        for folder in self.mail_folders.values():
            if folder.id == key or folder.well_known == lowered:
                return folder
        if lowered == "msgfolderroot" or key == self.msg_root:
            # Not listed as a child of anything, but a folder with its own extended properties.
            if self.root_folder is None:
                self.root_folder = Folder(self.msg_root, "Top of Information Store", None, "msgfolderroot")
            return self.root_folder
        raise not_found("folder")

    def contact_folder(self, key: str) -> Folder:
        for folder in self.contact_folders.values():
            if folder.id == key or folder.well_known == key.lower():
                return folder
        raise not_found("folder")

    def todo_list(self, key: str) -> Folder:
        folder = self.todo_lists.get(key)
        if folder is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return folder

    # -- items --------------------------------------------------------------------------------

    def item(self, key: str, kind: Kind) -> Item:
        """Look an item up by immutable or REST id; an id of another kind is not found."""
        found = self.items.get(key) or self.items.get(self.rest_ids.get(key, ""))
        if found is None or found.kind is not kind:
            raise not_found("object")
        return found

    def items_in(self, kind: Kind, container: str | None = None) -> list[Item]:
        return [
            i
            for i in self.items.values()
            if i.kind is kind and (container is None or i.container == container)
        ]


@dataclass
class Store:
    """All mailboxes plus the listeners that turn changes into notifications."""

    users: dict[str, Mailbox] = field(default_factory=dict)
    listeners: list[ChangeListener] = field(default_factory=list)
    # meetings: (organizer mailbox id, organizer's event id) -> attendee mailbox id -> attendee's event id
    invitations: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def by_address(self, address: str) -> Mailbox | None:
        """The tenant's mailbox with this SMTP address or userPrincipalName (case-insensitive, as
        Exchange resolves recipients), or None for an address outside the simulated tenant."""
        wanted = address.strip().casefold()
        if not wanted:
            return None
        for box in self.users.values():
            if wanted in (box.mail.casefold(), box.user_principal_name.casefold()):
                return box
        return None

    def add_user(self, user_id: str | None, upn: str, display_name: str, mail: str) -> Mailbox:
        new_id = user_id or str(uuid.uuid4())
        if new_id in self.users or any(
            m.user_principal_name.lower() == upn.lower() for m in self.users.values()
        ):
            raise GraphError(409, "Request_BadRequest", "Another object with the same id or UPN exists.")
        box = Mailbox(new_id, upn, display_name, mail)
        box.msg_root = opaque_id("AQMkAD")
        for well_known, name in WELL_KNOWN_MAIL_FOLDERS.items():
            folder = Folder(opaque_id("AQMkAD"), name, box.msg_root, well_known)
            box.mail_folders[folder.id] = folder
        contacts = Folder(opaque_id("AQMkAD"), "Contacts", box.msg_root, "contacts")
        box.contact_folders[contacts.id] = contacts
        box.default_contacts = contacts.id
        tasks = Folder(opaque_id("AQMkAD"), "Tasks", None, "defaultList")
        box.todo_lists[tasks.id] = tasks
        box.default_tasks = tasks.id
        self.users[new_id] = box
        return box

    def user(self, key: str, *, mailbox: bool = False) -> Mailbox:
        """By object id or userPrincipalName, as /users/{id | userPrincipalName} accepts both
        (learn.microsoft.com/graph/api/user-get). An unknown user is the directory's 404
        Request_ResourceNotFound, or with ``mailbox`` (a path into the user's mailbox: mail, contacts,
        calendar, To Do) Exchange's 404 ErrorInvalidUser "The requested user '<id>' is invalid."
        (as github.com/microsoftgraph/microsoft-graph-docs/issues/4097 and /7909 quote it)."""
        box = self.users.get(key)
        if box is None:
            lowered = key.lower()
            box = next((m for m in self.users.values() if m.user_principal_name.lower() == lowered), None)
        if box is None and mailbox:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{key}' is invalid.")
        if box is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried "
                "reference-property objects are not present.",
            )
        return box

    def new_item(
        self,
        box: Mailbox,
        kind: Kind,
        container: str,
        props: Json,
        extended: dict[str, Json] | None = None,
        *,
        prepare: Callable[[Item], None] | None = None,
    ) -> Item:
        """Create an item; ``prepare`` completes it (linked resources, a meeting's series) before the
        change is announced, so the first notification and delta page see it whole."""
        now = utcnow()
        immutable = opaque_id("AAkALg")
        rest = immutable if kind is Kind.TASK else opaque_id("AAMkAD")
        item = Item(kind, immutable, rest, container, props, now, now, extended=extended or {})
        if prepare is not None:
            prepare(item)
        box.items[immutable] = item
        box.rest_ids[rest] = immutable
        self.changed(box, item, "created", container)
        return item

    def update_item(self, box: Mailbox, item: Item) -> None:
        item.touch()
        self.changed(box, item, "updated", item.container)

    def delete_item(self, box: Mailbox, item: Item) -> None:
        box.items.pop(item.immutable_id, None)
        box.rest_ids.pop(item.rest_id, None)
        self.changed(box, item, "deleted", item.container)

    def move_item(self, box: Mailbox, item: Item, destination: str) -> None:
        """A move gives the message a new REST id; the immutable id stays
        (learn.microsoft.com/graph/outlook-immutable-id, "Lifetime of immutable IDs")."""
        self.changed(box, item, "deleted", item.container)  # still under its old id and folder
        box.rest_ids.pop(item.rest_id, None)
        item.rest_id = opaque_id("AAMkAD")
        box.rest_ids[item.rest_id] = item.immutable_id
        item.container = destination
        item.touch()
        self.changed(box, item, "created", destination)

    def changed(self, box: Mailbox, item: Item, change_type: str, container: str) -> None:
        for listener in self.listeners:
            listener(box, item, change_type, container)
