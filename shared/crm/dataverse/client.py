"""The Dataverse Web API adapter: :class:`DataverseClient` implements the CRM port on httpx.

The client holds the options and the :class:`~shared.crm.dataverse.transport.Transport`; each call is
carried out by the module of its responsibility: :mod:`~shared.crm.dataverse.records` (reads, writes,
email lookup), :mod:`~shared.crm.dataverse.batching` (``$batch``), :mod:`~shared.crm.dataverse.changes`
(change tracking, WhoAmI). Requests and answers as data are :mod:`~shared.crm.dataverse.wire`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from shared.config import Settings
from shared.crm.dataverse import batching, changes, fieldsettings, queries, records, registration
from shared.crm.dataverse.bulk import BulkWrites
from shared.crm.dataverse.transport import AsyncTokenSource, Transport
from shared.crm.port import (
    EMAIL_RESOLUTION_ORDER,
    ChangePage,
    ColumnSecurity,
    FieldSyncMapping,
    FieldValue,
    Operation,
    OperationResult,
    Party,
    RecordRef,
    Upsert,
    UpsertResult,
    WhoAmI,
)

_PARTY_IDS_PER_QUERY = 50  # keeps the URL well under Dataverse's limits, as routing's reads


class DataverseClient:
    """Async Dataverse Web API client; every call for a user carries ``CallerObjectId``.

    ``base_api_url`` is ``Settings.dataverse_api_url`` and ``scope`` ``Settings.dataverse_scope``
    (or use :meth:`from_settings`). ``max_concurrency_per_user`` caps requests in flight per caller
    (Dataverse allows 52); ``max_attempts`` bounds tries per call; a ``Retry-After`` longer than
    ``max_retry_wait`` seconds fails the call at once (transient) instead of retrying early.
    ``email_columns`` overrides the columns :meth:`find_by_email` searches per table.
    ``application_writes``: allow writes with ``caller=None`` (as the application user itself), for
    tests and seeding tools; the connector never writes but as the mailbox's user, so without it a
    write without a caller is refused before anything is sent.
    ``timeout_seconds``: how long one answer may take before the request fails (a dropped connection:
    retried only when replay-safe), unless you passed your own ``http_client``.
    Close it with :meth:`aclose` (or ``async with``) unless you passed your own ``http_client``.
    """

    def __init__(
        self,
        base_api_url: str,
        credential: AsyncTokenSource,
        *,
        scope: str,
        max_concurrency_per_user: int = 8,
        max_attempts: int = 6,
        max_retry_wait: float = 60.0,
        change_page_size: int | None = None,
        email_columns: Mapping[str, Sequence[str]] | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout_seconds: float = 120.0,
        application_writes: bool = False,
    ) -> None:
        self._application_writes = application_writes
        self._transport = Transport(
            base_api_url,
            credential,
            scope=scope,
            max_concurrency_per_user=max_concurrency_per_user,
            max_attempts=max_attempts,
            max_retry_wait=max_retry_wait,
            http_client=http_client,
            timeout_seconds=timeout_seconds,
        )
        self._bulk = BulkWrites(self._transport)
        self._change_page_size = change_page_size
        self._email_columns = dict(email_columns or {})

    @classmethod
    def from_settings(
        cls, settings: Settings, credential: AsyncTokenSource, **options: Any
    ) -> DataverseClient:
        """The client for the configured organization: Web API URL, ``<org url>/.default`` scope and
        the configured answer timeout (CRMSYNC_DATAVERSE_TIMEOUT_SECONDS)."""
        options.setdefault("timeout_seconds", settings.dataverse_timeout_seconds)
        return cls(settings.dataverse_api_url, credential, scope=settings.dataverse_scope, **options)

    def _check_writer(self, caller: str | None) -> None:
        """Writes act as a user (impersonated), never with the application's own rights."""
        if caller is None and not self._application_writes:
            raise ValueError("a Dataverse write needs the acting user's Entra object id (caller)")

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> DataverseClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- single-record operations ---------------------------------------------

    async def upsert(self, op: Upsert, *, caller: str | None) -> UpsertResult:
        """Create or update one record (PATCH); conditional per ``op.if_match`` / ``op.if_none_match``."""
        self._check_writer(caller)
        return await records.upsert(self._transport, op, caller=caller)

    async def create(
        self,
        table: str,
        fields: Mapping[str, FieldValue],
        *,
        id: uuid.UUID | None = None,
        parties: Sequence[Party] = (),
        caller: str | None,
    ) -> RecordRef:
        """Create one record (POST). With a client-chosen ``id`` the create is safe to retry (a replay
        fails with :class:`~shared.crm.errors.DuplicateRecord`); without one it is never retried after
        it may have reached Dataverse."""
        self._check_writer(caller)
        return await records.create(self._transport, table, fields, id=id, parties=parties, caller=caller)

    async def get(
        self, table: str, id: uuid.UUID, *, select: Sequence[str] | None = None, caller: str | None
    ) -> dict[str, Any] | None:
        """One record's columns (with ``@odata.etag``), or ``None`` if it does not exist.

        Lookups come back as ``_<column>_value`` with their target table annotated: read them with
        :func:`~shared.crm.dataverse.wire.lookup_ref`.
        """
        return await records.get(self._transport, table, id, select=select, caller=caller)

    async def get_many(
        self, table: str, ids: Sequence[uuid.UUID], *, select: Sequence[str] | None = None, caller: str | None
    ) -> dict[uuid.UUID, dict[str, Any] | None]:
        """Each record as :meth:`get` reads it (``None`` where it does not exist), keyed by id.

        One ``$batch`` of independent GETs per 1000 ids (powerapps-docs "Execute batch operations using
        the Web API", learn.microsoft.com/power-apps/developer/data-platform/webapi
        /execute-batch-operations-using-web-api: up to 1000 requests per batch), so a delta page costs
        one request against the service protection limits, impersonated and retried as a whole like any
        call. A missing record (404, 0x80040217) is ``None``; any other failed read raises its typed
        error (a user without read privilege: :class:`~shared.crm.errors.PrivilegeDenied`).
        """
        return await records.get_many(self._transport, table, ids, select=select, caller=caller)

    async def delete(
        self, table: str, id: uuid.UUID, *, if_match: str | None = None, caller: str | None
    ) -> bool:
        """Delete a record: ``True`` if this call deleted it, ``False`` if it was already gone."""
        self._check_writer(caller)
        return await records.delete(self._transport, table, id, if_match=if_match, caller=caller)

    async def find_by_email(
        self, address: str, *, tables: Sequence[str] = EMAIL_RESOLUTION_ORDER, caller: str | None
    ) -> list[RecordRef]:
        """Records whose email columns hold ``address``, grouped in ``tables`` order (party resolution).

        One ``$batch`` of GETs: one round trip, one request against the service protection limits, and
        the address travels in the body, never in a URL that an HTTP log line could show.
        """
        return await records.find_by_email(
            self._transport, address, tables=tables, email_columns=self._email_columns, caller=caller
        )

    async def find_where(
        self,
        table: str,
        columns: Sequence[str],
        values: Sequence[str],
        *,
        select: Sequence[str],
        caller: str | None,
    ) -> list[dict[str, Any]]:
        """Rows where any of ``columns`` equals any of ``values`` (migration lookups by message id,
        iCalUId or address), as the caller may read them: one ``$batch`` of GETs."""
        return await records.find_where(self._transport, table, columns, values, select=select, caller=caller)

    async def series_instances(
        self, series_id: uuid.UUID, *, select: Sequence[str], caller: str | None
    ) -> list[dict[str, Any]]:
        """The instances of a recurring series: ``appointments?$filter=seriesid eq <id>``."""
        return await self.query(
            "appointment", where=f"seriesid eq {series_id}", select=[*select, "activityid"], caller=caller
        )

    async def party_addresses(
        self, activity_ids: Sequence[uuid.UUID], *, caller: str | None
    ) -> dict[uuid.UUID, frozenset[tuple[int, str]]]:
        """``activityparties?$filter=(_activityid_value eq <id> or ...)`` (activityparty: "ActivityId",
        "AddressUsed", "ParticipationTypeMask"): one request per 50 activities, not one each (a run
        over a page of meetings reads its parties at once, against the service protection limits)."""
        ids = list(dict.fromkeys(activity_ids))
        found: dict[uuid.UUID, set[tuple[int, str]]] = {activity: set() for activity in ids}
        for start in range(0, len(ids), _PARTY_IDS_PER_QUERY):
            chunk = ids[start : start + _PARTY_IDS_PER_QUERY]
            rows = await self.query(
                "activityparty",
                where="(" + " or ".join(f"_activityid_value eq {i}" for i in chunk) + ")",
                select=["_activityid_value", "participationtypemask", "addressused"],
                caller=caller,
            )
            for row in rows:
                activity = uuid.UUID(str(row["_activityid_value"]))
                if activity in found:
                    address = str(row.get("addressused") or "").lower()
                    found[activity].add((int(row["participationtypemask"]), address))
        return {activity: frozenset(rows) for activity, rows in found.items()}

    # --- batches ----------------------------------------------------------------

    async def apply_batch(
        self, ops: Sequence[Operation], *, atomic: bool = False, caller: str | None
    ) -> list[OperationResult]:
        """Run operations in ``$batch`` requests of at most 1000; results in ``ops`` order. Plain
        upserts of many contacts or tasks go first, in UpsertMultiple requests (see
        :mod:`~shared.crm.dataverse.bulk`: which operations, and why the others stay on ``$batch``).

        ``atomic``: one change set, all or nothing (at most 1000 operations). Otherwise operations are
        independent (``Prefer: odata.continue-on-error``). A throttled or failed ``$batch`` request is
        retried like any call; an operation that failed inside a batch is reported with its error
        (``error.retryable`` tells the engine whether to retry the job or park the item).
        """
        self._check_writer(caller)
        return await batching.apply_batch(self._transport, ops, atomic=atomic, caller=caller, bulk=self._bulk)

    # --- change tracking, identity ----------------------------------------------

    async def read_changes(
        self, table: str, *, select: Sequence[str], link: str | None = None, caller: str | None
    ) -> ChangePage:
        """One page of ``table``'s change stream: from the start (``link=None``: every row, then a
        delta link) or from a next/delta link of an earlier page. An expired token raises
        :class:`~shared.crm.errors.ChangeTokenExpired`: start again with ``link=None``."""
        return await changes.read_changes(
            self._transport, table, select=select, link=link, page_size=self._change_page_size, caller=caller
        )

    async def query(
        self, table: str, *, where: str, select: Sequence[str], caller: str | None, expand: str | None = None
    ) -> list[dict[str, Any]]:
        """Rows of ``table`` matching an OData ``$filter`` (``where``), as the caller may read them;
        ``expand``: an OData ``$expand`` (related rows in the same request)."""
        return await queries.query_rows(
            self._transport, table, where=where, select=select, caller=caller, expand=expand
        )

    async def fetch(self, table: str, *, fetch_xml: str, caller: str | None) -> list[dict[str, Any]]:
        """Rows of a FetchXML query over ``table``, as the caller may read them."""
        return await queries.fetch_rows(self._transport, table, fetch_xml=fetch_xml, caller=caller)

    async def user_privileges(self, user_id: uuid.UUID, *, caller: str | None) -> frozenset[str]:
        """The privilege names a user holds (``RetrieveUserPrivileges``)."""
        return await queries.user_privileges(self._transport, user_id, caller=caller)

    async def field_sync_mappings(
        self, tables: Sequence[str], *, caller: str | None
    ) -> list[FieldSyncMapping]:
        """The organization's field synchronization directions (``syncattributemappings``)."""
        if caller is not None:
            raise ValueError("field settings are read as the application")
        return await fieldsettings.field_sync_mappings(self._transport, tables)

    async def column_security(
        self, user_id: uuid.UUID, tables: Sequence[str], *, caller: str | None
    ) -> ColumnSecurity:
        """Secured columns of ``tables`` and the user's field permissions (field security profiles)."""
        if caller is not None:
            raise ValueError("field settings are read as the application")
        return await fieldsettings.column_security(self._transport, user_id, tables)

    async def user_time_zone(self, user_id: uuid.UUID, *, caller: str | None) -> str | None:
        """The user's time zone as a Windows name (usersettings + timezonedefinition)."""
        return await queries.user_time_zone(self._transport, user_id, caller=caller)

    async def register_webhook(self, *, url: str, key: str) -> registration.WebhookRegistration:
        """Register (or update) crmsync's webhook endpoint and its steps, as the application."""
        return await registration.register_webhook(self._transport, url=url, key=key)

    async def whoami(self, *, caller: str | None) -> WhoAmI:
        """Who a call runs as (``WhoAmI`` function): proves impersonation resolves to the user."""
        return await changes.whoami(self._transport, caller=caller)
