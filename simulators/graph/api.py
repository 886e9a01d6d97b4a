"""The Graph v1.0 resources: users, mail, contacts, calendar, To Do, master categories.

Each handler names the learn.microsoft.com/graph/api page whose behaviour it follows.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import uuid
from typing import TYPE_CHECKING

from starlette.responses import Response

from simulators.graph import events, meetings, query, resources
from simulators.graph.core import (
    GraphError,
    Json,
    bad_request,
    change_key,
    check_if_match,
    etag,
    iso_z,
    not_found,
    opaque_id,
)
from simulators.graph.delta import Entry
from simulators.graph.http import Ctx, Router, json_response, parse_expand, parse_select
from simulators.graph.resources import ODATA_TYPES
from simulators.graph.store import Folder, Item, Kind, Mailbox, Store

if TYPE_CHECKING:
    from simulators.graph.app import Simulator

# Outlook collections and delta pages default to 10 items (learn.microsoft.com/graph/paging).
DEFAULT_PAGE = 10

# learn.microsoft.com/graph/api/resources/outlookcategory: preset0 .. preset24 or none.
CATEGORY_COLORS = frozenset({"none", *(f"preset{i}" for i in range(25))})


def collection(ctx: Ctx, values: list[Json], context: str) -> Response:
    """A page of a collection; ``@odata.nextLink`` is absolute and carries $skip
    (learn.microsoft.com/graph/paging); ``$count=true`` adds ``@odata.count`` (query-parameters)."""
    size = ctx.page_size(DEFAULT_PAGE)
    try:
        skip = int(ctx.query.get("$skip", "0"))
    except ValueError as exc:
        raise bad_request("Invalid $skip.", "BadRequest") from exc
    body: Json = {"@odata.context": ctx.context(context)}
    if ctx.query.get("$count", "").lower() == "true":
        body["@odata.count"] = len(values)
    body["value"] = values[skip : skip + size]
    if skip + size < len(values):
        query = dict(ctx.query)
        query["$skip"] = str(skip + size)
        if "odata.maxpagesize" not in ctx.prefer:
            query["$top"] = str(size)
        body["@odata.nextLink"] = ctx.link(ctx.segments, query)
    return json_response(ctx, body)


def _check_transaction_unchanged(item: Item, body: Json) -> None:
    """resources/event: "After you set transactionId when creating an event, you cannot change
    transactionId in a subsequent update." Sending the same value again changes nothing and is accepted."""
    if "transactionId" in body and body["transactionId"] != item.props.get("transactionId"):
        raise bad_request("The transactionId of an event cannot be changed after it is created.")


def _typed_event(body: Json) -> Json:
    return {"@odata.type": ODATA_TYPES[Kind.EVENT], **body}


def rename(folder: Folder, body: Json) -> Folder:
    """PATCH of a folder or list: only displayName is writable."""
    name = body.get("displayName")
    if isinstance(name, str) and name.strip():
        folder.display_name = name.strip()
        folder.change_key = change_key()
    return folder


def _same_transaction(box: Mailbox, body: Json) -> Item | None:
    """resources/event transactionId: "A custom identifier specified by a client app for the server to
    avoid redundant POST operations in case of client retries to create the same event." Graph does not
    document the answer to such a retry; the simulator answers it as it answered the first POST
    (201 Created with the event, the one already in the mailbox) and creates nothing."""
    transaction = body.get("transactionId")
    if not isinstance(transaction, str) or not transaction:
        return None
    return next((i for i in box.items_in(Kind.EVENT) if i.props.get("transactionId") == transaction), None)


def create_item(store: Store, box: Mailbox, kind: Kind, container: str, body: Json, *, draft: bool) -> Item:
    """Validate a Graph JSON body and create the item (API POSTs and control-API seeding share this).

    An event with attendees in the simulated tenant sends them invitations (simulators/graph/meetings.py);
    a To Do task's ``linkedResources`` are created with it (todotasklist-post-tasks)."""
    body = dict(body)
    extended = resources.read_extended(body)
    linked = resources.read_linked(body) if kind is Kind.TASK else []
    resources.check_writable(kind, body)
    if kind is Kind.EVENT:
        existing = _same_transaction(box, body)
        if existing is not None:
            return existing
    props = resources.new_props(kind, box, body, draft=draft)

    def prepare(item: Item) -> None:
        item.linked.update((str(resource["id"]), resource) for resource in linked)

    item = store.new_item(box, kind, container, props, extended, prepare=prepare)
    if kind is Kind.EVENT:
        meetings.send(store, box, item)
    return item


class GraphApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.store = sim.store

    def register(self, router: Router) -> None:
        r = router.add
        r("users", get=self.list_users)
        r("users/{user}", get=self.get_user)
        r("users/{user}/mailFolders", get=self.list_mail_folders, post=self.create_mail_folder)
        r("users/{user}/mailFolders/{folder}", get=self.get_mail_folder, patch=self.update_mail_folder,
          delete=self.delete_mail_folder)  # fmt: skip
        r("users/{user}/mailFolders/{folder}/childFolders", get=self.list_mail_folders,
          post=self.create_mail_folder)  # fmt: skip
        r("users/{user}/mailFolders/{folder}/messages/delta", get=self.delta_messages)
        r("users/{user}/mailFolders/{folder}/messages", get=self.list_messages, post=self.create_message)
        for prefix in ("users/{user}/messages", "users/{user}/mailFolders/{folder}/messages"):
            r(
                f"{prefix}/{{item}}",
                get=self.get_message,
                patch=self.update_message,
                delete=self.delete_message,
            )
            r(f"{prefix}/{{item}}/move", post=self.move_message)
            r(f"{prefix}/{{item}}/attachments", get=self.list_attachments, post=self.add_attachment)
            r(f"{prefix}/{{item}}/attachments/{{attachment}}", get=self.get_attachment,
              delete=self.delete_attachment)  # fmt: skip
        r("users/{user}/messages", get=self.list_messages, post=self.create_message)
        r("users/{user}/contacts/delta", get=self.delta_contacts)
        r("users/{user}/contactFolders/{folder}/contacts/delta", get=self.delta_contacts)
        for prefix in ("users/{user}/contacts", "users/{user}/contactFolders/{folder}/contacts"):
            r(prefix, get=self.list_contacts, post=self.create_contact)
            r(
                f"{prefix}/{{item}}",
                get=self.get_contact,
                patch=self.update_contact,
                delete=self.delete_contact,
            )
        r("users/{user}/contactFolders", get=self.list_contact_folders, post=self.create_contact_folder)
        r("users/{user}/contactFolders/{folder}", get=self.get_contact_folder,
          patch=self.update_contact_folder,
          delete=self.delete_contact_folder)  # fmt: skip
        r("users/{user}/events", get=self.list_events, post=self.create_event)
        r("users/{user}/events/{item}", get=self.get_event, patch=self.update_event, delete=self.delete_event)
        r("users/{user}/events/{item}/instances", get=self.list_instances)
        r("users/{user}/calendarView/delta", get=self.delta_calendar_view)
        r("users/{user}/calendarView", get=self.list_calendar_view)
        r("users/{user}/todo/lists", get=self.list_todo_lists, post=self.create_todo_list)
        r("users/{user}/todo/lists/{list}", get=self.get_todo_list, patch=self.update_todo_list,
          delete=self.delete_todo_list)  # fmt: skip
        r("users/{user}/todo/lists/{list}/tasks/delta", get=self.delta_tasks)
        r("users/{user}/todo/lists/{list}/tasks", get=self.list_tasks, post=self.create_task)
        r("users/{user}/todo/lists/{list}/tasks/{item}", get=self.get_task, patch=self.update_task,
          delete=self.delete_task)  # fmt: skip
        r("users/{user}/todo/lists/{list}/tasks/{item}/linkedResources", get=self.list_linked,
          post=self.create_linked)  # fmt: skip
        r("users/{user}/todo/lists/{list}/tasks/{item}/linkedResources/{linked}", get=self.get_linked)
        r("users/{user}/outlook/masterCategories", get=self.list_categories, post=self.create_category)
        r("users/{user}/outlook/masterCategories/{category}", get=self.get_category,
          patch=self.update_category, delete=self.delete_category)  # fmt: skip

    # -- users: learn.microsoft.com/graph/api/user-get, user-list -------------------------------

    async def list_users(self, ctx: Ctx) -> Response:
        """user-list: $filter (e.g. ``mail eq '..'``) and $orderby apply."""
        keep = query.parse_filter(ctx.query.get("$filter"))
        users = [m.as_user() for m in self.store.users.values()]
        rows = query.ordered([u for u in users if keep(u, {})], ctx.query.get("$orderby"))
        return collection(ctx, rows, "users")

    async def get_user(self, ctx: Ctx) -> Response:
        body = {"@odata.context": ctx.context("users/$entity"), **ctx.mailbox.as_user()}
        select = ctx.select()
        if select:
            body = {k: v for k, v in body.items() if k in select or k in ("@odata.context", "id")}
        return json_response(ctx, body)

    # -- shared item plumbing --------------------------------------------------------------------

    def _entity(self, ctx: Ctx, item: Item, context: str, status: int = 200) -> Response:
        body = resources.render(ctx.mailbox, item, ctx.view())
        return json_response(ctx, {"@odata.context": ctx.context(f"{context}/$entity"), **body}, status)

    @staticmethod
    def _checked(ctx: Ctx, item: Item) -> Item:
        check_if_match(ctx.if_match, item.change_key)
        return item

    def _create(self, ctx: Ctx, kind: Kind, container: str, *, draft: bool) -> Item:
        return create_item(self.store, ctx.mailbox, kind, container, ctx.json(), draft=draft)

    def _update(self, ctx: Ctx, item: Item) -> None:
        """PATCH: validate everything first, so a bad body is a 400 that changes nothing. The organizer's
        change to what attendees see goes out to them (meetings.py, event-update)."""
        self._checked(ctx, item)
        body = ctx.json()
        extended = resources.read_extended(body)
        resources.check_writable(item.kind, body)
        if item.kind is Kind.EVENT:
            _check_transaction_unchanged(item, body)
        if item.kind is Kind.MESSAGE and not item.props.get("isDraft"):
            locked = sorted(set(body) & resources.DRAFT_ONLY)
            if locked:
                raise bad_request(
                    f"The properties {locked} can only be updated on a draft message "
                    "(learn.microsoft.com/graph/api/message-update).",
                    "ErrorInvalidPropertyUpdateSentMessage",
                )
        updated = dict(item.props)
        resources.merge(item.kind, updated, body)
        item.props = updated
        item.extended.update(extended)
        self.store.update_item(ctx.mailbox, item)
        if item.kind is Kind.EVENT and meetings.changes_meeting(body):
            meetings.send(self.store, ctx.mailbox, item)

    def _list(self, ctx: Ctx, kind: Kind, container: str | None, context: str) -> Response:
        keep = query.parse_filter(ctx.query.get("$filter"))
        items = [i for i in ctx.mailbox.items_in(kind, container) if keep(i.props, i.extended)]
        everything = ctx.view(select=False)
        items = query.ordered(
            items, ctx.query.get("$orderby"), lambda i: resources.render(ctx.mailbox, i, everything)
        )
        view = ctx.view()
        return collection(ctx, [resources.render(ctx.mailbox, i, view) for i in items], context)

    def _delta(self, ctx: Ctx, kind: Kind, container: str, context: str) -> Response:
        """Delta over one folder or list (learn.microsoft.com/graph/api/message-delta, contact-delta,
        todotask-delta); $select, $expand and $filter given on the first call travel in the token."""
        box = ctx.mailbox

        def collect(options: dict[str, str]) -> list[Entry]:
            keep = query.parse_filter(options.get("$filter"))
            view = dataclasses.replace(
                ctx.view(select=False),
                select=parse_select(options.get("$select")),
                expand_extended=parse_expand(options.get("$expand")),
            )
            items = [i for i in box.items_in(kind, container) if keep(i.props, i.extended)]
            return [
                Entry(
                    i.immutable_id,
                    i.change_key,
                    i.visible_id(view.immutable_ids),
                    functools.partial(resources.render, box, i, view, with_type=True),
                )
                for i in query.delta_order(kind, items, options.get("$orderby"))
            ]

        return self.sim.delta.respond(
            ctx,
            scope=f"{kind.value}:{container}",
            odata_type=ODATA_TYPES[kind],
            collect=collect,
            default_page=DEFAULT_PAGE,
            context=f"Collection({kind.value})",
            tracked_options=("$select", "$expand", "$filter", "$orderby")
            + (("changeType",) if kind is Kind.MESSAGE else ()),
        )

    # -- mail folders: learn.microsoft.com/graph/api/user-list-mailfolders, mailfolder-post-childfolders

    def _folder_json(self, box: Mailbox, folder: Folder) -> Json:
        messages = box.items_in(Kind.MESSAGE, folder.id)
        return {
            "id": folder.id,
            "displayName": folder.display_name,
            "parentFolderId": folder.parent_id,
            "childFolderCount": sum(1 for f in box.mail_folders.values() if f.parent_id == folder.id),
            "unreadItemCount": sum(1 for m in messages if not m.props.get("isRead")),
            "totalItemCount": len(messages),
            "isHidden": False,
        }

    async def list_mail_folders(self, ctx: Ctx) -> Response:
        box = ctx.mailbox
        parent = box.mail_folder(ctx.params["folder"]).id if "folder" in ctx.params else box.msg_root
        values = [self._folder_json(box, f) for f in box.mail_folders.values() if f.parent_id == parent]
        return collection(ctx, values, f"users('{box.id}')/mailFolders")

    async def create_mail_folder(self, ctx: Ctx) -> Response:
        box = ctx.mailbox
        parent = box.mail_folder(ctx.params["folder"]).id if "folder" in ctx.params else box.msg_root
        name = str(ctx.json().get("displayName") or "").strip()
        if not name:
            raise bad_request("displayName is required.", "ErrorInvalidRequest")
        if any(
            f.parent_id == parent and f.display_name.lower() == name.lower()
            for f in box.mail_folders.values()
        ):
            raise GraphError(409, "ErrorFolderExists", "A folder with the specified name already exists.")
        folder = Folder(opaque_id("AQMkAD"), name, parent)
        box.mail_folders[folder.id] = folder
        body = {
            "@odata.context": ctx.context(f"users('{box.id}')/mailFolders/$entity"),
            **self._folder_json(box, folder),
        }
        return json_response(ctx, body, 201)

    async def get_mail_folder(self, ctx: Ctx) -> Response:
        """mailfolder-get, with $expand=singleValueExtendedProperties($filter=id eq '...')
        (singlevaluelegacyextendedproperty-get: "Get a resource instance expanded with a specific
        extended property" lists mailFolder among the supported resources)."""
        box = ctx.mailbox
        folder = box.mail_folder(ctx.params["folder"])
        body = self._folder_json(box, folder)
        wanted = ctx.expand_extended()
        found = [
            dict(p) for k, p in folder.extended.items() if wanted is not None and (not wanted or k in wanted)
        ]
        if found:
            body[resources.EXTENDED] = found
        return json_response(
            ctx, {"@odata.context": ctx.context(f"users('{box.id}')/mailFolders/$entity"), **body}
        )

    async def update_mail_folder(self, ctx: Ctx) -> Response:
        """mailfolder-update; singleValueExtendedProperties are created or updated by the same PATCH
        (singlevaluelegacyextendedproperty-post-singlevalueextendedproperties)."""
        box = ctx.mailbox
        body = ctx.json()
        folder = box.mail_folder(ctx.params["folder"])
        extended = resources.read_extended(body)
        if extended:
            folder.extended.update(extended)
            folder.change_key = change_key()
        folder = rename(folder, body)
        return json_response(ctx, self._folder_json(box, folder))

    async def delete_mail_folder(self, ctx: Ctx) -> Response:
        """mailfolder-delete: the folder and what it holds; distinguished folders stay."""
        folder = ctx.mailbox.mail_folder(ctx.params["folder"])
        if folder.well_known:
            raise GraphError(
                403, "ErrorDeleteDistinguishedFolder", "Distinguished folders cannot be deleted."
            )
        self._drop_folder(ctx.mailbox, Kind.MESSAGE, ctx.mailbox.mail_folders, folder)
        return json_response(ctx, None, 204)

    def _drop_folder(self, box: Mailbox, kind: Kind, folders: dict[str, Folder], folder: Folder) -> None:
        """Delete a folder or list with its child folders and their items (each a real delete)."""
        for child in [f for f in folders.values() if f.parent_id == folder.id]:
            self._drop_folder(box, kind, folders, child)
        for item in box.items_in(kind, folder.id):
            self.store.delete_item(box, item)
        del folders[folder.id]

    # -- messages: learn.microsoft.com/graph/api/user-post-messages, message-get/update/delete/move

    def _message(self, ctx: Ctx) -> Item:
        return ctx.mailbox.item(ctx.params["item"], Kind.MESSAGE)

    async def list_messages(self, ctx: Ctx) -> Response:
        box = ctx.mailbox
        folder = box.mail_folder(ctx.params["folder"]).id if "folder" in ctx.params else None
        return self._list(ctx, Kind.MESSAGE, folder, f"users('{box.id}')/messages")

    async def create_message(self, ctx: Ctx) -> Response:
        """POST /messages creates a draft in Drafts (user-post-messages); POST to a folder's messages
        creates it in that folder (mailfolder-post-messages)."""
        box = ctx.mailbox
        folder = box.mail_folder(ctx.params.get("folder", "drafts"))
        item = self._create(ctx, Kind.MESSAGE, folder.id, draft=True)
        return self._entity(ctx, item, f"users('{box.id}')/messages", 201)

    async def get_message(self, ctx: Ctx) -> Response:
        return self._entity(ctx, self._message(ctx), f"users('{ctx.mailbox.id}')/messages")

    async def update_message(self, ctx: Ctx) -> Response:
        item = self._message(ctx)
        self._update(ctx, item)
        return self._entity(ctx, item, f"users('{ctx.mailbox.id}')/messages")

    async def delete_message(self, ctx: Ctx) -> Response:
        """message-delete: the message leaves the mailbox's folders (Graph keeps it in the hidden
        Recoverable Items Deletions folder, which no simulated API reads)."""
        self.store.delete_item(ctx.mailbox, self._checked(ctx, self._message(ctx)))
        return json_response(ctx, None, 204)

    async def move_message(self, ctx: Ctx) -> Response:
        """message-move: 201 with the moved message, whose id changes unless immutable ids are used.
        Action parameter names are case-insensitive (msgraph-sdk sends ``DestinationId``)."""
        item = self._message(ctx)
        destination = {k.lower(): v for k, v in ctx.json().items()}.get("destinationid")
        if not isinstance(destination, str):
            raise bad_request("destinationId is required.", "ErrorInvalidIdMalformed")
        folder = ctx.mailbox.mail_folder(destination)
        self.store.move_item(ctx.mailbox, item, folder.id)
        return self._entity(ctx, item, f"users('{ctx.mailbox.id}')/messages", 201)

    # -- attachments: learn.microsoft.com/graph/api/message-post-attachments, attachment-get/delete

    async def list_attachments(self, ctx: Ctx) -> Response:
        item = self._message(ctx)
        values = [resources.attachment_json(a) for a in item.attachments.values()]
        return collection(ctx, values, f"users('{ctx.mailbox.id}')/messages('{item.rest_id}')/attachments")

    async def add_attachment(self, ctx: Ctx) -> Response:
        item = self._message(ctx)
        body = ctx.json()
        if str(body.get("@odata.type", "")).lower() != "#microsoft.graph.fileattachment":
            raise bad_request("Only #microsoft.graph.fileAttachment is simulated.", "ErrorInvalidRequest")
        try:
            content = base64.b64decode(str(body.get("contentBytes", "")), validate=True)
        except ValueError as exc:
            raise bad_request("contentBytes must be base64.", "ErrorInvalidRequest") from exc
        attachment: Json = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "id": str(opaque_id("AAMkAD") + "BEgAQA"),
            "lastModifiedDateTime": iso_z(dt.datetime.now(dt.UTC)),
            "name": str(body.get("name") or "attachment"),
            "contentType": str(body.get("contentType") or "application/octet-stream"),
            "size": len(content),
            "isInline": bool(body.get("isInline", False)),
            "contentId": body.get("contentId"),
            "contentLocation": None,
            "contentBytes": base64.b64encode(content).decode("ascii"),
        }
        item.attachments[str(attachment["id"])] = attachment
        self.store.update_item(ctx.mailbox, item)
        return json_response(ctx, attachment, 201)

    def _attachment(self, ctx: Ctx) -> tuple[Item, Json]:
        item = self._message(ctx)
        attachment = item.attachments.get(ctx.params["attachment"])
        if attachment is None:
            raise not_found("attachment")
        return item, attachment

    async def get_attachment(self, ctx: Ctx) -> Response:
        return json_response(ctx, resources.attachment_json(self._attachment(ctx)[1]))

    async def delete_attachment(self, ctx: Ctx) -> Response:
        item, attachment = self._attachment(ctx)
        del item.attachments[attachment["id"]]
        self.store.update_item(ctx.mailbox, item)
        return json_response(ctx, None, 204)

    async def delta_messages(self, ctx: Ctx) -> Response:
        folder = ctx.mailbox.mail_folder(ctx.params["folder"])
        return self._delta(ctx, Kind.MESSAGE, folder.id, "messages")

    # -- contacts: learn.microsoft.com/graph/api/user-post-contacts, contact-get/update/delete ----

    def _contact_folder(self, ctx: Ctx) -> Folder:
        box = ctx.mailbox
        return box.contact_folder(ctx.params.get("folder", box.default_contacts))

    async def list_contacts(self, ctx: Ctx) -> Response:
        folder = self._contact_folder(ctx)
        return self._list(ctx, Kind.CONTACT, folder.id, f"users('{ctx.mailbox.id}')/contacts")

    async def create_contact(self, ctx: Ctx) -> Response:
        item = self._create(ctx, Kind.CONTACT, self._contact_folder(ctx).id, draft=False)
        return self._entity(ctx, item, f"users('{ctx.mailbox.id}')/contacts", 201)

    async def get_contact(self, ctx: Ctx) -> Response:
        item = ctx.mailbox.item(ctx.params["item"], Kind.CONTACT)
        return self._entity(ctx, item, f"users('{ctx.mailbox.id}')/contacts")

    async def update_contact(self, ctx: Ctx) -> Response:
        item = ctx.mailbox.item(ctx.params["item"], Kind.CONTACT)
        self._update(ctx, item)
        return self._entity(ctx, item, f"users('{ctx.mailbox.id}')/contacts")

    async def delete_contact(self, ctx: Ctx) -> Response:
        self.store.delete_item(
            ctx.mailbox, self._checked(ctx, ctx.mailbox.item(ctx.params["item"], Kind.CONTACT))
        )
        return json_response(ctx, None, 204)

    async def delta_contacts(self, ctx: Ctx) -> Response:
        return self._delta(ctx, Kind.CONTACT, self._contact_folder(ctx).id, "contacts")

    # -- contact folders: learn.microsoft.com/graph/api/user-list-contactfolders, user-post-contactfolders

    def _contact_folder_json(self, ctx: Ctx, folder: Folder) -> Json:
        return {
            "@odata.context": ctx.context(f"users('{ctx.mailbox.id}')/contactFolders/$entity"),
            "id": folder.id,
            "displayName": folder.display_name,
            "parentFolderId": folder.parent_id,
        }

    async def list_contact_folders(self, ctx: Ctx) -> Response:
        box = ctx.mailbox
        values = [
            {k: v for k, v in self._contact_folder_json(ctx, f).items() if k != "@odata.context"}
            for f in box.contact_folders.values()
            if f.parent_id == box.default_contacts
        ]
        return collection(ctx, values, f"users('{box.id}')/contactFolders")

    async def create_contact_folder(self, ctx: Ctx) -> Response:
        box = ctx.mailbox
        name = str(ctx.json().get("displayName") or "").strip()
        if not name:
            raise bad_request("displayName is required.")
        if any(f.display_name.lower() == name.lower() for f in box.contact_folders.values()):
            raise GraphError(409, "ErrorFolderExists", "A folder with the specified name already exists.")
        folder = Folder(opaque_id("AQMkAD"), name, box.default_contacts)
        box.contact_folders[folder.id] = folder
        return json_response(ctx, self._contact_folder_json(ctx, folder), 201)

    async def get_contact_folder(self, ctx: Ctx) -> Response:
        return json_response(ctx, self._contact_folder_json(ctx, self._contact_folder(ctx)))

    async def update_contact_folder(self, ctx: Ctx) -> Response:
        folder = rename(self._contact_folder(ctx), ctx.json())
        return json_response(ctx, self._contact_folder_json(ctx, folder))

    async def delete_contact_folder(self, ctx: Ctx) -> Response:
        folder = self._contact_folder(ctx)
        if folder.well_known:
            raise GraphError(
                403, "ErrorDeleteDistinguishedFolder", "Distinguished folders cannot be deleted."
            )
        self._drop_folder(ctx.mailbox, Kind.CONTACT, ctx.mailbox.contact_folders, folder)
        return json_response(ctx, None, 204)

    # -- events: learn.microsoft.com/graph/api/user-post-events, event-get/update/delete ----------

    async def list_events(self, ctx: Ctx) -> Response:
        """user-list-events: single instances and series masters, not expanded occurrences."""
        return self._list(ctx, Kind.EVENT, None, f"users('{ctx.mailbox.id}')/events")

    async def create_event(self, ctx: Ctx) -> Response:
        item = self._create(ctx, Kind.EVENT, "calendar", draft=False)
        return self._entity(ctx, item, f"users('{ctx.mailbox.id}')/events", 201)

    async def get_event(self, ctx: Ctx) -> Response:
        box = ctx.mailbox
        master, original = events.find(box, ctx.params["item"])
        if original is None:
            return self._entity(ctx, master, f"users('{box.id}')/events")
        body = events.instance_json(box, master, original, ctx.view())
        return json_response(
            ctx, {"@odata.context": ctx.context(f"users('{box.id}')/events/$entity"), **(body or {})}
        )

    async def update_event(self, ctx: Ctx) -> Response:
        """Updating one occurrence turns it into an exception (event-update, "instances")."""
        box = ctx.mailbox
        master, original = events.find(box, ctx.params["item"])
        if original is None:
            self._update(ctx, master)
            return self._entity(ctx, master, f"users('{box.id}')/events")
        body = ctx.json()
        resources.check_writable(Kind.EVENT, body)
        _check_transaction_unchanged(master, body)
        overrides = {**(master.exceptions.get(original) or {}), **body}
        events.check_override(master, original, overrides)
        master.exceptions[original] = overrides
        master.exception_keys[original] = change_key()
        self.store.changed(box, master, "updated", master.container)
        if meetings.changes_meeting(body):
            meetings.send(self.store, box, master)
        instance = events.instance_json(box, master, original, ctx.view())
        return json_response(ctx, instance)

    async def delete_event(self, ctx: Ctx) -> Response:
        """Deleting a master deletes the series; deleting an occurrence cancels just that one."""
        box = ctx.mailbox
        master, original = events.find(box, ctx.params["item"])
        if original is None:
            self.store.delete_item(box, self._checked(ctx, master))
            meetings.cancel(self.store, box, master)
        else:
            master.exceptions[original] = None
            self.store.changed(box, master, "updated", master.container)
            meetings.send(self.store, box, master)
        return json_response(ctx, None, 204)

    async def list_instances(self, ctx: Ctx) -> Response:
        box = ctx.mailbox
        start, end = events.window(ctx.query)
        master, original = events.find(box, ctx.params["item"])
        if original is not None or not master.props.get("recurrence"):
            values = [] if original is not None else [resources.render(box, master, ctx.view())]
        else:
            values = events.instances(box, master, start, end, ctx.view())
        return collection(ctx, values, f"users('{box.id}')/events")

    async def list_calendar_view(self, ctx: Ctx) -> Response:
        start, end = events.window(ctx.query)
        values = events.calendar_view(ctx.mailbox, start, end, ctx.view())
        return collection(ctx, values, f"users('{ctx.mailbox.id}')/calendarView")

    async def delta_calendar_view(self, ctx: Ctx) -> Response:
        """event-delta on a calendarView: the window travels in the token; items that leave it come
        back as @removed; $select is not applied (the calendarView delta does not support it)."""
        box = ctx.mailbox

        def collect(options: dict[str, str]) -> list[Entry]:
            start, end = events.window(options)
            view = ctx.view(select=False)
            return [
                Entry(str(b["id"]), str(b["changeKey"]), str(b["id"]), functools.partial(_typed_event, b))
                for b in events.calendar_view(box, start, end, view)
            ]

        token_scope = "calendarView"
        if "$deltatoken" not in ctx.query and "$skiptoken" not in ctx.query:
            events.window(ctx.query)  # a first call without a window is a 400, not a 410 later
        return self.sim.delta.respond(
            ctx,
            scope=token_scope,
            odata_type=ODATA_TYPES[Kind.EVENT],
            collect=collect,
            default_page=DEFAULT_PAGE,
            context="Collection(event)",
            tracked_options=("startDateTime", "endDateTime"),
        )

    # -- To Do: learn.microsoft.com/graph/api/todo-list-lists, todotasklist-post-tasks, todotask-* --

    def _list_json(self, ctx: Ctx, folder: Folder) -> Json:
        return {
            "@odata.etag": etag(folder.change_key),
            "displayName": folder.display_name,
            "isOwner": True,
            "isShared": False,
            "wellknownListName": folder.well_known or "none",
            "id": folder.id,
        }

    async def list_todo_lists(self, ctx: Ctx) -> Response:
        values = [self._list_json(ctx, f) for f in ctx.mailbox.todo_lists.values()]
        return collection(ctx, values, f"users('{ctx.mailbox.id}')/todo/lists")

    async def create_todo_list(self, ctx: Ctx) -> Response:
        name = str(ctx.json().get("displayName") or "").strip()
        if not name:
            raise bad_request("displayName is required.", "invalidRequest")
        folder = Folder(opaque_id("AQMkAD"), name, None)
        ctx.mailbox.todo_lists[folder.id] = folder
        return json_response(ctx, self._list_json(ctx, folder), 201)

    async def get_todo_list(self, ctx: Ctx) -> Response:
        return json_response(ctx, self._list_json(ctx, ctx.mailbox.todo_list(ctx.params["list"])))

    async def update_todo_list(self, ctx: Ctx) -> Response:
        folder = rename(ctx.mailbox.todo_list(ctx.params["list"]), ctx.json())
        return json_response(ctx, self._list_json(ctx, folder))

    async def delete_todo_list(self, ctx: Ctx) -> Response:
        folder = ctx.mailbox.todo_list(ctx.params["list"])
        if folder.well_known == "defaultList":
            raise GraphError(400, "invalidRequest", "The default list cannot be deleted.")
        self._drop_folder(ctx.mailbox, Kind.TASK, ctx.mailbox.todo_lists, folder)
        return json_response(ctx, None, 204)

    def _task(self, ctx: Ctx) -> Item:
        folder = ctx.mailbox.todo_list(ctx.params["list"])
        item = ctx.mailbox.item(ctx.params["item"], Kind.TASK)
        if item.container != folder.id:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return item

    async def list_tasks(self, ctx: Ctx) -> Response:
        folder = ctx.mailbox.todo_list(ctx.params["list"])
        return self._list(
            ctx, Kind.TASK, folder.id, f"users('{ctx.mailbox.id}')/todo/lists('{folder.id}')/tasks"
        )

    async def create_task(self, ctx: Ctx) -> Response:
        """todotasklist-post-tasks: the 201 answer carries the linkedResources created with the task."""
        folder = ctx.mailbox.todo_list(ctx.params["list"])
        item = self._create(ctx, Kind.TASK, folder.id, draft=False)
        context = f"users('{ctx.mailbox.id}')/todo/lists('{folder.id}')/tasks/$entity"
        body = {"@odata.context": ctx.context(context), **resources.render(ctx.mailbox, item, ctx.view())}
        if item.linked:
            body["linkedResources"] = list(item.linked.values())
        return json_response(ctx, body, 201)

    # -- linkedResources: todotask-list-linkedresources, todotask-post-linkedresources, linkedresource-get

    def _linked_context(self, ctx: Ctx, item: Item) -> str:
        return (
            f"users('{ctx.mailbox.id}')/todo/lists('{item.container}')/tasks('{item.immutable_id}')"
            "/linkedResources"
        )

    async def list_linked(self, ctx: Ctx) -> Response:
        item = self._task(ctx)
        values = [resources.linked_json(r) for r in item.linked.values()]
        return collection(ctx, values, self._linked_context(ctx, item))

    async def create_linked(self, ctx: Ctx) -> Response:
        """201 with the new linkedResource; the task itself is not changed (no task notification)."""
        item = self._task(ctx)
        resource = resources.linked_resource(ctx.json())
        item.linked[str(resource["id"])] = resource
        body = {"@odata.context": ctx.context(self._linked_context(ctx, item) + "/$entity"),
                **resources.linked_json(resource)}  # fmt: skip
        return json_response(ctx, body, 201)

    async def get_linked(self, ctx: Ctx) -> Response:
        item = self._task(ctx)
        resource = item.linked.get(ctx.params["linked"])
        if resource is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        body = {"@odata.context": ctx.context(self._linked_context(ctx, item) + "/$entity"),
                **resources.linked_json(resource)}  # fmt: skip
        return json_response(ctx, body)

    async def get_task(self, ctx: Ctx) -> Response:
        item = self._task(ctx)
        return self._entity(ctx, item, f"users('{ctx.mailbox.id}')/todo/lists('{item.container}')/tasks")

    async def update_task(self, ctx: Ctx) -> Response:
        item = self._task(ctx)
        self._update(ctx, item)
        return self._entity(ctx, item, f"users('{ctx.mailbox.id}')/todo/lists('{item.container}')/tasks")

    async def delete_task(self, ctx: Ctx) -> Response:
        self.store.delete_item(ctx.mailbox, self._checked(ctx, self._task(ctx)))
        return json_response(ctx, None, 204)

    async def delta_tasks(self, ctx: Ctx) -> Response:
        folder = ctx.mailbox.todo_list(ctx.params["list"])
        return self._delta(ctx, Kind.TASK, folder.id, "tasks")

    # -- master categories: learn.microsoft.com/graph/api/outlookuser-list-mastercategories, -post-,
    #    outlookcategory-get/update/delete ---------------------------------------------------------

    def _category(self, ctx: Ctx) -> Json:
        found = ctx.mailbox.categories.get(ctx.params["category"])
        if found is None:
            raise not_found("category")
        return found

    async def list_categories(self, ctx: Ctx) -> Response:
        return collection(
            ctx, list(ctx.mailbox.categories.values()), f"users('{ctx.mailbox.id}')/outlook/masterCategories"
        )

    async def create_category(self, ctx: Ctx) -> Response:
        body = ctx.json()
        name = str(body.get("displayName") or "").strip()
        color = str(body.get("color") or "none")
        if not name or color not in CATEGORY_COLORS:
            raise bad_request("A category needs a displayName and a color preset0..preset24 or none.")
        if any(c["displayName"].lower() == name.lower() for c in ctx.mailbox.categories.values()):
            raise GraphError(409, "ErrorDuplicateCategoryName", "A category with that name already exists.")
        category = {"id": str(uuid.uuid4()), "displayName": name, "color": color}
        ctx.mailbox.categories[category["id"]] = category
        return json_response(ctx, category, 201)

    async def get_category(self, ctx: Ctx) -> Response:
        return json_response(ctx, self._category(ctx))

    async def update_category(self, ctx: Ctx) -> Response:
        """Only the color can change: displayName is read-only after creation (outlookcategory-update)."""
        category = self._category(ctx)
        body = ctx.json()
        if "displayName" in body:
            raise bad_request("The displayName of a category cannot be changed.")
        color = str(body.get("color") or category["color"])
        if color not in CATEGORY_COLORS:
            raise bad_request("color must be preset0..preset24 or none.")
        category["color"] = color
        return json_response(ctx, category)

    async def delete_category(self, ctx: Ctx) -> Response:
        category = self._category(ctx)
        del ctx.mailbox.categories[category["id"]]
        return json_response(ctx, None, 204)
