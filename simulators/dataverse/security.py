"""Security roles, field security profiles and impersonation.

- Privileges are named prv<Action><Table> with a depth (user, business unit, parent:child
  business units, organization); activities share prv<Action>Activity ("Security roles and
  privileges", learn.microsoft.com/power-platform/admin/security-roles-privileges). The
  simulator has one business unit, so the two business-unit depths act like organization.
- Impersonation: the CallerObjectId header (Entra object id) or MSCRMCallerID (systemuserid)
  makes the call run as that user; the calling user needs prvActOnBehalfOfAnotherUser and the
  privileges used are the intersection of both users' privileges ("Impersonate another user
  using the Web API").
- Column-level security: a secured column reads as null and writing it needs the create/update
  permission of a field security profile ("Column-level security", power-apps/developer/
  data-platform/column-level-security). Users whose roles are marked system administrator see
  every secured column, as the docs say of the System Administrator role.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulators.dataverse import errors
from simulators.dataverse.schema import Table, load_tables

DEPTHS: dict[str, int] = {
    "none": 0,
    "user": 1,
    "basic": 1,
    "businessunit": 2,
    "local": 2,
    "parentchildbusinessunit": 3,
    "deep": 3,
    "organization": 4,
    "global": 4,
}
USER_DEPTH = 1
TABLE_ACTIONS = {
    "create": "Create",
    "read": "Read",
    "write": "Write",
    "delete": "Delete",
    "append": "Append",
    "appendto": "AppendTo",
    "assign": "Assign",
    "share": "Share",
}
ACT_ON_BEHALF = "prvActOnBehalfOfAnotherUser"
# The application user the simulator creates at start (documented in README.md).
APP_USER_ID = "5b0e1c3a-0a11-4c0e-9a11-00000000a001"
APP_USER_OBJECT_ID = "5b0e1c3a-0a11-4c0e-9a11-00000000e001"
APP_ROLE = "crmsync application"
BUSINESS_UNIT_ID = "5b0e1c3a-0a11-4c0e-9a11-0000000b0001"
ORGANIZATION_ID = "5b0e1c3a-0a11-4c0e-9a11-0000000c0001"


@dataclass(frozen=True)
class FieldPermission:
    read: bool = False
    update: bool = False
    create: bool = False

    def __and__(self, other: FieldPermission) -> FieldPermission:
        return FieldPermission(
            self.read and other.read, self.update and other.update, self.create and other.create
        )

    def __or__(self, other: FieldPermission) -> FieldPermission:
        return FieldPermission(
            self.read or other.read, self.update or other.update, self.create or other.create
        )


ALL_FIELDS = FieldPermission(read=True, update=True, create=True)


@dataclass
class Role:
    privileges: dict[str, int]
    system_administrator: bool = False


@dataclass
class UserSecurity:
    user_id: str
    object_id: str | None
    roles: list[str]
    profiles: list[str]
    disabled: bool = False


@dataclass
class TeamSecurity:
    """A team: its members and the field security profiles associated with it (teamprofiles)."""

    team_id: str
    name: str
    members: list[str]
    profiles: list[str]


@dataclass
class Caller:
    """Who a request runs as, with the privileges and column permissions it may use."""

    user_id: str
    privileges: dict[str, int]
    field_permissions: dict[tuple[str, str], FieldPermission]
    all_fields: bool
    role_count: int
    impersonator_id: str | None = None
    system: bool = False

    def depth(self, privilege: str) -> int:
        return 4 if self.system else self.privileges.get(privilege, 0)

    def field(self, table: str, column: str) -> FieldPermission:
        if self.system or self.all_fields:
            return ALL_FIELDS
        return self.field_permissions.get((table, column), FieldPermission())


SYSTEM = Caller(APP_USER_ID, {}, {}, all_fields=True, role_count=0, system=True)


@dataclass
class Security:
    roles: dict[str, Role] = field(default_factory=dict)
    profiles: dict[str, dict[tuple[str, str], FieldPermission]] = field(default_factory=dict)
    users: dict[str, UserSecurity] = field(default_factory=dict)
    teams: dict[str, TeamSecurity] = field(default_factory=dict)
    by_object_id: dict[str, str] = field(default_factory=dict)
    secured_columns: frozenset[tuple[str, str]] = frozenset()
    _callers: dict[str, Caller] = field(default_factory=dict)

    def _changed(self) -> None:
        """Definitions changed: recompute the secured columns, forget the cached callers."""
        self.secured_columns = frozenset(key for profile in self.profiles.values() for key in profile)
        self._callers.clear()

    # -- definitions ---------------------------------------------------------------------------
    def add_role(self, name: str, spec: dict[str, Any]) -> None:
        """``privileges``: {"prvReadContact": "organization"}; ``tables``: {"contact": {"read": "user"}}."""
        privileges: dict[str, int] = {}
        for privilege, depth in (spec.get("privileges") or {}).items():
            privileges[str(privilege)] = _depth(depth)
        for table_name, actions in (spec.get("tables") or {}).items():
            suffix = _privilege_suffix(str(table_name))
            for action, depth in actions.items():
                if action.lower() not in TABLE_ACTIONS:
                    raise errors.bad_request(f"unknown table action {action!r}")
                privileges[f"prv{TABLE_ACTIONS[action.lower()]}{suffix}"] = _depth(depth)
        self.roles[name] = Role(privileges, bool(spec.get("system_administrator", False)))
        self._changed()

    def add_profile(self, name: str, permissions: list[dict[str, Any]]) -> None:
        self.profiles[name] = {
            (str(p["table"]), str(p["column"])): FieldPermission(
                bool(p.get("read")), bool(p.get("update")), bool(p.get("create"))
            )
            for p in permissions
        }
        self._changed()

    def add_user(self, user: UserSecurity) -> None:
        for role in user.roles:
            if role not in self.roles:
                raise errors.bad_request(f"unknown security role {role!r}")
        for profile in user.profiles:
            if profile not in self.profiles:
                raise errors.bad_request(f"unknown field security profile {profile!r}")
        self.users[user.user_id.lower()] = user
        if user.object_id:
            self.by_object_id[user.object_id.lower()] = user.user_id.lower()
        self._changed()

    def add_team(self, team: TeamSecurity) -> None:
        """A team's profiles apply to its members ("Field security tables": profiles are given to
        users and teams; RetrievePrincipalAttributePrivileges counts "direct or indirect (through
        team membership) associations")."""
        for profile in team.profiles:
            if profile not in self.profiles:
                raise errors.bad_request(f"unknown field security profile {profile!r}")
        for member in team.members:
            if member.lower() not in self.users:
                raise errors.bad_request(f"unknown systemuser {member!r}")
        self.teams[team.team_id.lower()] = team
        self._changed()

    def teams_of(self, user_id: str) -> list[TeamSecurity]:
        """The teams the user is a member of (teammembership)."""
        return [t for t in self.teams.values() if user_id.lower() in {m.lower() for m in t.members}]

    # -- callers -------------------------------------------------------------------------------
    def caller_for(self, user_id: str) -> Caller:
        """The user's own privileges (the union over its roles) and column permissions; cached."""
        cached = self._callers.get(user_id.lower())
        if cached is None:
            cached = self._callers[user_id.lower()] = self._compute_caller(user_id)
        return cached

    def _compute_caller(self, user_id: str) -> Caller:
        user = self.users[user_id.lower()]
        privileges: dict[str, int] = {}
        admin = False
        for role_name in user.roles:
            role = self.roles[role_name]
            admin = admin or role.system_administrator
            for privilege, depth in role.privileges.items():
                privileges[privilege] = max(depth, privileges.get(privilege, 0))
        fields: dict[tuple[str, str], FieldPermission] = {}
        held = [*user.profiles, *(name for team in self.teams_of(user_id) for name in team.profiles)]
        for profile_name in held:
            for key, permission in self.profiles[profile_name].items():
                fields[key] = fields.get(key, FieldPermission()) | permission
        return Caller(user.user_id, privileges, fields, all_fields=admin, role_count=len(user.roles))

    def resolve(self, headers: dict[str, str], calling_user_id: str = APP_USER_ID) -> Caller:
        """The calling (application) user, or the user it impersonates (CallerObjectId / MSCRMCallerID)."""
        app = self.caller_for(calling_user_id)
        object_id = headers.get("callerobjectid")
        systemuser_id = headers.get("mscrmcallerid")
        if not object_id and not systemuser_id:
            return app
        if object_id:
            target_id = self.by_object_id.get(object_id.strip().lower())
            if target_id is None:
                raise errors.DataverseError(
                    404,
                    errors.OBJECT_DOES_NOT_EXIST,
                    f"systemuser With azureactivedirectoryobjectid = {object_id} Does Not Exist",
                )
        else:
            target_id = str(systemuser_id).strip().lower()
            if target_id not in self.users:
                raise errors.not_found("systemuser", target_id)
        if app.depth(ACT_ON_BEHALF) == 0:
            raise errors.DataverseError(
                403,
                errors.CANNOT_ACT_ON_BEHALF,
                "User does not have the privilege to act on behalf another user.",
            )
        if self.users[target_id].disabled:
            raise errors.DataverseError(
                403, errors.USER_DISABLED, f"The specified user(Id = {target_id}) is disabled."
            )
        user = self.caller_for(target_id)
        return Caller(
            user.user_id,
            {p: min(d, app.depth(p)) for p, d in user.privileges.items() if app.depth(p)},
            {k: v & app.field(*k) for k, v in user.field_permissions.items()},
            all_fields=user.all_fields and app.all_fields,
            role_count=user.role_count,
            impersonator_id=app.user_id,
        )

    # -- checks --------------------------------------------------------------------------------
    def require(
        self,
        caller: Caller,
        action: str,
        table: Table,
        owner_id: str | None = None,
        record_id: str | None = None,
    ) -> None:
        """Raise the documented 403 unless ``caller`` may ``action`` (Create, Read, ...) this row."""
        privilege = f"prv{action}{table.privilege_suffix}"
        depth = caller.depth(privilege)
        if depth == 0:
            raise errors.DataverseError(
                403,
                errors.PRIVILEGE_DENIED,
                f"SecLib::AccessCheckEx failed. Returned hr = -2147220960 on UserId: {caller.user_id}: "
                f"Principal user (Id={caller.user_id}, type=8, roleCount={caller.role_count}, "
                f"privilegeCount={len(caller.privileges)}, accessMode=0), is missing {privilege} privilege "
                f"on entity '{table.logical_name}'. context.Method={action}.",
            )
        if depth == USER_DEPTH and owner_id is not None and owner_id.lower() != caller.user_id.lower():
            raise errors.DataverseError(
                403,
                errors.ACCESS_DENIED,
                f"Principal user (Id={caller.user_id}, type=8) is missing {action}Access right(s) for record "
                f"with Id = {record_id} of entity {table.logical_name}.",
            )

    def may_read(self, caller: Caller, table: Table, owner_id: str | None) -> bool:
        depth = caller.depth(f"prvRead{table.privilege_suffix}")
        return depth > USER_DEPTH or (
            depth == USER_DEPTH and (owner_id is None or owner_id.lower() == caller.user_id.lower())
        )


def _depth(value: Any) -> int:
    depth = DEPTHS.get(str(value).lower().replace(" ", "").replace(":", ""))
    if depth is None:
        raise errors.bad_request(f"unknown privilege depth {value!r}; use one of {sorted(DEPTHS)}")
    return depth


def _privilege_suffix(table_name: str) -> str:
    table = load_tables().get(table_name)
    if table is None:
        raise errors.bad_request(f"unknown table {table_name!r}")
    return table.privilege_suffix


def app_role_spec() -> dict[str, Any]:
    """Organization-wide privileges on every simulated table plus prvActOnBehalfOfAnotherUser and,
    as a System Administrator has it, prvBulkDelete (for clients such as Microsoft's Python client,
    whose list delete is a bulk delete job)."""
    return {
        "tables": {name: dict.fromkeys(TABLE_ACTIONS, "organization") for name in load_tables()},
        "privileges": {ACT_ON_BEHALF: "organization", "prvBulkDelete": "organization"},
        "system_administrator": True,
    }
