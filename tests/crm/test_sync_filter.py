"""The default synchronization filters, evaluated by the Dataverse simulator as the user (real client
over HTTP): membership, the user's read access, appointments by organizer / required attendee, and
the privilege read that gates CRM -> Outlook."""

from __future__ import annotations

import uuid

from shared.crm.dataverse import DataverseClient
from shared.crm.port import Party, RecordRef, Upsert
from shared.domain.model import Participation
from shared.sync.crm_filter import evaluate
from simulators.dataverse.launcher import DataverseSimulator
from tests.crm.conftest import UserFactory

EVERYTHING = dict.fromkeys(("create", "read", "write", "delete", "append", "appendto"), "organization")
OWN_ONLY = dict.fromkeys(("create", "read", "write", "delete", "append", "appendto"), "user")


async def _contact(crm: DataverseClient, owner: uuid.UUID, name: str, *, active: bool = True) -> uuid.UUID:
    ref = await crm.create(
        "contact", {"lastname": name, "ownerid": RecordRef("systemuser", owner)}, caller=None
    )
    if not active:
        deactivate = Upsert("contact", {"statecode": 1, "statuscode": 2}, id=ref.id, if_match="*")
        await crm.upsert(deactivate, caller=None)
    return ref.id


async def test_my_active_contacts_as_the_user_sees_them(crm: DataverseClient, make_user: UserFactory) -> None:
    user = make_user({"contact": EVERYTHING, "systemuser": {"read": "organization"}})
    other = make_user({"contact": EVERYTHING})
    mine = await _contact(crm, user.systemuserid, "mine")
    theirs = await _contact(crm, other.systemuserid, "theirs")
    inactive = await _contact(crm, user.systemuserid, "inactive", active=False)
    missing = uuid.uuid4()
    verdict = await evaluate(
        crm,
        "contact",
        user_id=user.systemuserid,
        caller=user.object_id,
        ids=[mine, theirs, inactive, missing],
    )
    assert verdict.members == {mine}


async def test_a_record_the_user_may_not_read_is_outside_the_filter(
    crm: DataverseClient, make_user: UserFactory
) -> None:
    # The user owns the task but may read only... nothing: roles decide, as in Dynamics.
    user = make_user({"task": {"create": "user"}})
    task = (
        await crm.create(
            "task", {"subject": "t", "ownerid": RecordRef("systemuser", user.systemuserid)}, caller=None
        )
    ).id
    readable = make_user({"task": OWN_ONLY})
    own = (
        await crm.create(
            "task", {"subject": "t2", "ownerid": RecordRef("systemuser", readable.systemuserid)}, caller=None
        )
    ).id
    assert (
        await evaluate(crm, "task", user_id=user.systemuserid, caller=user.object_id, ids=[task])
    ).members == set()
    verdict = await evaluate(
        crm, "task", user_id=readable.systemuserid, caller=readable.object_id, ids=[own, task]
    )
    assert verdict.members == {own}


async def test_appointments_where_the_user_organizes_or_is_a_required_attendee(
    crm: DataverseClient, make_user: UserFactory
) -> None:
    grants = {
        "appointment": EVERYTHING,
        "activityparty": {"read": "organization"},
        "systemuser": {"read": "organization"},
    }
    user = make_user(grants)
    other = make_user(grants)
    me, them = RecordRef("systemuser", user.systemuserid), RecordRef("systemuser", other.systemuserid)
    times = {"scheduledstart": "2030-01-01T10:00:00Z", "scheduledend": "2030-01-01T11:00:00Z"}

    async def meeting(*parties: Party) -> uuid.UUID:
        return (await crm.create("appointment", {"subject": "m", **times}, parties=parties, caller=None)).id

    organized = await meeting(Party(Participation.ORGANIZER, me), Party(Participation.REQUIRED, them))
    attending = await meeting(Party(Participation.ORGANIZER, them), Party(Participation.REQUIRED, me))
    optional = await meeting(Party(Participation.ORGANIZER, them), Party(Participation.OPTIONAL, me))
    elsewhere = await meeting(Party(Participation.ORGANIZER, them))
    verdict = await evaluate(
        crm,
        "appointment",
        user_id=user.systemuserid,
        caller=user.object_id,
        ids=[organized, attending, optional, elsewhere],
    )
    assert verdict.members == {organized, attending}
    assert verdict.organized == {organized}


async def test_retrieve_user_privileges_names_sync_to_outlook_only_for_roles_that_hold_it(
    crm: DataverseClient, make_user: UserFactory, dataverse_sim: DataverseSimulator
) -> None:
    plain = make_user({"contact": EVERYTHING})
    assert "prvSyncToOutlook" not in await crm.user_privileges(plain.systemuserid, caller=None)
    seller = dataverse_sim.add_user(roles=["Salesperson"])
    assert "prvSyncToOutlook" in await crm.user_privileges(uuid.UUID(seller["systemuserid"]), caller=None)


def _outlook_filter(name: str, table: str, condition: str, *, enabled: bool = True) -> dict[str, object]:
    return {
        "name": name,
        "returnedtypecode": table,
        "querytype": 256,
        "statecode": 0 if enabled else 1,
        "fetchxml": f"<fetch><entity name='{table}'><filter>{condition}</filter></entity></fetch>",
    }


async def test_the_users_enabled_outlook_filters_decide_as_a_union(
    crm: DataverseClient, make_user: UserFactory, dataverse_sim: DataverseSimulator
) -> None:
    """userquery querytype 256: the union of the enabled filters; a disabled one adds nothing; the
    filters of another user do not count."""
    user = make_user({"contact": EVERYTHING, "userquery": OWN_ONLY})
    other = make_user({"contact": EVERYTHING, "userquery": OWN_ONLY})
    oslo, bergen, tromso = [
        (await crm.create("contact", {"lastname": town, "address1_city": town}, caller=None)).id
        for town in ("Oslo", "Bergen", "Tromso")
    ]
    ids = [oslo, bergen, tromso]

    def owned(spec: dict[str, object], owner: uuid.UUID) -> dict[str, object]:
        return {**spec, "ownerid@odata.bind": f"/systemusers({owner})"}

    city = '<condition attribute="address1_city" operator="eq" value="{}"/>'
    dataverse_sim.seed(
        "userquery",
        [
            owned(_outlook_filter("Oslo", "contact", city.format("Oslo")), user.systemuserid),
            owned(_outlook_filter("Bergen", "contact", city.format("Bergen")), user.systemuserid),
            owned(
                _outlook_filter("Tromso", "contact", city.format("Tromso"), enabled=False), user.systemuserid
            ),
            owned(_outlook_filter("All", "contact", ""), other.systemuserid),
        ],
    )
    verdict = await evaluate(crm, "contact", user_id=user.systemuserid, caller=user.object_id, ids=ids)
    assert verdict.members == {oslo, bergen}  # contacts the user does not own: the filter, not the default
    replaced = await evaluate(
        crm,
        "contact",
        user_id=user.systemuserid,
        caller=user.object_id,
        ids=ids,
        replacement=(
            f"<fetch><entity name='contact'><filter>{city.format('Tromso')}</filter></entity></fetch>"
        ),
    )
    assert replaced.members == {tromso}


async def test_a_table_whose_outlook_filters_are_all_disabled_syncs_nothing(
    crm: DataverseClient, make_user: UserFactory, dataverse_sim: DataverseSimulator
) -> None:
    user = make_user({"task": EVERYTHING, "userquery": OWN_ONLY})
    task = (
        await crm.create(
            "task", {"subject": "t", "ownerid": RecordRef("systemuser", user.systemuserid)}, caller=None
        )
    ).id
    assert (
        await evaluate(crm, "task", user_id=user.systemuserid, caller=user.object_id, ids=[task])
    ).members == {task}  # no filters: Dynamics' default "My Tasks"
    off = _outlook_filter(
        "Mine", "task", '<condition attribute="ownerid" operator="eq-userid"/>', enabled=False
    )
    dataverse_sim.seed("userquery", [{**off, "ownerid@odata.bind": f"/systemusers({user.systemuserid})"}])
    assert (
        await evaluate(crm, "task", user_id=user.systemuserid, caller=user.object_id, ids=[task])
    ).members == set()


async def test_fetch_follows_pages_until_no_more_records(
    crm: DataverseClient, dataverse_sim: DataverseSimulator
) -> None:
    """CrmQueryPort.fetch reads every page (the fetch's ``page`` attribute while morerecords)."""
    tag = uuid.uuid4().hex
    dataverse_sim.seed("contact", [{"lastname": tag, "firstname": f"F{i}"} for i in range(5)])
    fetch_xml = (
        f"<fetch count='2'><entity name='contact'><attribute name='firstname'/><order attribute='firstname'/>"
        f"<filter><condition attribute='lastname' operator='eq' value='{tag}'/></filter></entity></fetch>"
    )
    rows = await crm.fetch("contact", fetch_xml=fetch_xml, caller=None)
    assert [row["firstname"] for row in rows] == [f"F{i}" for i in range(5)]
