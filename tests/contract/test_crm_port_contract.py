"""The CRM port's contract: what the sync engine relies on, run against the in-memory fake
(tests/fakes/crm.py) and against DataverseClient on the Dataverse simulator over HTTP.

Each behaviour follows a powerapps-docs page (learn.microsoft.com/power-apps/developer/data-platform
/webapi/...): "Update and delete table rows using the Web API" (upsert: 201 created / 200 updated),
"Perform conditional operations using the Web API" (If-Match, If-None-Match), "Execute batch
operations using the Web API" (change sets, continue-on-error), "Impersonate another user using the
Web API" (the record's owner is the impersonated user). The engine's property test runs on the fake,
so a behaviour the fake got wrong shows here against the simulator first.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from shared.crm.dataverse import DataverseClient
from shared.crm.dataverse.wire import lookup_ref
from shared.crm.errors import (
    CallerNotFound,
    ConcurrencyMismatch,
    DuplicateRecord,
    InvalidData,
    RecordNotFound,
    ServiceProtectionLimit,
)
from shared.crm.port import (
    ColumnPermission,
    CrmPort,
    Delete,
    FieldValue,
    Operation,
    Party,
    RecordRef,
    Upsert,
)
from shared.domain.model import Participation
from shared.sync.fieldmaps.base import parse_utc
from simulators.dataverse.launcher import DataverseSimulator
from tests.crm.conftest import SCOPE, FixedTokenCredential
from tests.fakes.crm import FakeCrm

_FULL = dict.fromkeys(("create", "read", "write", "delete", "append", "appendto"), "organization")
_READ = {"read": "organization", "appendto": "organization"}
# The simulator transcribes only some email columns of account and lead (see tests/engine/conftest.py).
_SIMULATED_EMAIL_COLUMNS = {"account": ("emailaddress1", "emailaddress2"), "lead": ("emailaddress1",)}


@dataclass(frozen=True)
class Caller:
    """A CRM user the engine impersonates: its object id (the caller) and its systemuserid (owner)."""

    object_id: str
    systemuserid: str
    email: str


Secure = Callable[[str, str, "Caller", ColumnPermission], None]


class CrmPortContract:
    """The behaviours; a subclass provides the ``crm`` and ``user`` fixtures."""

    async def test_implements_the_port(self, crm: CrmPort) -> None:
        assert isinstance(crm, CrmPort)

    async def test_upsert_creates_then_updates_with_a_new_etag(self, crm: CrmPort, user: Caller) -> None:
        record_id = uuid.uuid4()
        created = await crm.upsert(
            Upsert("contact", {"lastname": "One"}, id=record_id), caller=user.object_id
        )
        assert (created.created, created.ref) == (True, RecordRef("contact", record_id))
        updated = await crm.upsert(
            Upsert("contact", {"firstname": "Ada"}, id=record_id), caller=user.object_id
        )
        assert not updated.created
        assert updated.etag
        assert updated.etag != created.etag
        row = await crm.get("contact", record_id, select=["firstname", "lastname"], caller=user.object_id)
        assert row is not None
        assert (row["firstname"], row["lastname"], row["@odata.etag"]) == ("Ada", "One", updated.etag)
        assert row["contactid"] == str(record_id)

    async def test_the_creating_user_owns_the_record(self, crm: CrmPort, user: Caller) -> None:
        record_id = uuid.uuid4()
        await crm.upsert(Upsert("task", {"subject": "mine"}, id=record_id), caller=user.object_id)
        row = await crm.get("task", record_id, select=["subject", "_ownerid_value"], caller=user.object_id)
        assert row is not None
        assert str(row["_ownerid_value"]).lower() == user.systemuserid.lower()

    async def test_selected_columns_without_a_value_read_as_null(self, crm: CrmPort, user: Caller) -> None:
        record_id = uuid.uuid4()
        await crm.upsert(Upsert("contact", {"lastname": "Sparse"}, id=record_id), caller=user.object_id)
        row = await crm.get("contact", record_id, select=["lastname", "jobtitle"], caller=user.object_id)
        assert row is not None
        assert (row["lastname"], row["jobtitle"]) == ("Sparse", None)

    async def test_conditional_writes(self, crm: CrmPort, user: Caller) -> None:
        caller = user.object_id
        record_id = uuid.uuid4()
        first = await crm.upsert(
            Upsert("contact", {"lastname": "v1"}, id=record_id, if_none_match=True), caller=caller
        )
        second = await crm.upsert(
            Upsert("contact", {"lastname": "v2"}, id=record_id, if_match=first.etag), caller=caller
        )
        with pytest.raises(ConcurrencyMismatch) as stale:
            await crm.upsert(
                Upsert("contact", {"lastname": "v3"}, id=record_id, if_match=first.etag), caller=caller
            )
        assert stale.value.status == 412
        assert not stale.value.retryable
        with pytest.raises(DuplicateRecord):
            await crm.upsert(
                Upsert("contact", {"lastname": "v3"}, id=record_id, if_none_match=True), caller=caller
            )
        assert await crm.upsert(
            Upsert("contact", {"lastname": "v3"}, id=record_id, if_match="*"), caller=caller
        )
        row = await crm.get("contact", record_id, select=["lastname"], caller=caller)
        assert row is not None
        assert row["lastname"] == "v3"
        assert row["@odata.etag"] != second.etag
        missing = uuid.uuid4()
        with pytest.raises(RecordNotFound):
            await crm.upsert(
                Upsert("contact", {"lastname": "never"}, id=missing, if_match="*"), caller=caller
            )
        assert await crm.get("contact", missing, caller=caller) is None

    async def test_create_with_a_taken_id_is_a_duplicate(self, crm: CrmPort, user: Caller) -> None:
        record_id = uuid.uuid4()
        assert await crm.create(
            "contact", {"lastname": "First"}, id=record_id, caller=user.object_id
        ) == RecordRef("contact", record_id)
        with pytest.raises(DuplicateRecord):
            await crm.create("contact", {"lastname": "Again"}, id=record_id, caller=user.object_id)

    async def test_get_many_reads_each_and_none_for_missing(self, crm: CrmPort, user: Caller) -> None:
        ids = [uuid.uuid4() for _ in range(3)]
        for index, record_id in enumerate(ids[:2]):
            await crm.upsert(Upsert("task", {"subject": f"t{index}"}, id=record_id), caller=user.object_id)
        rows = await crm.get_many("task", ids, select=["subject"], caller=user.object_id)
        assert set(rows) == set(ids)
        assert [(row or {}).get("subject") for row in (rows[i] for i in ids)] == ["t0", "t1", None]
        assert rows[ids[2]] is None
        single = await crm.get("task", ids[0], select=["subject"], caller=user.object_id)
        assert single is not None
        first = rows[ids[0]]
        assert first is not None
        assert first["@odata.etag"] == single["@odata.etag"]

    async def test_delete_of_a_gone_record_is_false(self, crm: CrmPort, user: Caller) -> None:
        record_id = uuid.uuid4()
        first = await crm.upsert(Upsert("task", {"subject": "bye"}, id=record_id), caller=user.object_id)
        await crm.upsert(Upsert("task", {"subject": "bye 2"}, id=record_id), caller=user.object_id)
        with pytest.raises(ConcurrencyMismatch):
            await crm.delete("task", record_id, if_match=first.etag, caller=user.object_id)
        assert await crm.delete("task", record_id, caller=user.object_id) is True
        assert await crm.delete("task", record_id, caller=user.object_id) is False
        assert await crm.get("task", record_id, caller=user.object_id) is None

    async def test_batch_continues_after_an_error(self, crm: CrmPort, user: Caller) -> None:
        good, bad, later = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        ops: list[Operation] = [
            Upsert("task", {"subject": "good"}, id=good),
            Upsert("task", {"subject": "x" * 201}, id=bad),
            Delete("task", uuid.uuid4()),
            Upsert("task", {"subject": "later"}, id=later),
        ]
        results = await crm.apply_batch(ops, caller=user.object_id)
        assert [result.ok for result in results] == [True, False, True, True]
        assert [result.created for result in results] == [True, False, False, True]
        assert isinstance(results[1].error, InvalidData)
        assert results[0].ref == RecordRef("task", good)
        row = await crm.get("task", later, select=["subject"], caller=user.object_id)
        assert row is not None
        assert row["@odata.etag"] == results[3].etag
        assert await crm.get("task", bad, caller=user.object_id) is None

    async def test_change_set_is_all_or_nothing(self, crm: CrmPort, user: Caller) -> None:
        existing = uuid.uuid4()
        await crm.upsert(Upsert("task", {"subject": "before"}, id=existing), caller=user.object_id)
        fresh = uuid.uuid4()
        ops: list[Operation] = [
            Upsert("task", {"subject": "created"}, id=fresh),
            Upsert("task", {"subject": "changed"}, id=existing, if_match="*"),
            Upsert("task", {"subject": "x" * 201}, id=uuid.uuid4()),
        ]
        results = await crm.apply_batch(ops, atomic=True, caller=user.object_id)
        assert [result.ok for result in results] == [False, False, False]
        assert await crm.get("task", fresh, caller=user.object_id) is None
        row = await crm.get("task", existing, select=["subject"], caller=user.object_id)
        assert row is not None
        assert row["subject"] == "before"
        then = await crm.apply_batch(
            [
                Upsert("task", {"subject": "a"}, id=fresh),
                Upsert("task", {"subject": "b"}, id=fresh, if_match="*"),
            ],
            atomic=True,
            caller=user.object_id,
        )
        assert [(result.ok, result.created) for result in then] == [(True, True), (True, False)]
        row = await crm.get("task", fresh, select=["subject"], caller=user.object_id)
        assert row is not None
        assert (row["subject"], row["@odata.etag"]) == ("b", then[1].etag)

    async def test_a_stale_etag_fails_its_batch_operation_with_412(self, crm: CrmPort, user: Caller) -> None:
        record_id = uuid.uuid4()
        first = await crm.upsert(Upsert("contact", {"lastname": "v1"}, id=record_id), caller=user.object_id)
        await crm.upsert(Upsert("contact", {"lastname": "v2"}, id=record_id), caller=user.object_id)
        [result] = await crm.apply_batch(
            [Upsert("contact", {"lastname": "v3"}, id=record_id, if_match=first.etag)], caller=user.object_id
        )
        assert (result.ok, result.status) == (False, 412)
        assert isinstance(result.error, ConcurrencyMismatch)

    async def test_datetimes_and_lookups_read_back(self, crm: CrmPort, user: Caller) -> None:
        contact = uuid.uuid4()
        await crm.upsert(Upsert("contact", {"lastname": "Regarding"}, id=contact), caller=user.object_id)
        task = uuid.uuid4()
        due = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        fields: dict[str, FieldValue] = {
            "subject": "Call",
            "scheduledend": due,
            "regardingobjectid": RecordRef("contact", contact),
        }
        await crm.upsert(Upsert("task", fields, id=task), caller=user.object_id)
        row = await crm.get(
            "task", task, select=["scheduledend", "_regardingobjectid_value"], caller=user.object_id
        )
        assert row is not None
        assert parse_utc(row["scheduledend"]) == due
        assert lookup_ref(row, "regardingobjectid") == RecordRef("contact", contact)

    async def test_parties_are_written_with_the_activity(self, crm: CrmPort, user: Caller) -> None:
        email = uuid.uuid4()
        parties = (
            Party(Participation.SENDER, address="seller@contoso.example"),
            Party(Participation.TO, RecordRef("systemuser", uuid.UUID(user.systemuserid)), user.email),
        )
        result = await crm.upsert(
            Upsert("email", {"subject": "Hello"}, id=email, parties=parties), caller=user.object_id
        )
        assert result.created
        row = await crm.get("email", email, select=["subject"], caller=user.object_id)
        assert row is not None
        assert row["subject"] == "Hello"
        with pytest.raises(ValueError, match="no activity parties"):
            await crm.upsert(
                Upsert("contact", {"lastname": "x"}, id=uuid.uuid4(), parties=parties), caller=user.object_id
            )

    async def test_find_by_email_resolves_users_before_contacts(self, crm: CrmPort, user: Caller) -> None:
        address = f"c-{uuid.uuid4().hex[:8]}@fabrikam.example"
        contact = uuid.uuid4()
        await crm.upsert(
            Upsert("contact", {"lastname": "Found", "emailaddress1": address}, id=contact),
            caller=user.object_id,
        )
        assert await crm.find_by_email(address.upper(), caller=user.object_id) == [
            RecordRef("contact", contact)
        ]
        found = await crm.find_by_email(user.email, caller=user.object_id)
        assert found[:1] == [RecordRef("systemuser", uuid.UUID(user.systemuserid))]
        assert await crm.find_by_email(f"nobody-{uuid.uuid4().hex}@x.example", caller=user.object_id) == []

    async def test_find_where_reads_rows_and_activity_parties(self, crm: CrmPort, user: Caller) -> None:
        address = f"w-{uuid.uuid4().hex[:8]}@fabrikam.example"
        contact = uuid.uuid4()
        fields: dict[str, FieldValue] = {"lastname": "Where", "emailaddress2": address}
        await crm.upsert(Upsert("contact", fields, id=contact), caller=user.object_id)
        rows = await crm.find_where(
            "contact",
            ("emailaddress1", "emailaddress2"),
            [address, "nobody@x.example"],
            select=["contactid", "_ownerid_value", "emailaddress2"],
            caller=user.object_id,
        )
        assert [(row["contactid"], row["emailaddress2"]) for row in rows] == [(str(contact), address)]
        assert str(rows[0]["_ownerid_value"]).lower() == user.systemuserid.lower()
        meeting = uuid.uuid4()
        parties = (
            Party(Participation.ORGANIZER, address="boss@fabrikam.example"),
            Party(Participation.REQUIRED, RecordRef("contact", contact), address),
        )
        start = dt.datetime(2026, 12, 2, 9, tzinfo=dt.UTC)
        meeting_fields: dict[str, FieldValue] = {
            "subject": "Plan",
            "scheduledstart": start,
            "scheduledend": start + dt.timedelta(hours=1),
        }
        await crm.upsert(
            Upsert("appointment", meeting_fields, id=meeting, parties=parties), caller=user.object_id
        )
        found = await crm.find_where(
            "activityparty",
            ["_activityid_value"],
            [str(meeting)],
            select=["_activityid_value", "participationtypemask", "addressused"],
            caller=user.object_id,
        )
        assert sorted((row["participationtypemask"], row["addressused"]) for row in found) == [
            (5, address),
            (7, "boss@fabrikam.example"),
        ]
        assert {str(row["_activityid_value"]).lower() for row in found} == {str(meeting)}

    async def test_a_one_off_appointment_is_no_series_instance(self, crm: CrmPort, user: Caller) -> None:
        appointment = uuid.uuid4()
        start = dt.datetime(2026, 12, 3, 9, tzinfo=dt.UTC)
        fields: dict[str, FieldValue] = {
            "subject": "Once",
            "scheduledstart": start,
            "scheduledend": start + dt.timedelta(hours=1),
        }
        await crm.upsert(Upsert("appointment", fields, id=appointment), caller=user.object_id)
        assert await crm.series_instances(appointment, select=["subject"], caller=user.object_id) == []

    async def test_an_unknown_caller_is_refused(self, crm: CrmPort) -> None:
        with pytest.raises(CallerNotFound):
            await crm.upsert(Upsert("task", {"subject": "who"}, id=uuid.uuid4()), caller=str(uuid.uuid4()))

    async def test_whoami_is_the_impersonated_user(self, crm: CrmPort, user: Caller) -> None:
        assert str((await crm.whoami(caller=user.object_id)).user_id).lower() == user.systemuserid.lower()

    async def test_column_security_says_what_the_user_may_do(
        self, crm: CrmPort, user: Caller, secure: Secure
    ) -> None:
        secure("contact", "governmentid", user, ColumnPermission(read=True))
        security = await crm.column_security(uuid.UUID(user.systemuserid), ["contact", "task"], caller=None)
        assert security.of("contact")["governmentid"] == ColumnPermission(read=True)
        assert "jobtitle" not in security.of("contact")  # not secured
        with pytest.raises(ValueError, match="as the application"):
            await crm.column_security(uuid.UUID(user.systemuserid), ["contact"], caller=user.object_id)

    async def test_field_sync_mappings_are_the_organizations_rows(self, crm: CrmPort) -> None:
        rows = await crm.field_sync_mappings(["contact", "task"], caller=None)
        assert all(row.table in {"contact", "task"} and 0 <= row.direction <= 3 for row in rows)
        assert all(row.columns for row in rows)

    async def test_a_new_users_time_zone_is_the_organizations(self, crm: CrmPort, user: Caller) -> None:
        """usersettings.timezonecode as its timezonedefinition's Windows standard name (the sandbox
        organization's zone is UTC, code 92), read as the application."""
        assert await crm.user_time_zone(uuid.UUID(user.systemuserid), caller=None) == "UTC"


class TestFakeCrm(CrmPortContract):
    @pytest.fixture
    def fake(self) -> FakeCrm:
        return FakeCrm()

    @pytest.fixture
    def secure(self, fake: FakeCrm) -> Secure:
        def secure(table: str, column: str, user: Caller, grant: ColumnPermission) -> None:
            fake.secure(table, column, **{uuid.UUID(user.systemuserid).hex: grant})

        return secure

    @pytest.fixture
    def crm(self, fake: FakeCrm) -> CrmPort:
        return fake

    @pytest.fixture
    def user(self, fake: FakeCrm) -> Caller:
        added = fake.add_user()
        return Caller(added.object_id, str(added.systemuserid), added.email)

    async def test_injected_throttling_is_retryable_and_once(self, fake: FakeCrm, user: Caller) -> None:
        fake.inject("get", 429)
        with pytest.raises(ServiceProtectionLimit) as throttled:
            await fake.get("task", uuid.uuid4(), caller=user.object_id)
        assert throttled.value.retryable
        assert await fake.get("task", uuid.uuid4(), caller=user.object_id) is None

    async def test_injected_faults_inside_a_batch(self, fake: FakeCrm, user: Caller) -> None:
        ops = [Upsert("task", {"subject": str(n)}, id=uuid.uuid4()) for n in range(3)]
        fake.inject("apply_batch", 412, op_index=1)
        results = await fake.apply_batch(ops, caller=user.object_id)
        assert [result.ok for result in results] == [True, False, True]
        assert isinstance(results[1].error, ConcurrencyMismatch)
        fake.inject("apply_batch", 429, op_index=0)
        results = await fake.apply_batch(ops, atomic=True, caller=user.object_id)
        assert [result.ok for result in results] == [False, False, False]
        assert all(isinstance(result.error, ServiceProtectionLimit) for result in results)
        assert fake.pending_faults == 0


class TestDataverseClient(CrmPortContract):
    @pytest.fixture
    async def crm(
        self, dataverse_sim: DataverseSimulator, dataverse_token: str
    ) -> AsyncIterator[DataverseClient]:
        async with DataverseClient(
            dataverse_sim.api_url,
            FixedTokenCredential(dataverse_token),
            scope=SCOPE,
            max_retry_wait=2,
            email_columns=_SIMULATED_EMAIL_COLUMNS,
        ) as client:
            yield client

    @pytest.fixture
    def secure(self, dataverse_sim: DataverseSimulator) -> Secure:
        def secure(table: str, column: str, user: Caller, grant: ColumnPermission) -> None:
            name = f"profile-{uuid.uuid4().hex[:8]}"
            permission = {"table": table, "column": column, "read": grant.read, "update": grant.update}
            dataverse_sim.add_field_security_profile(name, [permission | {"create": grant.create}])
            dataverse_sim.add_user(
                systemuserid=user.systemuserid,
                azureactivedirectoryobjectid=user.object_id,
                internalemailaddress=user.email,
                roles=self.roles[user.systemuserid],
                fieldsecurityprofiles=[name],
            )

        return secure

    @pytest.fixture
    def user(self, dataverse_sim: DataverseSimulator) -> Caller:
        role = f"role-{uuid.uuid4().hex[:8]}"
        grants = dict.fromkeys(("systemuser", "account", "lead"), _READ)
        grants |= dict.fromkeys(("contact", "email", "appointment", "task"), _FULL)
        dataverse_sim.add_role(role, tables=grants)
        email = f"u-{uuid.uuid4().hex[:8]}@contoso.example"
        row = dataverse_sim.add_user(internalemailaddress=email, roles=[role])
        self.roles = {row["systemuserid"]: [role]}
        return Caller(row["azureactivedirectoryobjectid"], row["systemuserid"], email)

    async def test_a_field_security_profile_given_to_a_team_applies_to_its_members(
        self, crm: CrmPort, user: Caller, dataverse_sim: DataverseSimulator
    ) -> None:
        """Profiles are given to users and teams ("Field security tables"): a member of a team whose
        profile may read, create and update a secured column may, and Dataverse lets them."""
        team_profile, other = f"team-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
        dataverse_sim.add_field_security_profile(
            team_profile,
            [{"table": "contact", "column": "governmentid", "read": True, "update": True, "create": True}],
        )
        dataverse_sim.add_field_security_profile(
            other, [{"table": "contact", "column": "governmentid", "read": False}]
        )
        dataverse_sim.add_team(
            "Compliance", members=[user.systemuserid], fieldsecurityprofiles=[team_profile]
        )
        dataverse_sim.add_team("Elsewhere", members=[], fieldsecurityprofiles=[other])
        security = await crm.column_security(uuid.UUID(user.systemuserid), ["contact"], caller=None)
        assert security.of("contact")["governmentid"] == ColumnPermission(read=True, update=True, create=True)
        contact = uuid.uuid4()
        fields: dict[str, FieldValue] = {"lastname": "Secured", "governmentid": "123"}
        await crm.upsert(Upsert("contact", fields, id=contact), caller=user.object_id)
        row = await crm.get("contact", contact, select=["governmentid"], caller=user.object_id)
        assert row is not None
        assert row["governmentid"] == "123"

    async def test_series_instances_are_the_appointments_dynamics_expanded(
        self, crm: CrmPort, user: Caller
    ) -> None:
        """ "Create a recurring appointment series, instance, or exception": the master's instances are
        appointments with its id as seriesid; series_instances reads them with their original start."""
        master = uuid.uuid4()
        day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=10)
        start = dt.datetime.combine(day, dt.time(9), dt.UTC)
        fields: dict[str, FieldValue] = {
            "subject": "Standup",
            "recurrencepatterntype": 0,
            "interval": 1,
            "patternstartdate": start,
            "patternendtype": 2,
            "occurrences": 2,
            "starttime": start,
            "endtime": start + dt.timedelta(minutes=15),
        }
        await crm.upsert(Upsert("recurringappointmentmaster", fields, id=master), caller=user.object_id)
        rows = await crm.series_instances(
            master, select=["originalstartdate", "instancetypecode"], caller=user.object_id
        )
        assert sorted(str(parse_utc(row["originalstartdate"])) for row in rows) == [
            str(start),
            str(start + dt.timedelta(days=1)),
        ]
        assert {row["instancetypecode"] for row in rows} == {2}
        assert all(uuid.UUID(row["activityid"]) for row in rows)
