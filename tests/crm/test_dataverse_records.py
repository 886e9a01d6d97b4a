"""Single-record operations against the Dataverse simulator over HTTP, each following a powerapps-docs
page."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

import pytest

from shared.crm.dataverse import DataverseClient
from shared.crm.dataverse.wire import lookup_ref
from shared.crm.errors import ConcurrencyMismatch, DuplicateRecord, InvalidData, RecordNotFound
from shared.crm.port import CrmPort, Delete, FieldValue, Party, RecordRef, Upsert
from shared.domain.model import Participation
from simulators.dataverse.launcher import DataverseSimulator
from tests.crm.conftest import FixedTokenCredential, ReadAsSystem, UserFactory


def test_adapter_implements_the_port(crm: DataverseClient) -> None:
    assert isinstance(crm, CrmPort)


async def test_create_with_client_chosen_id(crm: DataverseClient, dataverse_sim: DataverseSimulator) -> None:
    """Create a table row using the Web API: the client may choose the primary id; a replay is a
    duplicate."""
    contact_id = uuid.uuid4()
    ref = await crm.create("contact", {"lastname": "Chosen"}, id=contact_id, caller=None)
    assert ref == RecordRef("contact", contact_id)
    assert (dataverse_sim.record("contact", str(contact_id)) or {})["lastname"] == "Chosen"
    with pytest.raises(DuplicateRecord) as raised:
        await crm.create("contact", {"lastname": "Again"}, id=contact_id, caller=None)
    assert raised.value.code == "0x80040237"


async def test_create_without_id_returns_server_id(
    crm: DataverseClient, dataverse_sim: DataverseSimulator
) -> None:
    ref = await crm.create("account", {"name": "Server chosen"}, caller=None)
    assert (dataverse_sim.record("account", str(ref.id)) or {})["name"] == "Server chosen"


async def test_upsert_creates_then_updates(crm: DataverseClient, dataverse_sim: DataverseSimulator) -> None:
    """Update and delete table rows using the Web API, "Upsert a table row": PATCH creates or updates;
    return=representation tells which (201 / 200) and gives the new etag."""
    contact_id = uuid.uuid4()
    created = await crm.upsert(Upsert("contact", {"lastname": "Upsert"}, id=contact_id), caller=None)
    assert created.created
    assert created.ref == RecordRef("contact", contact_id)
    updated = await crm.upsert(Upsert("contact", {"firstname": "Ada"}, id=contact_id), caller=None)
    assert not updated.created
    assert updated.etag != created.etag
    row = dataverse_sim.record("contact", str(contact_id)) or {}
    assert (row["firstname"], row["lastname"], row["@odata.etag"]) == ("Ada", "Upsert", updated.etag)


async def test_conditional_operations(crm: DataverseClient, dataverse_sim: DataverseSimulator) -> None:
    """Perform conditional operations using the Web API: If-Match etag (optimistic concurrency),
    If-Match * (prevent create), If-None-Match * (prevent update)."""
    contact_id = uuid.uuid4()
    first = await crm.upsert(
        Upsert("contact", {"lastname": "v1"}, id=contact_id, if_none_match=True), caller=None
    )
    second = await crm.upsert(
        Upsert("contact", {"lastname": "v2"}, id=contact_id, if_match=first.etag), caller=None
    )
    with pytest.raises(ConcurrencyMismatch) as stale:
        await crm.upsert(
            Upsert("contact", {"lastname": "stale"}, id=contact_id, if_match=first.etag), caller=None
        )
    assert (stale.value.code, stale.value.status) == ("0x80060882", 412)
    with pytest.raises(DuplicateRecord):
        await crm.upsert(
            Upsert("contact", {"lastname": "v3"}, id=contact_id, if_none_match=True), caller=None
        )
    assert (dataverse_sim.record("contact", str(contact_id)) or {})["@odata.etag"] == second.etag

    missing = uuid.uuid4()
    with pytest.raises(RecordNotFound):
        await crm.upsert(Upsert("contact", {"lastname": "never"}, id=missing, if_match="*"), caller=None)
    assert dataverse_sim.record("contact", str(missing)) is None
    with pytest.raises(ConcurrencyMismatch):
        await crm.delete("contact", contact_id, if_match=first.etag, caller=None)
    assert await crm.delete("contact", contact_id, if_match=second.etag, caller=None)


async def test_upsert_by_alternate_key(crm: DataverseClient, dataverse_sim: DataverseSimulator) -> None:
    """Use an alternate key to reference a record: PATCH /emails(messageid='<x>') creates, then updates."""
    dataverse_sim.define_key("email", "messageid_key", ["messageid"])
    message_id = f"<{uuid.uuid4().hex}@contoso.example>"
    key = {"messageid": message_id}
    created = await crm.upsert(Upsert("email", {"subject": "by key"}, key=key), caller=None)
    updated = await crm.upsert(Upsert("email", {"subject": "by key, again"}, key=key), caller=None)
    assert created.created
    assert not updated.created
    assert created.ref is not None
    assert created.ref == updated.ref
    row = dataverse_sim.record("email", str(created.ref.id)) or {}
    assert (row["subject"], row["messageid"]) == ("by key, again", message_id)
    quoted = {"messageid": f"<o'brien-{uuid.uuid4().hex}@contoso.example>"}
    assert (await crm.upsert(Upsert("email", {"subject": "quote"}, key=quoted), caller=None)).created


async def test_lookups_bind_to_records(crm: DataverseClient, dataverse_sim: DataverseSimulator) -> None:
    """Associate table rows on create: <navigation>@odata.bind, per-target names for polymorphic lookups."""
    account = await crm.create("account", {"name": "Contoso"}, caller=None)
    contact_id = uuid.uuid4()
    await crm.upsert(
        Upsert("contact", {"lastname": "Bound", "parentcustomerid": account}, id=contact_id), caller=None
    )
    task_id = uuid.uuid4()
    due = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    await crm.upsert(
        Upsert(
            "task",
            {"subject": "Call", "regardingobjectid": RecordRef("contact", contact_id), "scheduledend": due},
            id=task_id,
        ),
        caller=None,
    )
    contact = await crm.get("contact", contact_id, select=["_parentcustomerid_value"], caller=None) or {}
    assert lookup_ref(contact, "parentcustomerid") == account
    assert lookup_ref(contact, "ownerid") is None  # not selected
    task = dataverse_sim.record("task", str(task_id)) or {}
    assert task["_regardingobjectid_value"] == str(contact_id)
    read_back = await crm.get("task", task_id, select=["_regardingobjectid_value"], caller=None) or {}
    assert lookup_ref(read_back, "regardingobjectid") == RecordRef("contact", contact_id)
    assert task["scheduledend"] == "2026-12-01T07:30:00Z"


async def test_activity_parties(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, read_as_system: ReadAsSystem
) -> None:
    """ActivityParty table reference: email_activity_parties with participationtypemask 1 sender,
    2 to, 3 cc, 4 bcc; appointment_activity_parties 5 required, 6 optional, 7 organizer.
    A PATCH with the collection replaces the party list."""
    me = await crm.whoami(caller=None)
    contact = await crm.create("contact", {"lastname": "Recipient"}, caller=None)
    email_id = uuid.uuid4()
    parties = (
        Party(Participation.SENDER, RecordRef("systemuser", me.user_id)),
        Party(Participation.TO, contact, "recipient@contoso.example"),
        Party(Participation.CC, address="unresolved@fabrikam.example"),
        Party(Participation.BCC, address="hidden@fabrikam.example"),
    )
    await crm.upsert(Upsert("email", {"subject": "Hello"}, id=email_id, parties=parties), caller=None)

    def party_rows(table: str, record_id: uuid.UUID) -> set[tuple[int, str | None, str | None]]:
        rows = read_as_system(f"{table}s({record_id})/{table}_activity_parties")["value"]
        return {(row["participationtypemask"], row["_partyid_value"], row["addressused"]) for row in rows}

    assert party_rows("email", email_id) >= {
        (1, str(me.user_id), None),
        (2, str(contact.id), "recipient@contoso.example"),
        (3, None, "unresolved@fabrikam.example"),
        (4, None, "hidden@fabrikam.example"),
    }
    await crm.upsert(
        Upsert("email", {}, id=email_id, parties=(Party(Participation.TO, address="only@fabrikam.example"),)),
        caller=None,
    )
    assert {row for row in party_rows("email", email_id) if row[0] in {1, 2, 3, 4}} == {
        (2, None, "only@fabrikam.example")
    }

    appointment_id = uuid.uuid4()
    start = dt.datetime(2026, 12, 2, 10, tzinfo=dt.UTC)
    await crm.upsert(
        Upsert(
            "appointment",
            {"subject": "Review", "scheduledstart": start, "scheduledend": start + dt.timedelta(hours=1)},
            id=appointment_id,
            parties=(
                Party(Participation.ORGANIZER, RecordRef("systemuser", me.user_id)),
                Party(Participation.REQUIRED, contact),
                Party(Participation.OPTIONAL, address="maybe@fabrikam.example"),
            ),
        ),
        caller=None,
    )
    assert party_rows("appointment", appointment_id) >= {
        (7, str(me.user_id), None),
        (5, str(contact.id), None),
        (6, None, "maybe@fabrikam.example"),
    }


async def test_attachment_binds_to_its_email(crm: DataverseClient, dataverse_sim: DataverseSimulator) -> None:
    """ActivityMimeAttachment table reference: objectid is bound per activity type (objectid_email)."""
    email = await crm.create("email", {"subject": "With attachment"}, caller=None)
    attachment_id = uuid.uuid4()
    fields: dict[str, FieldValue] = {
        "objectid": email,
        "objecttypecode": "email",
        "filename": "notes.txt",
        "mimetype": "text/plain",
        "body": base64.b64encode(b"hello").decode("ascii"),
    }
    await crm.upsert(Upsert("activitymimeattachment", fields, id=attachment_id), caller=None)
    row = dataverse_sim.record("activitymimeattachment", str(attachment_id)) or {}
    assert (row["_objectid_value"], row["filename"]) == (str(email.id), "notes.txt")
    assert await crm.delete("email", email.id, caller=None)
    assert dataverse_sim.record("activitymimeattachment", str(attachment_id)) is None


def test_parties_and_lookups_are_checked_before_sending() -> None:
    with pytest.raises(ValueError, match="record reference or an email address"):
        Party(Participation.TO)
    with pytest.raises(ValueError, match="exactly one of id or alternate key"):
        Upsert("email", {}, id=uuid.uuid4(), key={"messageid": "x"})
    with pytest.raises(ValueError, match="exclude each other"):
        Upsert("email", {}, id=uuid.uuid4(), if_match="*", if_none_match=True)


async def test_get_and_delete(crm: DataverseClient) -> None:
    """Retrieve a table row / Delete a table row: a missing row is None on get, 'already gone' on
    delete."""
    contact = await crm.create("contact", {"lastname": "Short-lived", "firstname": "Tim"}, caller=None)
    row = await crm.get("contact", contact.id, select=["lastname"], caller=None)
    assert row is not None
    assert row["lastname"] == "Short-lived"
    assert "firstname" not in row
    assert row["@odata.etag"].startswith('W/"')
    assert await crm.delete("contact", contact.id, caller=None) is True
    assert await crm.delete("contact", contact.id, caller=None) is False
    assert await crm.get("contact", contact.id, caller=None) is None
    assert [r.ok for r in await crm.apply_batch([Delete("contact", contact.id)], caller=None)] == [True]


async def test_invalid_data_is_a_permanent_error(crm: DataverseClient) -> None:
    """Web service error codes: StringLengthTooLong 0x80044331 - park the item, do not retry."""
    with pytest.raises(InvalidData) as raised:
        await crm.upsert(Upsert("task", {"subject": "x" * 201}, id=uuid.uuid4()), caller=None)
    assert raised.value.code == "0x80044331"
    assert not raised.value.retryable
    assert "field map" in raised.value.remedy


async def test_find_by_email_in_party_resolution_order(
    dataverse_sim: DataverseSimulator, credential: Any, make_user: UserFactory, dataverse_token: str
) -> None:
    """Email addresses resolve to users, then contacts, accounts, leads (Dynamics' party resolution),
    over emailaddress1..3 / internalemailaddress; string comparison is case-insensitive."""
    user = make_user()
    address = user.email
    # The simulator's account and lead tables lack some documented email columns (see report).
    columns = {"account": ("emailaddress1", "emailaddress2"), "lead": ("emailaddress1",)}
    async with DataverseClient(
        dataverse_sim.api_url, credential, application_writes=True, scope="s", email_columns=columns
    ) as crm:
        lead = await crm.create("lead", {"lastname": "Lead", "emailaddress1": address}, caller=None)
        account = await crm.create("account", {"name": "Acct", "emailaddress2": address.upper()}, caller=None)
        contact = await crm.create("contact", {"lastname": "C", "emailaddress3": address}, caller=None)
        other = await crm.create(
            "contact", {"lastname": "Other", "emailaddress1": "x" + address}, caller=None
        )
        found = await crm.find_by_email(address, caller=None)
        assert found == [RecordRef("systemuser", user.systemuserid), contact, account, lead]
        assert other not in found
        assert await crm.find_by_email(address, tables=("lead", "contact"), caller=None) == [lead, contact]
        assert await crm.find_by_email("nobody'" + address, caller=None) == []
    lookups = [r for r in dataverse_sim.requests(dataverse_token) if r["path"].endswith("$batch")]
    assert [r["batch_operations"] for r in lookups] == [4, 2, 4]  # one round trip per lookup
    assert not any(
        address.split("@")[0] in f"{r['path']}?{r['query']}" for r in dataverse_sim.requests(dataverse_token)
    )


async def test_a_write_without_a_caller_is_refused_before_anything_is_sent(
    dataverse_sim: DataverseSimulator, dataverse_token: str, credential: FixedTokenCredential
) -> None:
    """The connector writes only as the mailbox's user (impersonated), never with the application's
    own rights: a write with ``caller=None`` is refused unless the client was built for seeding."""
    dataverse_sim.clear_requests()
    async with DataverseClient(dataverse_sim.api_url, credential, scope="s") as crm:
        with pytest.raises(ValueError, match="acting user"):
            await crm.upsert(Upsert("contact", {"lastname": "Nobody"}, id=uuid.uuid4()), caller=None)
        with pytest.raises(ValueError, match="acting user"):
            await crm.apply_batch([Delete("contact", uuid.uuid4())], caller=None)
    assert dataverse_sim.requests(dataverse_token) == []
