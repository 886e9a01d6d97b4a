"""Field directions and column security for one mailbox and item kind: the planner's :class:`SyncPolicy`.

Directions are applied in this order ("Control field synchronization between Dynamics 365 and
Outlook or Exchange"; "What fields can be synchronized with Outlook?"):

1. Dynamics' documented default, in the field maps (:mod:`shared.sync.fieldmaps`);
2. the organization's setting, where Dynamics keeps it: ``syncattributemapping`` (0 none, 1 to
   Exchange, 2 to Dynamics, 3 both; an aggregate row such as Appointment Time or an address governs
   the columns it is computed from);
3. the mailbox's setting (``MailboxSettings.field_directions``).

A fixed field keeps its default: a mailbox setting that tries to change one is refused when the
settings are written (:func:`check_field_directions`), an organization row that does is ignored and
logged.

Column security ("Column-level security with code"): the secured columns the mailbox's CRM user may
not read, update or set on create go into the policy, and the planner neither takes the CRM's
null for such a column as a value (the Outlook value is kept) nor writes what the user may not.

Both are organization settings, read as the application and cached per worker process
(:func:`field_rules`): one read per period however many jobs run, not one per job.
"""

from __future__ import annotations

import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from shared.crm.errors import CrmError
from shared.crm.port import ColumnSecurity, CrmPort
from shared.domain.mailbox_settings import MailboxSettings
from shared.domain.model import FieldDirection, ItemKind
from shared.store.records import Mailbox
from shared.sync.concurrency import TtlCache
from shared.sync.fieldmaps import FIELD_MAPS, field_map
from shared.sync.plan import SyncPolicy
from shared.sync.policies import sync_policy

logger = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 300.0
#: syncattributemapping.syncdirection -> crmsync's direction.
SYNC_DIRECTIONS: Mapping[int, FieldDirection] = {
    0: FieldDirection.NONE,
    1: FieldDirection.TO_OUTLOOK,
    2: FieldDirection.TO_CRM,
    3: FieldDirection.TWO_WAY,
}
SYNCED_TABLES: Mapping[str, ItemKind] = {
    fmap.table: kind for kind, fmap in FIELD_MAPS.items() if kind is not ItemKind.EMAIL
}


class FixedFieldDirection(ValueError):
    """A mailbox setting tries to change the direction of a field Dynamics fixes."""


def check_field_directions(settings: MailboxSettings) -> None:
    """Refuse mailbox direction settings for unknown or fixed fields, naming them."""
    problems: list[str] = []
    for kind, wanted in settings.field_directions.items():
        fmap = field_map(kind)
        units = fmap.units()
        for column in sorted(wanted):
            if column not in units:
                problems.append(f"{kind.value}.{column} is not a synchronized field of its own")
            elif column in fmap.fixed_columns() and wanted[column] is not fmap.directions()[column]:
                problems.append(
                    f"{kind.value}.{column} has a fixed direction ({fmap.directions()[column].value})"
                )
    if problems:
        raise FixedFieldDirection("field_directions: " + "; ".join(problems))


def organization_directions(rows: list[Any]) -> dict[ItemKind, dict[str, FieldDirection]]:
    """syncattributemapping rows the organization changed -> per kind, leading column -> direction
    (fixed fields left out)."""
    result: dict[ItemKind, dict[str, FieldDirection]] = {}
    for row in rows:
        kind = SYNCED_TABLES.get(row.table)
        direction = SYNC_DIRECTIONS.get(row.direction)
        if kind is None or direction is None or row.direction == row.default_direction:
            continue  # not ours, or Dynamics' own default: crmsync's documented defaults stand
        fmap = field_map(kind)
        leaders, fixed, defaults = fmap.units(), fmap.fixed_columns(), fmap.directions()
        for column in row.columns:
            if column not in leaders:
                continue  # not synchronized by crmsync, or merged with its leading column
            if column in fixed:
                if direction is not defaults[column]:
                    logger.warning(
                        "organization field setting ignored: %s.%s has a fixed direction", row.table, column
                    )
                continue
            result.setdefault(kind, {})[column] = direction
    return result


class FieldRules:
    """The organization's field directions and each user's column access, cached for ``ttl`` seconds."""

    def __init__(
        self, crm: CrmPort, *, ttl: float = DEFAULT_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._crm = crm
        self._cache: TtlCache[str, Any] = TtlCache(ttl, clock)  # concurrent jobs wait for one read

    async def _cached(self, key: str, read: Callable[[], Awaitable[Any]]) -> Any:
        return await self._cache.get(key, read)

    async def organization(self) -> dict[ItemKind, dict[str, FieldDirection]]:
        async def read() -> dict[ItemKind, dict[str, FieldDirection]]:
            try:
                rows = await self._crm.field_sync_mappings(sorted(SYNCED_TABLES), caller=None)
            except CrmError as error:
                if error.retryable:
                    raise
                # The application user may not read them: Dynamics' documented defaults apply.
                logger.warning("organization field settings unreadable (%s): documented defaults", error.code)
                return {}
            return organization_directions(rows)

        result: dict[ItemKind, dict[str, FieldDirection]] = await self._cached("organization", read)
        return result

    async def column_security(self, user_id: uuid.UUID) -> ColumnSecurity:
        # No fallback here: without it a secured column's null would be taken for a value and blank
        # Outlook, so a failed read fails the run (retried; status shows the error).
        async def read() -> ColumnSecurity:
            tables = sorted(fmap.table for fmap in FIELD_MAPS.values())
            return await self._crm.column_security(user_id, tables, caller=None)

        result: ColumnSecurity = await self._cached(f"user:{user_id}", read)
        return result

    async def policy(self, mailbox: Mailbox, kind: ItemKind) -> SyncPolicy:
        """The planner's policy for ``kind`` in ``mailbox``, with the organization's and the user's rules."""
        base = sync_policy(mailbox.settings, kind)
        organization = (await self.organization()).get(kind, {})
        access = (await self.column_security(uuid.UUID(mailbox.crm_user_id))).of(field_map(kind).table)
        return SyncPolicy(
            directions=base.directions,
            tie_break=base.tie_break,
            delete_policy=base.delete_policy,
            tracked_category=base.tracked_category,
            organization=organization,
            unreadable=frozenset(c for c, grant in access.items() if not grant.read),
            unwritable=frozenset(c for c, grant in access.items() if not grant.update),
            uncreatable=frozenset(c for c, grant in access.items() if not grant.create),
        )


_RULES: weakref.WeakKeyDictionary[CrmPort, FieldRules] = weakref.WeakKeyDictionary()


def field_rules(crm: CrmPort, *, ttl: float = DEFAULT_TTL_SECONDS) -> FieldRules:
    """The process's :class:`FieldRules` for this CRM client (the runtime keeps one client per process
    and creates them with ``CRMSYNC_FIELD_SETTINGS_TTL_SECONDS``); ``ttl`` applies when first asked."""
    rules = _RULES.get(crm)
    if rules is None:
        rules = _RULES[crm] = FieldRules(crm, ttl=ttl)
    return rules
