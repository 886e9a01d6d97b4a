"""Field security profiles as Web API rows: fieldsecurityprofiles, fieldpermissions, a user's profiles.

"Column-level security with code" (learn.microsoft.com/power-apps/developer/data-platform/
column-level-security): a field security profile holds ``fieldpermission`` rows (``entityname``,
``attributelogicalname``, ``canread`` / ``canupdate`` / ``cancreate``: 0 Not Allowed, 4 Allowed) and
is associated with users through ``systemuserprofiles_association``; the System Administrator
profile (``572329c1-a042-4e22-be47-367c6374ea45``) "manages access to secured columns for system
administrators" and "always contains references to each secured column".

The rows mirror the profiles defined with ``POST /_sim/fieldsecurityprofiles`` (the simulator's
secured columns are the columns named there) and are read-only through the Web API. The System
Administrator profile lists every secured column with every permission; its members are the users
holding a role marked system administrator. ``GET systemusers(<id>)/systemuserprofiles_association``
lists a user's profiles ("Associate and disassociate table rows using the Web API").

Profiles given to teams ("Field security tables", learn.microsoft.com/power-apps/developer/
data-platform/field-security-entities: "restricts field access to specified users and teams"; the
team - profile relationship ``teamprofiles_association``) apply to the team's members: ``GET
systemusers(<id>)/teammembership_association`` lists a user's teams and ``GET
teams(<id>)/teamprofiles_association`` a team's profiles. Teams are defined with ``POST /_sim/teams``.
"""

from __future__ import annotations

import re
import uuid

from simulators.dataverse import errors
from simulators.dataverse.security import Security
from simulators.dataverse.store import Ref, Store

SYSTEM_ADMINISTRATOR_PROFILE = "572329c1-a042-4e22-be47-367c6374ea45"
ALLOWED, NOT_ALLOWED = 4, 0
TABLES = frozenset({"fieldsecurityprofile", "fieldpermission"})
NAV = re.compile(r"^systemusers\((?P<user>[0-9a-fA-F-]{36})\)/systemuserprofiles_association$")
TEAMS_NAV = re.compile(r"^systemusers\((?P<user>[0-9a-fA-F-]{36})\)/teammembership_association$")
TEAM_PROFILES_NAV = re.compile(r"^teams\((?P<team>[0-9a-fA-F-]{36})\)/teamprofiles_association$")
_NAMESPACE = uuid.UUID("5b0e1c3a-0a11-4c0e-9a11-0000000f5001")


def profile_id(name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"profile:{name}"))


def _permission_id(profile: str, table: str, column: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"permission:{profile}:{table}.{column}"))


def _allowed(flag: bool) -> int:
    return ALLOWED if flag else NOT_ALLOWED


def materialize(store: Store, security: Security) -> None:
    """Rewrite the profile and permission rows from the profiles the simulator knows."""
    for table in TABLES:
        for record_id in list(store.rows[table]):
            store.delete(table, record_id)
    profiles = {
        SYSTEM_ADMINISTRATOR_PROFILE: (
            "System Administrator",
            dict.fromkeys(security.secured_columns, (True, True, True)),
        )
    }
    for name, grants in security.profiles.items():
        profiles[profile_id(name)] = (
            name,
            {key: (grant.read, grant.update, grant.create) for key, grant in grants.items()},
        )
    for identifier, (name, grants) in profiles.items():
        store.put(
            "fieldsecurityprofile",
            {"fieldsecurityprofileid": identifier, "name": name, "versionnumber": store.next_version()},
            "fieldsecurityprofileid",
        )
        for (table, column), (read, update, create) in sorted(grants.items()):
            store.put(
                "fieldpermission",
                {
                    "fieldpermissionid": _permission_id(identifier, table, column),
                    "entityname": table,
                    "attributelogicalname": column,
                    "canread": _allowed(read),
                    "canupdate": _allowed(update),
                    "cancreate": _allowed(create),
                    "fieldsecurityprofileid": Ref("fieldsecurityprofile", identifier),
                    "versionnumber": store.next_version(),
                },
                "fieldpermissionid",
            )


def user_profile_ids(security: Security, user_id: str) -> list[str]:
    """The profiles associated with a user (system administrators: also the System Administrator one)."""
    user = security.users.get(user_id.lower())
    if user is None:
        raise errors.not_found("systemuser", user_id)
    ids = [profile_id(name) for name in user.profiles]
    if any(security.roles[role].system_administrator for role in user.roles):
        ids.insert(0, SYSTEM_ADMINISTRATOR_PROFILE)
    return ids


def team_profile_ids(security: Security, team_id: str) -> list[str]:
    """The profiles associated with a team (teamprofiles)."""
    team = security.teams.get(team_id.lower())
    if team is None:
        raise errors.not_found("team", team_id)
    return [profile_id(name) for name in team.profiles]
