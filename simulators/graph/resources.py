"""Graph JSON shapes of messages, contacts, events and To Do tasks: defaults, validation, rendering.

Property names and enums follow the Graph v1.0 contract slice
(/work/shared/contracts/graph, from Microsoft's OpenAPI descriptions) and the resource pages
on learn.microsoft.com/graph/api/resources/{message,contact,event,todotask}.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import html
import re
import secrets
import uuid
from dataclasses import dataclass

from simulators.graph import meetings, timezones
from simulators.graph.core import Json, bad_request, etag, iso_z, opaque_id, random_hex_upper
from simulators.graph.store import Item, Kind, Mailbox

ODATA_TYPES = {
    Kind.MESSAGE: "#microsoft.graph.message",
    Kind.CONTACT: "#microsoft.graph.contact",
    Kind.EVENT: "#microsoft.graph.event",
    Kind.TASK: "#microsoft.graph.todoTask",
}

# Writable properties per kind (the contract slice's schemas minus server-computed ones).
WRITABLE: dict[Kind, frozenset[str]] = {
    Kind.MESSAGE: frozenset(
        [
            "categories",
            "bccRecipients",
            "body",
            "ccRecipients",
            "conversationId",
            "flag",
            "from",
            "importance",
            "inferenceClassification",
            "internetMessageHeaders",
            "internetMessageId",
            "isDeliveryReceiptRequested",
            "isRead",
            "isReadReceiptRequested",
            "replyTo",
            "sender",
            "subject",
            "toRecipients",
            "receivedDateTime",
            "sentDateTime",
            "isDraft",
        ]
    ),
    Kind.CONTACT: frozenset(
        [
            "categories",
            "assistantName",
            "birthday",
            "businessAddress",
            "businessHomePage",
            "businessPhones",
            "children",
            "companyName",
            "department",
            "displayName",
            "emailAddresses",
            "fileAs",
            "generation",
            "givenName",
            "homeAddress",
            "homePhones",
            "imAddresses",
            "initials",
            "jobTitle",
            "manager",
            "middleName",
            "mobilePhone",
            "nickName",
            "officeLocation",
            "otherAddress",
            "personalNotes",
            "profession",
            "spouseName",
            "surname",
            "title",
            "yomiCompanyName",
            "yomiGivenName",
            "yomiSurname",
        ]
    ),
    Kind.EVENT: frozenset(
        [
            "categories",
            "allowNewTimeProposals",
            "attendees",
            "body",
            "end",
            "hideAttendees",
            "importance",
            "isAllDay",
            "isOnlineMeeting",
            "isReminderOn",
            "location",
            "locations",
            "onlineMeetingProvider",
            "organizer",
            "recurrence",
            "reminderMinutesBeforeStart",
            "responseRequested",
            "sensitivity",
            "showAs",
            "start",
            "subject",
            "transactionId",
            "iCalUId",
            "isCancelled",
        ]
    ),
    Kind.TASK: frozenset(
        [
            "body",
            "categories",
            "completedDateTime",
            "dueDateTime",
            "importance",
            "isReminderOn",
            "recurrence",
            "reminderDateTime",
            "startDateTime",
            "status",
            "title",
        ]
    ),
}

# learn.microsoft.com/graph/api/message-update: these "can be updated only if isDraft = true".
DRAFT_ONLY = frozenset(
    [
        "bccRecipients",
        "body",
        "ccRecipients",
        "internetMessageId",
        "replyTo",
        "sender",
        "subject",
        "toRecipients",
        "from",
    ]
)
EXTENDED = "singleValueExtendedProperties"
ATTACHMENTS = "attachments"


@dataclass(frozen=True)
class View:
    """How a request wants items rendered (Prefer headers, $select, $expand)."""

    immutable_ids: bool = False
    time_zone: str = "UTC"
    select: frozenset[str] | None = None
    expand_extended: frozenset[str] | None = None  # lower-cased property ids to include
    body_type: str | None = None  # Prefer: outlook.body-content-type ("text" or "html")


def check_writable(kind: Kind, body: Json) -> None:
    """Unknown properties are a 400, as Graph rejects them (learn.microsoft.com/graph/errors)."""
    for name in body:
        if name.startswith("@odata.") or name in (EXTENDED, ATTACHMENTS):
            continue
        if name not in WRITABLE[kind]:
            raise bad_request(
                f"The property '{name}' does not exist on type 'microsoft.graph.{kind.value}'. Make sure to "
                "only use property names that are defined by the type.",
                "RequestBodyRead",
            )


def read_extended(body: Json) -> dict[str, Json]:
    """Pop the single-value extended properties written with an item, keyed by lower-cased id
    (learn.microsoft.com/graph/api/singlevaluelegacyextendedproperty-post-singlevalueextendedproperties:
    they are created or updated with a POST or PATCH of the item itself)."""
    found: dict[str, Json] = {}
    for prop in body.pop(EXTENDED, None) or []:
        if not isinstance(prop, dict) or not isinstance(prop.get("id"), str) or "value" not in prop:
            raise bad_request("A singleValueExtendedProperty needs an id and a value.")
        found[extended_key(prop["id"])] = {"id": prop["id"], "value": prop["value"]}
    return found


LINKED = "linkedResources"
# learn.microsoft.com/graph/api/resources/linkedresource: id (server generated), webUrl,
# applicationName, displayName, externalId - all strings.
LINKED_FIELDS = ("webUrl", "applicationName", "displayName", "externalId")


def linked_resource(body: object) -> Json:
    """Validate one linkedResource body (todotask-post-linkedresources) and give it its server id."""
    if not isinstance(body, dict):
        raise bad_request("A linkedResource must be a JSON object.", "BadRequest")
    for name, value in body.items():
        if name in {"@odata.type", "id"}:
            continue
        if name not in LINKED_FIELDS:
            raise bad_request(
                f"The property '{name}' does not exist on type 'microsoft.graph.linkedResource'.",
                "RequestBodyRead",
            )
        if value is not None and not isinstance(value, str):
            raise bad_request(f"The linkedResource property '{name}' must be a string.", "BadRequest")
    return {"id": str(uuid.uuid4()), **{name: body.get(name) for name in LINKED_FIELDS}}


def read_linked(body: Json) -> list[Json]:
    """Pop the linkedResources a task is created with (todotasklist-post-tasks: "creates a todoTask in
    the specified task list, and includes a linkedResource")."""
    raw = body.pop(LINKED, None)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_request("linkedResources must be a JSON array.", "BadRequest")
    return [linked_resource(entry) for entry in raw]


def linked_json(resource: Json) -> Json:
    return {"@odata.type": "#microsoft.graph.linkedResource", **resource}


def extended_key(prop_id: str) -> str:
    """The key an extended property is stored and found under. singlevaluelegacyextendedproperty-get:
    "Filtering the string name (Name) in the id of an extended property is case-sensitive", so only the
    type and property set GUID of ``"String {guid} Name X"`` compare case-insensitively."""
    match = re.fullmatch(r"\s*(\w+)\s+(\{[0-9A-Fa-f-]+\})\s+((?i:name))\s+(.+?)\s*", prop_id)
    if match is None:
        return prop_id.strip().lower()
    return f"{match.group(1).lower()} {match.group(2).lower()} name {match.group(4)}"


def _email_name(address: object) -> Json:
    return address if isinstance(address, dict) else {"name": "", "address": ""}


def new_props(kind: Kind, box: Mailbox, body: Json, *, draft: bool) -> Json:
    """Server defaults a newly created item gets (see each kind's resource page)."""
    props: Json = {"categories": []}
    if kind is Kind.MESSAGE:
        now = iso_z(dt.datetime.now(dt.UTC))
        props.update(
            subject="",
            body={"contentType": "text", "content": ""},
            importance="normal",
            isRead=draft,
            isDraft=draft,
            toRecipients=[],
            ccRecipients=[],
            bccRecipients=[],
            replyTo=[],
            flag={"flagStatus": "notFlagged"},
            inferenceClassification="focused",
            isDeliveryReceiptRequested=False,
            isReadReceiptRequested=False,
            internetMessageId=f"<{random_hex_upper(16)}@sim.crmsync.local>",
            conversationId=opaque_id("AAQkAD"),
            conversationIndex=base64.b64encode(secrets.token_bytes(22)).decode("ascii"),
            receivedDateTime=now,
            sentDateTime=now,
            **({} if draft else {"from": _mailbox_recipient(box), "sender": _mailbox_recipient(box)}),
        )
    elif kind is Kind.CONTACT:
        props.update(
            businessPhones=[],
            homePhones=[],
            emailAddresses=[],
            imAddresses=[],
            children=[],
            businessAddress={},
            homeAddress={},
            otherAddress={},
            fileAs="",
        )
    elif kind is Kind.EVENT:
        props.update(
            subject="",
            body={"contentType": "html", "content": ""},
            importance="normal",
            sensitivity="normal",
            showAs="busy",
            isAllDay=False,
            isCancelled=False,
            isDraft=False,
            isOnlineMeeting=False,
            onlineMeetingProvider="unknown",
            isReminderOn=True,
            reminderMinutesBeforeStart=15,
            responseRequested=True,
            allowNewTimeProposals=True,
            hideAttendees=False,
            location={"displayName": "", "locationType": "default", "uniqueIdType": "unknown"},
            locations=[],
            attendees=[],
            organizer=_mailbox_recipient(box),
            iCalUId="040000008200E00074C5B7101A82E00800000000" + random_hex_upper(28),
            transactionId=None,
        )
    elif kind is Kind.TASK:
        props.update(
            title="",
            body={"content": "", "contentType": "text"},
            importance="normal",
            isReminderOn=False,
            status="notStarted",
            hasAttachments=False,
        )
    merge(kind, props, body)
    return props


def _mailbox_recipient(box: Mailbox) -> Json:
    return {"emailAddress": {"name": box.display_name, "address": box.mail}}


def merge(kind: Kind, props: Json, body: Json) -> None:
    """Apply a POST/PATCH body and keep derived properties (bodyPreview, displayName, ...) in step."""
    for name, value in body.items():
        if not name.startswith("@odata."):
            props[name] = copy.deepcopy(value)
    if kind is Kind.CONTACT and not props.get("displayName"):
        # Outlook composes displayName from the name parts when none is given.
        parts = [props.get(p) for p in ("givenName", "middleName", "surname")]
        props["displayName"] = " ".join(str(p) for p in parts if p)
    if kind in (Kind.MESSAGE, Kind.EVENT):
        content = str((props.get("body") or {}).get("content") or "")
        props["bodyPreview"] = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", content)).strip()[:255]
    if kind is Kind.EVENT:
        _validate_event(props)
        props.setdefault("originalStartTimeZone", props["start"].get("timeZone", "UTC"))
        props.setdefault("originalEndTimeZone", props["end"].get("timeZone", "UTC"))
        props["type"] = "seriesMaster" if props.get("recurrence") else "singleInstance"
    if kind is Kind.TASK and "status" in body:
        if body["status"] == "completed" and not props.get("completedDateTime"):
            now = dt.datetime.now(dt.UTC)
            props["completedDateTime"] = timezones.render(now, "UTC")
        elif body["status"] != "completed":
            props.pop("completedDateTime", None)


def _validate_event(props: Json) -> None:
    """start and end are required; an all-day event starts and ends at midnight in one zone
    (learn.microsoft.com/graph/api/resources/event, isAllDay)."""
    start, end = props.get("start"), props.get("end")
    if not isinstance(start, dict) or not isinstance(end, dict):
        raise bad_request("An event needs start and end dateTimeTimeZone values.")
    if timezones.to_utc(end) < timezones.to_utc(start):
        raise bad_request("The event's end time must be after its start time.")
    if props.get("isAllDay"):
        s_wall, e_wall = timezones.wall_clock(start), timezones.wall_clock(end)
        if s_wall.time() != dt.time() or e_wall.time() != dt.time() or e_wall <= s_wall:
            raise bad_request(
                "Your request can't be completed. If the event is an all-day event, start and end "
                "must be at midnight and at least one day apart.",
                "ErrorPropertyValidationFailure",
            )


def render(box: Mailbox, item: Item, view: View, *, with_type: bool = False) -> Json:
    """An item as Graph returns it: annotations, ids, change key, timestamps, then properties."""
    out: Json = {}
    if with_type:
        out["@odata.type"] = ODATA_TYPES[item.kind]
    out["@odata.etag"] = etag(item.change_key)
    out["id"] = item.visible_id(view.immutable_ids)
    props = item.props
    if item.kind is not Kind.TASK:
        out["createdDateTime"] = iso_z(item.created)
        out["lastModifiedDateTime"] = iso_z(item.modified)
        out["changeKey"] = item.change_key
    body = dict(props)  # values are replaced on update, never mutated in place, so shallow is enough
    if item.kind in (Kind.MESSAGE, Kind.EVENT) and view.body_type and isinstance(body.get("body"), dict):
        body["body"] = convert_body(body["body"], view.body_type)
    if item.kind is Kind.MESSAGE:
        folder_id = item.container
        body["parentFolderId"] = folder_id
        body["hasAttachments"] = bool(item.attachments)
        body["webLink"] = f"https://outlook.office365.com/owa/?ItemID={item.rest_id}&exvsurl=1"
    elif item.kind is Kind.CONTACT:
        body["parentFolderId"] = item.container
    elif item.kind is Kind.EVENT:
        body.update(_event_times(props, view.time_zone))
        body["hasAttachments"] = bool(item.attachments)
        # resources/event isOrganizer; resources/responsestatus: the owner's own response is
        # "organizer" on a meeting they organize and "notResponded" on an invitation not answered yet.
        organizer = meetings.is_organizer(box, item)
        body["isOrganizer"] = organizer
        body["responseStatus"] = {
            "response": "organizer" if organizer else "notResponded",
            "time": "0001-01-01T00:00:00Z",
        }
        # resources/event transactionId: "only returned in a response payload if an app has set it".
        if body.get("transactionId") is None:
            body.pop("transactionId", None)
        body["seriesMasterId"] = None
        # originalStart "is not returned for events that are single instances" (resources/event);
        # recurrence is only present on series masters (the contract has no null for it).
        if body.get("recurrence") is None:
            body.pop("recurrence", None)
        body["webLink"] = (
            f"https://outlook.office365.com/owa/?itemid={item.rest_id}&exvsurl=1&path=/calendar/item"
        )
        body["attendees"] = [_attendee(a) for a in body.get("attendees") or []]
    elif item.kind is Kind.TASK:
        out["createdDateTime"] = iso_z(item.created)
        out["lastModifiedDateTime"] = iso_z(item.modified)
        body["bodyLastModifiedDateTime"] = iso_z(item.modified)
    out.update(body)
    return shape(out, item, view)


def convert_body(item_body: Json, wanted: str) -> Json:
    """learn.microsoft.com/graph/api/message-get: ``Prefer: outlook.body-content-type="text"`` returns
    the body as plain text, ``"html"`` as HTML."""
    content = str(item_body.get("content") or "")
    current = str(item_body.get("contentType") or "text").lower()
    if wanted == current:
        return item_body
    if wanted == "text":
        text = re.sub(r"<(script|style)[^>]*>.*?</\1>", "", content, flags=re.IGNORECASE | re.DOTALL)
        text = html.unescape(re.sub(r"<br\s*/?>|</p>|</div>", "\n", text, flags=re.IGNORECASE))
        return {"contentType": "text", "content": re.sub(r"<[^>]+>", "", text).strip()}
    escaped = html.escape(content).replace("\n", "<br>")
    return {"contentType": "html", "content": f"<html><body>{escaped}</body></html>"}


def shape(out: Json, item: Item, view: View) -> Json:
    """Apply $select and $expand=singleValueExtendedProperties($filter=id eq '...')."""
    if view.select is not None:
        keep = view.select | {"id", "@odata.etag", "@odata.type"}
        out = {k: v for k, v in out.items() if k in keep}
    if view.expand_extended is not None:
        # Graph leaves the collection out when no property matches the expand filter.
        found = [
            dict(prop)
            for key, prop in item.extended.items()
            if not view.expand_extended or key in view.expand_extended
        ]
        if found:
            out[EXTENDED] = found
    return out


def _attendee(attendee: Json) -> Json:
    """Attendees carry a responseStatus; Outlook starts it at none (resources/attendee)."""
    out = dict(attendee)
    out.setdefault("type", "required")
    out.setdefault("status", {"response": "none", "time": "0001-01-01T00:00:00Z"})
    return out


def _event_times(props: Json, zone_name: str) -> Json:
    """start/end in the zone of Prefer: outlook.timezone (UTC when absent), per
    learn.microsoft.com/graph/api/event-get ("Support various time zones"). All-day events are
    floating: their midnight boundaries are kept, labelled with the asked zone."""
    if props.get("isAllDay"):
        return {
            "start": timezones.render_floating(timezones.wall_clock(props["start"]), zone_name),
            "end": timezones.render_floating(timezones.wall_clock(props["end"]), zone_name),
        }
    return {
        "start": timezones.render(timezones.to_utc(props["start"]), zone_name),
        "end": timezones.render(timezones.to_utc(props["end"]), zone_name),
    }


def attachment_json(attachment: Json, *, with_content: bool = True) -> Json:
    out = dict(attachment)
    if not with_content:
        out.pop("contentBytes", None)
    return out
