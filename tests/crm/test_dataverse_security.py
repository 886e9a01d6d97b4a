"""Impersonation and column security against the simulator: powerapps-docs "Impersonate another user
using the Web API" (CallerObjectId) and "Column-level security" (secured columns read as null)."""

from __future__ import annotations

import uuid

import pytest

from shared.crm.dataverse import DataverseClient
from shared.crm.errors import AttributePermissionDenied, CallerNotFound, PrivilegeDenied
from shared.crm.port import Upsert
from simulators.dataverse.launcher import DataverseSimulator
from tests.crm.conftest import UserFactory

CONTACT_READ_WRITE = {"contact": {"read": "organization", "write": "organization", "create": "user"}}


async def test_every_call_for_a_user_carries_caller_object_id(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str, make_user: UserFactory
) -> None:
    user = make_user({"contact": {"read": "organization", "create": "user", "write": "user"}, "task": {}})
    me = await crm.whoami(caller=user.object_id)
    assert me.user_id == user.systemuserid
    contact = await crm.create("contact", {"lastname": "Mine"}, caller=user.object_id)
    await crm.get("contact", contact.id, caller=user.object_id)
    await crm.apply_batch(
        [Upsert("contact", {"lastname": "Also mine"}, id=uuid.uuid4())], caller=user.object_id
    )
    await crm.find_by_email(user.email, tables=("contact",), caller=user.object_id)
    await crm.read_changes("contact", select=["lastname"], caller=user.object_id)
    log = dataverse_sim.requests(dataverse_token)
    assert len(log) == 6
    assert {entry["headers"]["callerobjectid"] for entry in log} == {user.object_id}
    assert (dataverse_sim.record("contact", str(contact.id)) or {})["_createdby_value"] == str(
        user.systemuserid
    )
    assert (await crm.whoami(caller=None)).user_id == uuid.UUID(dataverse_sim.app_user_id)


async def test_user_without_create_privilege_cannot_create(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, make_user: UserFactory
) -> None:
    """The impersonated user's security roles apply: no prvCreateContact, no contact - also in a batch."""
    reader = make_user({"contact": {"read": "organization"}})
    contact_id = uuid.uuid4()
    with pytest.raises(PrivilegeDenied) as raised:
        await crm.create("contact", {"lastname": "Denied"}, id=contact_id, caller=reader.object_id)
    assert raised.value.code == "0x80040220"
    assert "prvCreateContact" in raised.value.message
    assert not raised.value.retryable
    assert "security role" in raised.value.remedy
    [result] = await crm.apply_batch(
        [Upsert("contact", {"lastname": "Denied too"}, id=contact_id)], caller=reader.object_id
    )
    assert isinstance(result.error, PrivilegeDenied)
    assert dataverse_sim.record("contact", str(contact_id)) is None
    # The application user could: the restriction comes from impersonation alone.
    assert await crm.create("contact", {"lastname": "As the app"}, id=contact_id, caller=None)


async def test_unknown_caller_is_not_a_missing_record(crm: DataverseClient) -> None:
    contact = await crm.create("contact", {"lastname": "Exists"}, caller=None)
    stranger = str(uuid.uuid4())
    with pytest.raises(CallerNotFound) as raised:
        await crm.get("contact", contact.id, caller=stranger)
    assert "Entra object id" in raised.value.remedy
    with pytest.raises(CallerNotFound):
        await crm.delete("contact", contact.id, caller=stranger)
    assert await crm.get("contact", contact.id, caller=None) is not None


async def test_secured_column_never_leaks_and_cannot_be_written(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, make_user: UserFactory
) -> None:
    """Column-level security: without a field security profile a secured column reads as null (get and
    change tracking) and writing it fails with 0x8004F507 (update) / 0x8004F502 (create)."""
    profile = f"fsp-{uuid.uuid4().hex[:8]}"
    dataverse_sim.add_field_security_profile(
        profile,
        [{"table": "contact", "column": "governmentid", "read": True, "update": False, "create": False}],
    )
    outsider = make_user(CONTACT_READ_WRITE)
    insider = make_user(CONTACT_READ_WRITE, profiles=[profile])
    contact = await crm.create("contact", {"lastname": "Secret", "governmentid": "AB-123"}, caller=None)

    hidden = await crm.get(
        "contact", contact.id, select=["lastname", "governmentid"], caller=outsider.object_id
    )
    assert hidden is not None
    assert (hidden["lastname"], hidden["governmentid"]) == ("Secret", None)
    shown = await crm.get("contact", contact.id, select=["governmentid"], caller=insider.object_id)
    assert (shown or {})["governmentid"] == "AB-123"
    page = await crm.read_changes("contact", select=["governmentid"], caller=outsider.object_id)
    assert [row["governmentid"] for row in page.changed if row["contactid"] == str(contact.id)] == [None]
    assert all(row["governmentid"] is None for row in page.changed)

    with pytest.raises(AttributePermissionDenied) as update:
        await crm.upsert(Upsert("contact", {"governmentid": "XX"}, id=contact.id), caller=insider.object_id)
    assert update.value.code == "0x8004f507"
    with pytest.raises(AttributePermissionDenied) as create:
        await crm.create("contact", {"lastname": "New", "governmentid": "YY"}, caller=outsider.object_id)
    assert create.value.code == "0x8004f502"
    assert "field security profile" in create.value.remedy
    assert (dataverse_sim.record("contact", str(contact.id)) or {})["governmentid"] == "AB-123"
