"""What a run asks Dataverse about a mailbox's CRM user, kept per worker for a while.

A CRM -> Outlook run needs the user's "Sync to Outlook" privilege (``RetrieveUserPrivileges``) and
Outlook synchronization filters (``userquery``, as the user), and a run of appointments, either way,
the user's personal time zone (``usersettings`` and ``timezonedefinition``): four requests about
the user before a single record, each counted against the service protection limits that crmsync's
one application user shares across every mailbox (chaos seed 4 met the 6,000 per 5 minutes). They
are settings, not records: like the organization's field settings (:mod:`shared.sync.field_rules`)
they are cached per worker process and CRM client for ``CRMSYNC_FIELD_SETTINGS_TTL_SECONDS``. A
filter, role or time zone changed in Dynamics reaches the runs within that time, as Dynamics' own
Outlook synchronization takes them at its next cycle. Failed reads are not cached.
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

from shared.crm.errors import PrivilegeDenied, RecordNotFound
from shared.crm.port import CrmPort, CrmQueryPort
from shared.sync.concurrency import TtlCache
from shared.sync.crm_filter import user_filters
from shared.sync.field_rules import DEFAULT_TTL_SECONDS


class UserReads:
    """A user's privileges, time zone and Outlook filters, each read at most once per ``ttl``."""

    def __init__(
        self,
        crm: CrmPort,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._crm = crm
        self._cache: TtlCache[tuple[str, ...], Any] = TtlCache(ttl, clock)

    async def privileges(self, user_id: uuid.UUID) -> frozenset[str]:
        """The privilege names the user holds, read as the application."""

        async def read() -> frozenset[str]:
            return await self._queries().user_privileges(user_id, caller=None)

        found: frozenset[str] = await self._cache.get(("privileges", str(user_id)), read)
        return found

    async def time_zone(self, user_id: uuid.UUID) -> str | None:
        """The user's time zone (Windows standard name); None when unset or unreadable."""

        async def read() -> str | None:
            try:
                return await self._crm.user_time_zone(user_id, caller=None)
            except (RecordNotFound, PrivilegeDenied):
                return None

        found: str | None = await self._cache.get(("time_zone", str(user_id)), read)
        return found

    async def outlook_filters(self, table: str, *, user_id: uuid.UUID, caller: str) -> list[str] | None:
        """:func:`~shared.sync.crm_filter.user_filters`: the user's enabled Outlook filters of ``table``."""

        async def read() -> list[str] | None:
            return await user_filters(self._queries(), table, user_id=user_id, caller=caller)

        found: list[str] | None = await self._cache.get(("filters", str(user_id), table), read)
        return found

    def _queries(self) -> CrmQueryPort:
        if not isinstance(self._crm, CrmQueryPort):
            raise TypeError("privileges and filters are read through a CrmQueryPort")
        return self._crm


_READS: weakref.WeakKeyDictionary[CrmPort, UserReads] = weakref.WeakKeyDictionary()


def user_reads(crm: CrmPort, *, ttl: float = DEFAULT_TTL_SECONDS) -> UserReads:
    """The process's :class:`UserReads` for this CRM client (the runtime creates it with
    ``CRMSYNC_FIELD_SETTINGS_TTL_SECONDS``); ``ttl`` applies when first asked."""
    reads = _READS.get(crm)
    if reads is None:
        reads = _READS[crm] = UserReads(crm, ttl=ttl)
    return reads
