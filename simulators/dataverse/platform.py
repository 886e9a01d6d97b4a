"""Platform features on top of the record engine: roles, user settings, webhooks, bulk messages.

``PlatformEngine`` is the Engine the simulator runs: it answers the platform paths (the
RetrieveUserPrivileges function, the role association, the bulk actions), refuses writes to the
platform's read-only tables, keeps one usersettings row per user and raises webhook events for
every committed write (modules: roles, usersettings, syncmappings, plugins, bulk).
``PlatformStore`` keeps the events of a request with its savepoints, so a rolled-back change set
or a failed bulk operation raises nothing; ``setup`` writes what a new organization starts with.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from simulators.dataverse import (
    bulk,
    bulkdelete,
    errors,
    fieldsecurity,
    metadata,
    plugins,
    recurrence,
    roles,
    savedqueries,
    syncmappings,
    usersettings,
)
from simulators.dataverse.engine import ApiRequest, ApiResponse, Engine
from simulators.dataverse.query import parse_select
from simulators.dataverse.schema import Table, tables_by_entity_set
from simulators.dataverse.security import APP_ROLE, Caller, Security, app_role_spec
from simulators.dataverse.store import Record, Savepoint, Store

READ_ONLY_TABLES = frozenset(
    {"role", "privilege", "timezonedefinition", "sdkmessage", "sdkmessagefilter"}
    | {"asyncoperation", "bulkdeleteoperation"}
    | fieldsecurity.TABLES
)
ROLE_SETS = frozenset({"roles", "privileges"})


class PlatformStore(Store):
    """A Store whose savepoints also cover the webhook events raised since them."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[plugins.Delivery] = []
        self.committed: list[plugins.Delivery] = []
        self._marks: list[int] = []

    def savepoint(self) -> Savepoint:
        self._marks.append(len(self.pending))
        return super().savepoint()

    def release(self, point: Savepoint) -> None:
        super().release(point)
        if self._marks:
            self._marks.pop()
        if not self._marks:
            self.committed.extend(self.pending)
            self.pending.clear()

    def rollback(self, point: Savepoint) -> None:
        mark = self._marks[-1] if self._marks else 0
        del self.pending[mark:]
        super().rollback(point)

    def take_committed(self) -> list[plugins.Delivery]:
        items, self.committed = self.committed, []
        return items


SYNC_MAPPINGS_FN = re.compile(
    r"^(?P<set>systemusers|teams)\((?P<id>[0-9a-fA-F-]{36})\)/"
    r"Microsoft\.Dynamics\.CRM\.RetrievePrincipalSyncAttributeMappings(?:\(\))?$"
)


class PlatformEngine(Engine):
    store: PlatformStore

    def __init__(self, store: PlatformStore, security: Security) -> None:
        super().__init__(store, security)
        #: Bulk delete jobs submitted and not run yet (the app runs them after the answer).
        self.system_jobs: list[bulkdelete.Job] = []

    # -- paths ---------------------------------------------------------------------------------
    def _dispatch(self, request: ApiRequest, caller: Caller) -> ApiResponse:
        path = request.path.strip("/")
        if metadata.matches(path):
            status, body = metadata.handle(request.method, path, request.query, request.base_url)
            return ApiResponse(status, {}, body)
        nav = roles.NAV.match(path)
        if nav is not None:
            return self._user_roles(request, caller, nav.group("user").lower(), nav)
        profiles = fieldsecurity.NAV.match(path)
        if profiles is not None:
            return self._user_profiles(request, caller, profiles.group("user").lower())
        principal = SYNC_MAPPINGS_FN.match(path)
        if principal is not None:
            return self._sync_mappings(request, caller, principal)
        teams = fieldsecurity.TEAMS_NAV.match(path)
        if teams is not None:
            return self._user_teams(request, caller, teams.group("user").lower())
        team_profiles = fieldsecurity.TEAM_PROFILES_NAV.match(path)
        if team_profiles is not None:
            ids = fieldsecurity.team_profile_ids(self.security, team_profiles.group("team"))
            return self._profiles(request, caller, ids)
        answer = bulk.run(self, request, caller)
        if answer is not None:
            return answer
        if path == bulkdelete.PATH:
            answer, job = bulkdelete.submit(self, request, caller)
            self.system_jobs.append(job)
            return answer
        if path == "DeleteOpenInstances" and request.method == "POST":
            return recurrence.delete_open_instances(self, request, caller)
        entity_set = path.split("(", 1)[0].split("/", 1)[0]
        table = tables_by_entity_set().get(entity_set)
        if table is not None:
            if entity_set in ROLE_SETS and request.method == "GET":
                roles.materialize(self.store, self.security)
            if table.logical_name in fieldsecurity.TABLES and request.method == "GET":
                fieldsecurity.materialize(self.store, self.security)
            if table.logical_name in READ_ONLY_TABLES and request.method != "GET":
                raise errors.DataverseError(
                    405, errors.BAD_PAYLOAD, f"The simulator's {table.logical_name} rows are read-only."
                )
            if table.logical_name == "usersettings" and request.method in {"POST", "DELETE"}:
                raise errors.DataverseError(
                    405,
                    errors.BAD_PAYLOAD,
                    "usersettings rows come and go with their systemuser; update them with PATCH.",
                )
        return super()._dispatch(request, caller)

    def _user_roles(self, request: ApiRequest, caller: Caller, user_id: str, nav: Any) -> ApiResponse:
        user_table = tables_by_entity_set()["systemusers"]
        user_row = self._existing(user_table, user_id, caller)
        if nav.group("fn"):
            if request.method != "GET":
                raise errors.DataverseError(
                    405, errors.BAD_PAYLOAD, "RetrieveUserPrivileges is a function: GET."
                )
            context = f"{request.base_url}/$metadata#Microsoft.Dynamics.CRM.RetrieveUserPrivilegesResponse"
            privileges = roles.user_privileges(self.security, user_row["systemuserid"])
            return ApiResponse(200, {}, {"@odata.context": context, "RolePrivileges": privileges})
        roles.materialize(self.store, self.security)
        if nav.group("ref"):
            if request.method != "POST":
                raise errors.DataverseError(405, errors.BAD_PAYLOAD, "Associate with POST .../$ref.")
            target = errors.json_object(request.body).get("@odata.id")
            role_id = str(target or "").rstrip(")").rsplit("(", 1)[-1]
            if "roles(" not in str(target or ""):
                raise errors.bad_request("The @odata.id must address a role: .../roles(<roleid>).")
            roles.assign(self.security, caller, user_id, role_id)
            return ApiResponse(204)
        if request.method != "GET":
            raise errors.DataverseError(405, errors.BAD_PAYLOAD, "Use GET, or POST .../$ref to associate.")
        role_table = tables_by_entity_set()["roles"]
        names = self.security.users[user_id].roles
        rows = [self.store.get("role", roles.identifier(f"role:{name}")) for name in names]
        value = [self.project(role_table, row, None, caller, request) for row in rows if row is not None]
        return ApiResponse(200, {}, {"@odata.context": f"{request.base_url}/$metadata#roles", "value": value})

    def _user_profiles(self, request: ApiRequest, caller: Caller, user_id: str) -> ApiResponse:
        if request.method != "GET":
            raise errors.DataverseError(
                405, errors.BAD_PAYLOAD, "The simulator lists a user's profiles: GET."
            )
        self._existing(tables_by_entity_set()["systemusers"], user_id, caller)
        return self._profiles(request, caller, fieldsecurity.user_profile_ids(self.security, user_id))

    def _sync_mappings(self, request: ApiRequest, caller: Caller, principal: re.Match[str]) -> ApiResponse:
        if request.method != "GET":
            raise errors.DataverseError(
                405, errors.BAD_PAYLOAD, "RetrievePrincipalSyncAttributeMappings is a function: GET."
            )
        if principal.group("set") == "systemusers":
            self._existing(tables_by_entity_set()["systemusers"], principal.group("id"), caller)
        elif principal.group("id").lower() not in self.security.teams:
            raise errors.not_found("team", principal.group("id"))
        response_type = "Microsoft.Dynamics.CRM.RetrievePrincipalSyncAttributeMappingsResponse"
        context = f"{request.base_url}/$metadata#{response_type}"
        mappings = syncmappings.principal_mappings(self.store)
        return ApiResponse(200, {}, {"@odata.context": context, "AttributeMappings": mappings})

    def _user_teams(self, request: ApiRequest, caller: Caller, user_id: str) -> ApiResponse:
        """A user's teams (teamid and name: the simulator keeps no other team column)."""
        if request.method != "GET":
            raise errors.DataverseError(405, errors.BAD_PAYLOAD, "The simulator lists a user's teams: GET.")
        self._existing(tables_by_entity_set()["systemusers"], user_id, caller)
        value = [{"teamid": t.team_id, "name": t.name} for t in self.security.teams_of(user_id)]
        return ApiResponse(200, {}, {"@odata.context": f"{request.base_url}/$metadata#teams", "value": value})

    def _profiles(self, request: ApiRequest, caller: Caller, ids: list[str]) -> ApiResponse:
        if request.method != "GET":
            raise errors.DataverseError(405, errors.BAD_PAYLOAD, "The simulator lists profiles: GET.")
        fieldsecurity.materialize(self.store, self.security)
        profile_table = tables_by_entity_set()["fieldsecurityprofiles"]
        rows = [self.store.get("fieldsecurityprofile", profile) for profile in ids]
        select = parse_select(request.query.get("$select"), profile_table)
        value = [self.project(profile_table, row, select, caller, request) for row in rows if row is not None]
        context = f"{request.base_url}/$metadata#fieldsecurityprofiles"
        return ApiResponse(200, {}, {"@odata.context": context, "value": value})

    # -- writes --------------------------------------------------------------------------------
    def write(
        self,
        table: Table,
        record_id: str,
        payload: dict[str, Any],
        *,
        existing: Record | None,
        caller: Caller,
        request: ApiRequest,
        computed: dict[str, Any] | None = None,
    ) -> Record:
        name = table.logical_name
        before = dict(existing) if existing is not None else None
        if name == "usersettings":
            usersettings.check(payload)
        elif name == "syncattributemapping":
            syncmappings.check(existing, payload)
        if name == "sdkmessageprocessingstep" and existing is None:
            payload = {"rank": 1, "supporteddeployment": 0, "asyncautodelete": False, **payload}
        if name == "appointment":
            computed = {**(recurrence.instance_computed(existing, payload, caller) or {}), **(computed or {})}
        record = super().write(
            table, record_id, payload, existing=existing, caller=caller, request=request, computed=computed
        )
        if name == recurrence.MASTER and (before is None or not caller.system):
            recurrence.after_master_write(self, before, record, payload, request)
            record = self.store.get(name, record_id) or record
        if name == "usersettings":
            usersettings.settle(record)
        elif name == "serviceendpoint":
            plugins.check_endpoint(record)
        elif name == "sdkmessageprocessingstep":
            plugins.check_step(self.store, record)
        elif name == "systemuser" and self.store.get("usersettings", record_id) is None:
            row = usersettings.row_for(record_id, self.store.next_version())
            self.store.put("usersettings", row, "systemuserid")
        if not caller.system:
            self._raise_events(
                table,
                record_id=record_id,
                payload=payload,
                before=before,
                after=record,
                caller=caller,
                request=request,
            )
        return record

    def _delete(
        self, request: ApiRequest, table: Table, record_id: str | None, caller: Caller
    ) -> ApiResponse:
        before = self.store.get(table.logical_name, record_id) if record_id else None
        if before is not None:
            self._existing(table, str(record_id), caller, "Delete")
            recurrence.before_delete(self, table.logical_name, before, request)
        response = super()._delete(request, table, record_id, caller)
        if before is not None and record_id is not None:
            event = plugins.Event(
                "Delete", table, record_id, dict(before), None, [], caller, _organization(request)
            )
            self.store.pending.extend(plugins.deliveries(self.store, event))
        return response

    def project(
        self, table: Table, record: Record, select: list[str] | None, caller: Caller, request: ApiRequest
    ) -> dict[str, Any]:
        out = super().project(table, record, select, caller, request)
        if table.logical_name == "serviceendpoint" and "authvalue" in out:
            out["authvalue"] = None  # Register a WebHook: the AuthValue "cannot be retrieved"
        return out

    def _raise_events(
        self,
        table: Table,
        *,
        record_id: str,
        payload: dict[str, Any],
        before: Record | None,
        after: Record,
        caller: Caller,
        request: ApiRequest,
    ) -> None:
        if not self.store.rows["sdkmessageprocessingstep"]:
            return
        organization = _organization(request)
        if before is None:
            raised = [("Create", [c for c, v in after.items() if v is not None])]
        else:
            raised = plugins.update_messages(table, payload, before, after)
        for message, changed in raised:
            event = plugins.Event(
                message, table, record_id, before, dict(after), changed, caller, organization
            )
            self.store.pending.extend(plugins.deliveries(self.store, event))


def _organization(request: ApiRequest) -> str:
    return urlsplit(request.base_url).hostname or "localhost"


def identifier(name: str) -> str:
    return roles.identifier(name)


def setup(store: Store, security: Security) -> None:
    """What every new organization has: roles, time zones, messages, the default field mappings."""
    spec = app_role_spec()
    spec["privileges"][roles.ASSIGN_ROLE] = "organization"
    security.add_role(APP_ROLE, spec)
    roles.install(security)
    usersettings.install(store, identifier)
    plugins.sdk_rows(store, identifier)
    syncmappings.install(store, identifier)
    savedqueries.install(store, identifier)


__all__ = ["PlatformEngine", "PlatformStore", "setup"]
