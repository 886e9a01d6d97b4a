"""Meetings between mailboxes of the simulated tenant: invitations, updates and cancellations.

What Exchange does when an organizer's calendar holds a meeting, as Graph documents it:

- learn.microsoft.com/graph/api/resources/eventmessage: "When an organizer or app sends a meeting
  request, the meeting request arrives in an invitee's mailbox as an eventMessage instance with the
  meetingMessageType of meetingRequest. In addition, Outlook automatically creates an event instance
  in the invitee's calendar, with the showAs property as tentative." The simulator creates that event
  (a real change in the invitee's mailbox: a ``created`` notification and a delta entry, like any new
  event); it does not deliver the eventMessage itself (see README, "Known simplifications").
- learn.microsoft.com/graph/api/resources/event: ``iCalUId`` is "a unique identifier for an event
  across calendars", so the invitee's copy has the organizer's iCalUId; ``isOrganizer`` is "true if the
  calendar owner ... is the organizer"; ``organizer`` is the organizer of the event.
- learn.microsoft.com/graph/api/resources/responsestatus: an attendee who has not answered sees
  ``notResponded`` in their own calendar ("if attendee Alex hasn't responded ... getting Alex' response
  status for that event in Alex' calendar returns notResponded"; "Clients can treat notResponded ==
  none"), while the organizer's copy lists every attendee's status as ``none``.
- learn.microsoft.com/graph/api/event-update: a meeting the organizer changes is updated for the
  attendees (a new attendee gets the invitation; one taken off the list gets a cancellation).
- learn.microsoft.com/graph/api/event-delete: "If the event is a meeting, deleting the event on the
  organizer's calendar sends a cancellation message to the meeting attendees"; the invitee's copy then
  has ``isCancelled`` true (resources/event: "Set to true if the event has been canceled") and stays
  in their calendar until they remove it, as in Outlook.

Only attendees whose address is a mailbox of the simulated tenant receive anything; other addresses
are outside the tenant (Exchange would send them an email the simulator does not model).
"""

from __future__ import annotations

import copy

from simulators.graph.core import Json
from simulators.graph.store import Item, Kind, Mailbox, Store

# What an invitation (and each update) carries from the organizer's event. Everything else on the
# invitee's copy is the invitee's own: categories, reminders, showAs, extended properties.
MEETING_FIELDS = (
    "subject",
    "body",
    "bodyPreview",
    "start",
    "end",
    "originalStartTimeZone",
    "originalEndTimeZone",
    "isAllDay",
    "location",
    "locations",
    "attendees",
    "recurrence",
    "type",
    "importance",
    "sensitivity",
    "isOnlineMeeting",
    "onlineMeetingProvider",
    "hideAttendees",
    "allowNewTimeProposals",
    "responseRequested",
    "organizer",
    "iCalUId",
)


def _address(recipient: object) -> str:
    email = recipient.get("emailAddress") if isinstance(recipient, dict) else None
    address = email.get("address") if isinstance(email, dict) else None
    return address.casefold() if isinstance(address, str) else ""


def is_organizer(box: Mailbox, item: Item) -> bool:
    """The calendar owner organizes the event: not an invitee's copy, and the organizer's address is
    the owner's (an event seeded with someone else as organizer stands for a received invitation)."""
    if item.kind is not Kind.EVENT or item.meeting is not None:
        return False
    return _address(item.props.get("organizer")) in (box.mail.casefold(), box.user_principal_name.casefold())


def _invitees(store: Store, box: Mailbox, item: Item) -> dict[str, Mailbox]:
    found: dict[str, Mailbox] = {}
    for attendee in item.props.get("attendees") or []:
        other = store.by_address(_address(attendee))
        if other is not None and other.id != box.id:
            found[other.id] = other
    return found


def _meeting_props(item: Item) -> Json:
    return {name: copy.deepcopy(item.props[name]) for name in MEETING_FIELDS if name in item.props}


def _copy_series(source: Item, target: Item) -> None:
    target.exceptions = copy.deepcopy(source.exceptions)
    target.exception_keys = dict(source.exception_keys)


def _invite(store: Store, invitee: Mailbox, item: Item, key: tuple[str, str]) -> Item:
    props: Json = {
        "categories": [],
        "showAs": "tentative",
        "isReminderOn": True,
        "reminderMinutesBeforeStart": 15,
        "isCancelled": False,
        "isDraft": False,
        "transactionId": None,
        **_meeting_props(item),
    }

    def prepare(new: Item) -> None:
        new.meeting = key
        _copy_series(item, new)

    created = store.new_item(invitee, Kind.EVENT, "calendar", props, None, prepare=prepare)
    store.invitations.setdefault(key, {})[invitee.id] = created.immutable_id
    return created


def _copy_of(store: Store, invitee_id: str, copy_id: str) -> tuple[Mailbox, Item] | None:
    invitee = store.users.get(invitee_id)
    found = invitee.items.get(copy_id) if invitee is not None else None
    return (invitee, found) if invitee is not None and found is not None else None


def _cancel(store: Store, invitee: Mailbox, found: Item) -> None:
    if not found.props.get("isCancelled"):
        found.props = {**found.props, "isCancelled": True}
        store.update_item(invitee, found)


def send(store: Store, box: Mailbox, item: Item) -> None:
    """The organizer's meeting was created or changed: invite new attendees, update the others'
    copies, cancel the copies of attendees taken off the list."""
    if not is_organizer(box, item):
        return
    key = (box.id, item.immutable_id)
    sent = store.invitations.get(key, {})
    invitees = _invitees(store, box, item)
    for invitee_id, copy_id in list(sent.items()):
        existing = _copy_of(store, invitee_id, copy_id)
        if existing is None:
            continue  # the invitee deleted their copy: an update re-creates it below
        invitee, found = existing
        if invitee_id not in invitees:
            _cancel(store, invitee, found)
            continue
        cancelled = bool(item.props.get("isCancelled"))
        found.props = {**found.props, **_meeting_props(item), "isCancelled": cancelled}
        _copy_series(item, found)
        store.update_item(invitee, found)
    for invitee_id, invitee in invitees.items():
        if _copy_of(store, invitee_id, sent.get(invitee_id, "")) is None:
            _invite(store, invitee, item, key)


def cancel(store: Store, box: Mailbox, item: Item) -> None:
    """The organizer deleted (or cancelled) the meeting: every invitee's copy is marked cancelled."""
    if not is_organizer(box, item):
        return
    for invitee_id, copy_id in store.invitations.pop((box.id, item.immutable_id), {}).items():
        existing = _copy_of(store, invitee_id, copy_id)
        if existing is not None:
            _cancel(store, *existing)


def changes_meeting(body: Json) -> bool:
    """Whether a PATCH of the organizer's event touches what the attendees see (an update is sent);
    the organizer's own categories, reminder or extended properties are not sent to anyone."""
    return any(name in MEETING_FIELDS or name == "isCancelled" for name in body)
