"""CRM -> Outlook, the pure parts: routing a changed record to mailboxes, the default filters' OData,
the webhook's parsing and key check, and what leaving the filter does to a linked item."""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET

import pytest

from shared.domain.model import ItemKind, content_hash
from shared.store.crm_jobs import CrmWork, CrmWorkSource
from shared.store.jobs import InvalidJob
from shared.sync.crm_filter import DEFAULT_FILTERS, reaches_beyond_the_user, with_ids
from shared.sync.crm_intake import WebhookRejected, key_matches, parse_context
from shared.sync.merge import Side
from shared.sync.plan import (
    DeleteInOutlook,
    DeletePolicy,
    DropLink,
    Link,
    OutlookState,
    SyncPolicy,
    UnlinkOnly,
)
from shared.sync.planner_filter import plan_left_filter
from shared.sync.routing import RecordPeople, mailboxes_for
from tests.sync.samples import appointments, contacts, tasks

OWNER, ATTENDEE, STRANGER = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
USERS = {OWNER: "mbx-owner", ATTENDEE: "mbx-attendee"}


# -- routing -------------------------------------------------------------------------------------


def test_a_record_concerns_its_owner_its_user_parties_and_every_mailbox_linking_it() -> None:
    people = RecordPeople(owner=OWNER, parties=frozenset({ATTENDEE, STRANGER}))
    assert mailboxes_for(people, USERS, ["mbx-old-owner"]) == {"mbx-owner", "mbx-attendee", "mbx-old-owner"}


def test_a_record_of_unregistered_users_concerns_only_the_mailboxes_linking_it() -> None:
    assert mailboxes_for(RecordPeople(owner=STRANGER), USERS, []) == set()
    assert mailboxes_for(RecordPeople(), USERS, ["mbx-a"]) == {"mbx-a"}


# -- default filters -----------------------------------------------------------------------------


def test_the_changed_ids_are_added_to_a_filter_as_an_in_condition() -> None:
    """Dynamics' default filters as FetchXML; the ids restrict the query, which returns only the ids."""
    a, b = uuid.uuid4(), uuid.uuid4()
    custom = (
        '<fetch top="3"><entity name="contact"><all-attributes/><order attribute="fullname"/>'
        '<filter><condition attribute="address1_city" operator="eq" value="Oslo"/></filter></entity></fetch>'
    )
    root = ET.fromstring(with_ids(custom, "contact", [a, b]))  # noqa: S314 - our own output
    assert root.get("distinct") == "true"
    assert root.get("top") is None
    entity = root.find("entity")
    assert entity is not None
    assert [child.tag for child in entity] == ["filter", "attribute", "filter"]
    assert entity[1].get("name") == "contactid"
    condition = entity[2].find("condition")
    assert condition is not None
    assert (condition.get("attribute"), condition.get("operator")) == ("contactid", "in")
    assert [value.text for value in condition] == [str(a), str(b)]
    for table, fetch in DEFAULT_FILTERS.items():
        assert ET.fromstring(with_ids(fetch, table, [a])).find("entity") is not None  # noqa: S314
    with pytest.raises(ValueError, match="not 'task'"):
        with_ids(custom, "task", [a])


# -- the webhook ---------------------------------------------------------------------------------


def _context(message: str = "Create", table: str = "contact", **extra: object) -> bytes:
    record_id = str(uuid.uuid4())
    owner = {"__type": "EntityReference:...", "Id": str(OWNER), "LogicalName": "systemuser"}
    target = {
        "Attributes": [{"key": "lastname", "value": "x"}, {"key": "ownerid", "value": owner}],
        "Id": record_id,
    }
    body = {
        "MessageName": message,
        "PrimaryEntityName": table,
        "PrimaryEntityId": record_id,
        "InputParameters": [{"key": "Target", "value": target}],
        **extra,
    }
    return json.dumps(body).encode()


def test_the_webhook_reads_message_table_id_and_owner_only() -> None:
    work = parse_context(_context())
    assert (work.table, len(work.changed), work.deleted, work.owner) == ("contact", 1, (), OWNER)
    assert work.source is CrmWorkSource.WEBHOOK
    assert work.mailbox_id is None
    assert "lastname" not in work.serialize()  # column values never travel
    deleted = parse_context(_context("Delete", "task"))
    assert (deleted.changed, len(deleted.deleted), deleted.owner) == ((), 1, None)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[]", 400),
        (_context(message="Retrieve"), 400),
        (_context(table="account"), 400),
        (_context(PrimaryEntityId="../etc"), 400),
        (b" " * (256 * 1024 + 1), 413),
    ],
)
def test_bad_webhook_input_is_refused_with_a_4xx(body: bytes, status: int) -> None:
    with pytest.raises(WebhookRejected) as refused:
        parse_context(body)
    assert refused.value.status == status


def test_the_webhook_key_must_match_exactly() -> None:
    key = "k" * 40
    assert key_matches(key, key)
    assert not key_matches(key[:-1] + "x", key)
    assert not key_matches(None, key)
    assert not key_matches(key, None)  # no key configured: every call refused
    assert not key_matches("", "")


def test_crm_work_refuses_unknown_fields_and_tables() -> None:
    with pytest.raises(InvalidJob):
        CrmWork.parse(json.dumps({"table": "email", "source": "webhook"}))
    with pytest.raises(InvalidJob):
        CrmWork.parse(json.dumps({"table": "contact", "source": "webhook", "body": "x"}))


# -- leaving the filter --------------------------------------------------------------------------


def _link(item: object, kind_hash: str | None = None) -> Link:
    return Link(
        outlook_id="o1",
        crm_id=uuid.uuid4(),
        outlook_change_key="ck1",
        crm_etag="e1",
        outlook_hash=kind_hash or content_hash(item),  # type: ignore[arg-type]
        crm_hash="h",
    )


POLICY = SyncPolicy()


@pytest.mark.parametrize(("kind", "item"), [(ItemKind.CONTACT, contacts()[0]), (ItemKind.TASK, tasks()[0])])
def test_an_unchanged_contact_or_task_crmsync_created_is_removed(kind: ItemKind, item: object) -> None:
    link = _link(item)
    outlook = OutlookState("o1", "ck2", item)  # type: ignore[arg-type]
    actions = plan_left_filter(kind, link=link, outlook=outlook, created_from_crm=True, policy=POLICY)
    assert [type(a) for a in actions] == [DeleteInOutlook, DropLink]


def test_an_item_made_in_outlook_or_changed_there_is_kept_unlinked() -> None:
    item = contacts()[0]
    changed = contacts()[1]
    made_here = plan_left_filter(
        ItemKind.CONTACT,
        link=_link(item),
        outlook=OutlookState("o1", "ck1", item),
        created_from_crm=False,
        policy=POLICY,
    )
    edited = plan_left_filter(
        ItemKind.CONTACT,
        link=_link(item),
        outlook=OutlookState("o1", "ck9", changed),
        created_from_crm=True,
        policy=POLICY,
    )
    for actions in (made_here, edited):
        assert [type(a) for a in actions] == [UnlinkOnly]
        assert isinstance(actions[0], UnlinkOnly)
        assert actions[0].kept is Side.OUTLOOK


def test_a_meeting_is_never_deleted_for_leaving_the_filter() -> None:
    item = appointments()[0]
    actions = plan_left_filter(
        ItemKind.APPOINTMENT,
        link=_link(item),
        outlook=OutlookState("o1", "ck1", item),
        created_from_crm=True,
        policy=POLICY,
    )
    assert [type(a) for a in actions] == [UnlinkOnly]


def test_the_unlink_policy_never_deletes() -> None:
    item = tasks()[0]
    actions = plan_left_filter(
        ItemKind.TASK,
        link=_link(item),
        outlook=OutlookState("o1", "ck1", item),
        created_from_crm=True,
        policy=SyncPolicy(delete_policy=DeletePolicy.UNLINK),
    )
    assert [type(a) for a in actions] == [UnlinkOnly]


@pytest.mark.parametrize("table", ["contact", "appointment", "task"])
def test_the_default_filters_never_reach_beyond_the_user(table: str) -> None:
    assert not reaches_beyond_the_user(DEFAULT_FILTERS[table], table)


@pytest.mark.parametrize(
    ("conditions", "beyond"),
    [
        (
            "<condition attribute='ownerid' operator='eq-userid'/><condition attribute='address1_city' "
            "operator='eq' value='Oslo'/>",
            False,
        ),
        ("<condition attribute='address1_city' operator='eq' value='Oslo'/>", True),
        ("<condition attribute='ownerid' operator='eq-useroruserteams'/>", True),
    ],
)
def test_a_filter_reaches_beyond_the_user_unless_it_requires_ownership(conditions: str, beyond: bool) -> None:
    fetch = f"<fetch><entity name='contact'><filter>{conditions}</filter></entity></fetch>"
    assert reaches_beyond_the_user(fetch, "contact") is beyond
    either = f"<fetch><entity name='contact'><filter type='or'>{conditions}</filter></entity></fetch>"
    assert reaches_beyond_the_user(either, "contact")


def test_an_appointment_filter_on_any_party_role_reaches_beyond() -> None:
    """A user as sender or customer (not organizer or attendee) is not routed as a party."""
    fetch = (
        "<fetch><entity name='appointment'><link-entity name='activityparty' from='activityid' "
        "to='activityid'><filter><condition attribute='partyid' operator='eq-userid'/>"
        "</filter></link-entity></entity></fetch>"
    )
    assert reaches_beyond_the_user(fetch, "appointment")
