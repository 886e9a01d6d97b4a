"""The Dataverse Web API adapter: :class:`DataverseClient` implements the CRM port on httpx.

Microsoft documents each behaviour this follows (powerapps-docs, learn.microsoft.com
/power-apps/developer/data-platform/...):

- webapi/compose-http-requests-handle-errors: OData headers, error bodies.
- webapi/create-entity-web-api: create with a client-chosen primary id; ``@odata.bind``.
- webapi/update-delete-entities-using-web-api ("Upsert a table row"): PATCH creates or updates;
  with ``Prefer: return=representation`` the answer is 201 (created) or 200 (updated).
- webapi/perform-conditional-operations-using-web-api: ``If-Match: <etag>`` (optimistic
  concurrency), ``If-Match: *`` (never create), ``If-None-Match: *`` (never update).
- use-alternate-key-reference-record: ``/<set>(key1='v',key2=2)``.
- webapi/execute-batch-operations-using-web-api: ``$batch``, change sets,
  ``Prefer: odata.continue-on-error``; at most 1000 requests each.
- webapi/impersonate-another-user-web-api: the ``CallerObjectId`` header (Entra object id).
- use-change-tracking-synchronize-data-external-systems: ``Prefer: odata.track-changes``,
  ``@odata.deltaLink``, ``$deletedEntity`` rows; an expired token means a full resync.
- api-limits ("Service protection API limits"): 429 with ``Retry-After``; retry after that delay.

One retry layer: tenacity around each HTTP call: 429 always (Dataverse rejected it unprocessed); 5xx and
dropped connections only for requests whose replay cannot double a write (everything but a create
without a client-chosen id; a replayed conditional write may at worst fail its condition). A ``$batch``
is one call.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import httpx
from azure.core.credentials import AccessToken
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.config import Settings
from shared.crm.batch import (
    MAX_BATCH_OPERATIONS,
    BatchRequest,
    BatchResponse,
    chunked,
    decode_batch,
    encode_batch,
)
from shared.crm.errors import (
    AuthenticationFailed,
    CrmError,
    CrmUnavailable,
    RecordNotFound,
    ServiceProtectionLimit,
    caller_not_found,
    error_from_response,
)
from shared.crm.port import (
    EMAIL_RESOLUTION_ORDER,
    ChangePage,
    Delete,
    FieldValue,
    KeyValue,
    Operation,
    OperationResult,
    Party,
    RecordRef,
    Upsert,
    UpsertResult,
    WhoAmI,
)
from shared.crm.tables import bind_annotation, table_info

_log = logging.getLogger(__name__)

_TOKEN_REFRESH_MARGIN_S = 300
_ODATA_HEADERS = {"OData-MaxVersion": "4.0", "OData-Version": "4.0", "Accept": "application/json"}
_RETURN_REPRESENTATION = "return=representation"
_LOOKUP_TYPE = "Microsoft.Dynamics.CRM.lookuplogicalname"
# Lookups read as _<column>_value; this annotation names the target table of polymorphic ones
# (powerapps-docs: "Query data using the Web API", Lookup property data).
_LOOKUP_ANNOTATIONS = f'odata.include-annotations="{_LOOKUP_TYPE}"'


def lookup_ref(row: Mapping[str, Any], column: str) -> RecordRef | None:
    """The record a lookup column of a read row points at (``_<column>_value`` + its target table)."""
    value = row.get(f"_{column}_value")
    table = row.get(f"_{column}_value@{_LOOKUP_TYPE}")
    if not value or not table:
        return None
    return RecordRef(str(table), uuid.UUID(str(value)))


class AsyncTokenSource(Protocol):
    """What the adapter needs from a credential: any azure-identity async ``TokenCredential`` fits."""

    async def get_token(self, *scopes: str) -> AccessToken: ...


class _NotSent(CrmUnavailable):
    """The connection failed before the request left: safe to retry even a create without an id."""


class _Request:
    """One Web API request as built from an operation; sent alone or as a part of a ``$batch``."""

    __slots__ = ("body", "headers", "method", "path")

    def __init__(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None, body: Any = None
    ) -> None:
        self.method = method
        self.path = path  # relative to the Web API root
        self.headers = dict(headers or {})
        self.body = body


def _json_value(value: FieldValue) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("Dataverse date-times must be timezone-aware")
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date | uuid.UUID):
        return str(value)
    return value


def _key_segment(key: Mapping[str, KeyValue]) -> str:
    """``key1='v',key2=2``: string values quoted with ``'`` doubled, then percent-encoded."""
    parts = []
    for name, value in key.items():
        literal = str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"
        parts.append(f"{name}={quote(literal, safe=chr(39))}")
    return ",".join(parts)


def _record_path(table: str, record_id: uuid.UUID | None, key: Mapping[str, KeyValue] | None = None) -> str:
    entity_set = table_info(table).entity_set
    return f"{entity_set}({record_id if record_id is not None else _key_segment(key or {})})"


def _party_payload(party: Party) -> dict[str, Any]:
    row: dict[str, Any] = {"participationtypemask": int(party.participation)}
    if party.ref is not None:
        name, value = bind_annotation("activityparty", "partyid", party.ref.table, party.ref.id)
        row[name] = value
    if party.address:
        row["addressused"] = party.address
    return row


def record_payload(
    table: str, fields: Mapping[str, FieldValue], parties: Sequence[Party] = ()
) -> dict[str, Any]:
    """The JSON body for a create/update: columns, ``@odata.bind`` lookups and the party list."""
    body: dict[str, Any] = {}
    for column, value in fields.items():
        if isinstance(value, RecordRef):
            name, path = bind_annotation(table, column, value.table, value.id)
            body[name] = path
        else:
            body[column] = _json_value(value)
    if parties:
        collection = table_info(table).party_collection
        if collection is None:
            raise ValueError(f"{table} records have no activity parties")
        body[collection] = [_party_payload(party) for party in parties]
    return body


def _entity_id(headers: Mapping[str, str], body: Any, table: str) -> uuid.UUID | None:
    """The record id from the body's primary id column or the ``OData-EntityId`` header."""
    primary_id = table_info(table).primary_id
    if isinstance(body, Mapping) and isinstance(body.get(primary_id), str):
        return uuid.UUID(body[primary_id])
    entity_id = headers.get("odata-entityid")  # httpx headers and decoded batch headers: lower-case works
    if entity_id and entity_id.endswith(")") and "(" in entity_id:
        inner = entity_id.rsplit("(", 1)[1][:-1]
        try:
            return uuid.UUID(inner)
        except ValueError:
            return None
    return None


def _etag(headers: Mapping[str, str], body: Any) -> str | None:
    if isinstance(body, Mapping) and isinstance(body.get("@odata.etag"), str):
        return str(body["@odata.etag"])
    return headers.get("etag")


def _json_body(content: bytes) -> Any:
    try:
        return json.loads(content) if content.strip() else None
    except ValueError:
        return None


def _record_body(status: int, content: bytes) -> dict[str, Any]:
    """A read record's JSON object (a top-level response or a ``$batch`` part)."""
    body = _json_body(content)
    if not isinstance(body, dict):
        raise CrmError("Dataverse returned a record that is not a JSON object", status=status)
    return body


class DataverseClient:
    """Async Dataverse Web API client; every call for a user carries ``CallerObjectId``.

    ``base_api_url`` is ``Settings.dataverse_api_url`` and ``scope`` ``Settings.dataverse_scope``
    (or use :meth:`from_settings`). ``max_concurrency_per_user`` caps requests in flight per caller
    (Dataverse allows 52); ``max_attempts`` bounds tries per call; a ``Retry-After`` longer than
    ``max_retry_wait`` seconds fails the call at once (transient) instead of retrying early.
    ``email_columns`` overrides the columns :meth:`find_by_email` searches per table.
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
    ) -> None:
        if max_concurrency_per_user < 1 or max_attempts < 1:
            raise ValueError("max_concurrency_per_user and max_attempts must be at least 1")
        self._base = base_api_url.rstrip("/")
        self._credential = credential
        self._scope = scope
        self._max_concurrency = max_concurrency_per_user
        self._max_attempts = max_attempts
        self._max_retry_wait = max_retry_wait
        self._backoff = wait_exponential_jitter(multiplier=0.5, max=max_retry_wait, jitter=0.5)
        self._change_page_size = change_page_size
        self._email_columns = dict(email_columns or {})
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=httpx.Timeout(120.0, connect=10.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        self._token: AccessToken | None = None
        self._token_lock = asyncio.Lock()
        self._slots: weakref.WeakValueDictionary[str, asyncio.Semaphore] = weakref.WeakValueDictionary()

    @classmethod
    def from_settings(
        cls, settings: Settings, credential: AsyncTokenSource, **options: Any
    ) -> DataverseClient:
        """The client for the configured organization: Web API URL and ``<org url>/.default`` scope."""
        return cls(settings.dataverse_api_url, credential, scope=settings.dataverse_scope, **options)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> DataverseClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- plumbing -------------------------------------------------------------

    async def _bearer(self) -> str:
        """A cached token, refreshed five minutes before it expires (or after Dataverse refused it)."""
        async with self._token_lock:
            if self._token is None or self._token.expires_on - _TOKEN_REFRESH_MARGIN_S <= time.time():
                self._token = await self._credential.get_token(self._scope)
            return self._token.token

    def _slot(self, caller: str | None) -> asyncio.Semaphore:
        """The per-user concurrency cap (service protection limits count per user)."""
        name = caller or ""
        slot = self._slots.get(name)
        if slot is None:
            slot = asyncio.Semaphore(self._max_concurrency)
            self._slots[name] = slot
        return slot

    def _url(self, path: str) -> str:
        return f"{self._base}/{path}"

    def _wait(self, state: RetryCallState) -> float:
        """Retry-After when Dataverse gives one (service protection), else exponential backoff."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, AuthenticationFailed):
            return 0.0
        if isinstance(error, CrmError) and error.retry_after is not None:
            return error.retry_after
        return float(self._backoff(state))

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        """One warning per retry: status, Dataverse code and delay; never URLs (a $filter holds addresses)."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, CrmError):
            delay = state.next_action.sleep if state.next_action else 0.0
            _log.warning(
                "Dataverse call failed with %s (code %s); retry %d in %.1f s",
                error.status,
                error.code,
                state.attempt_number,
                delay,
            )

    async def _send(
        self,
        request: _Request,
        *,
        caller: str | None,
        replay_safe: bool = True,
        params: Mapping[str, str] | None = None,
        url: str | None = None,
        content: tuple[str, bytes] | None = None,
    ) -> httpx.Response:
        """Send one request with auth, OData and impersonation headers; retry what is safe to retry.

        A 429 was rejected before it ran, so it is always retried; a 5xx or a dropped connection may
        have run, so only requests whose replay cannot double a write are retried.
        """

        def should_retry(state: RetryCallState) -> bool:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, AuthenticationFailed):  # a revoked token: fetch a new one, once
                return state.attempt_number == 1
            if not isinstance(error, CrmError) or not error.retryable:
                return False
            if error.retry_after is not None and error.retry_after > self._max_retry_wait:
                return False  # honour the wait by failing the job: the queue retries it later
            return replay_safe or isinstance(error, ServiceProtectionLimit | _NotSent)

        async with self._slot(caller):
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self._max_attempts),
                wait=self._wait,
                retry=should_retry,
                before_sleep=self._log_retry,
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    return await self._send_once(request, caller, params, url, content)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _send_once(
        self,
        request: _Request,
        caller: str | None,
        params: Mapping[str, str] | None,
        url: str | None,
        content: tuple[str, bytes] | None,
    ) -> httpx.Response:
        headers = {**_ODATA_HEADERS, "Authorization": f"Bearer {await self._bearer()}", **request.headers}
        if caller is not None:
            headers["CallerObjectId"] = caller
        body: bytes | None = None
        if content is not None:
            headers["Content-Type"], body = content
        elif request.body is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
            body = json.dumps(request.body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        try:
            response = await self._http.request(
                request.method, url or self._url(request.path), headers=headers, params=params, content=body
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Never reached Dataverse, so even a non-idempotent request is safe to send again.
            raise _NotSent("Could not connect to Dataverse") from exc
        except httpx.LocalProtocolError:  # a malformed request of ours: nothing to retry
            raise
        except httpx.TransportError as exc:
            raise CrmUnavailable(f"Dataverse connection failed ({type(exc).__name__})") from exc
        if response.status_code == 401:
            self._token = None
        if response.status_code >= 400:
            error = error_from_response(response.status_code, response.content, response.headers)
            raise caller_not_found(error, caller)
        return response

    # --- single-record operations ---------------------------------------------

    def _upsert_request(self, op: Upsert) -> _Request:
        headers = {"Prefer": _RETURN_REPRESENTATION}
        if op.if_match is not None:
            headers["If-Match"] = op.if_match
        if op.if_none_match:
            headers["If-None-Match"] = "*"
        select = f"?$select={table_info(op.table).primary_id}"
        return _Request(
            "PATCH",
            _record_path(op.table, op.id, op.key) + select,
            headers=headers,
            body=record_payload(op.table, op.fields, op.parties),
        )

    def _delete_request(self, op: Delete) -> _Request:
        headers = {"If-Match": op.if_match} if op.if_match else {}
        return _Request("DELETE", _record_path(op.table, op.id), headers=headers)

    @staticmethod
    def _read_request(table: str, record_id: uuid.UUID, select: Sequence[str] | None) -> _Request:
        """A GET of one record with its lookups' target tables annotated; the same alone or in a batch."""
        query = f"?$select={','.join(select)}" if select else ""
        return _Request(
            "GET", _record_path(table, record_id) + query, headers={"Prefer": _LOOKUP_ANNOTATIONS}
        )

    async def upsert(self, op: Upsert, *, caller: str | None) -> UpsertResult:
        """Create or update one record (PATCH); conditional per ``op.if_match`` / ``op.if_none_match``."""
        response = await self._send(self._upsert_request(op), caller=caller)
        body = _json_body(response.content)
        record_id = op.id or _entity_id(response.headers, body, op.table)
        return UpsertResult(
            ref=RecordRef(op.table, record_id) if record_id else None,
            etag=_etag(response.headers, body),
            created=response.status_code == 201,
        )

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
        info = table_info(table)
        body = record_payload(table, fields, parties)
        if id is not None:
            body[info.primary_id] = str(id)
        request = _Request(
            "POST",
            f"{info.entity_set}?$select={info.primary_id}",
            headers={"Prefer": _RETURN_REPRESENTATION},
            body=body,
        )
        response = await self._send(request, caller=caller, replay_safe=id is not None)
        record_id = id or _entity_id(response.headers, _json_body(response.content), table)
        if record_id is None:
            raise CrmError(
                "Dataverse did not return the id of the created record", status=response.status_code
            )
        return RecordRef(table, record_id)

    async def get(
        self, table: str, id: uuid.UUID, *, select: Sequence[str] | None = None, caller: str | None
    ) -> dict[str, Any] | None:
        """One record's columns (with ``@odata.etag``), or ``None`` if it does not exist.

        Lookups come back as ``_<column>_value`` with their target table annotated: read them with
        :func:`lookup_ref`.
        """
        try:
            response = await self._send(self._read_request(table, id, select), caller=caller)
        except RecordNotFound:
            return None
        return _record_body(response.status_code, response.content)

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
        unique = list(dict.fromkeys(ids))
        records: dict[uuid.UUID, dict[str, Any] | None] = {}
        for chunk in chunked(unique):
            requests = [self._read_request(table, record_id, select) for record_id in chunk]
            parts = await self._post_batch(requests, atomic=False, caller=caller)
            for record_id, part in zip(chunk, parts, strict=True):
                if part.status < 400:
                    records[record_id] = _record_body(part.status, part.body)
                    continue
                error = caller_not_found(error_from_response(part.status, part.body, part.headers), caller)
                if not isinstance(error, RecordNotFound):
                    raise error
                records[record_id] = None
        return records

    async def delete(
        self, table: str, id: uuid.UUID, *, if_match: str | None = None, caller: str | None
    ) -> bool:
        """Delete a record: ``True`` if this call deleted it, ``False`` if it was already gone."""
        try:
            await self._send(self._delete_request(Delete(table, id, if_match)), caller=caller)
        except RecordNotFound:
            return False
        return True

    async def find_by_email(
        self, address: str, *, tables: Sequence[str] = EMAIL_RESOLUTION_ORDER, caller: str | None
    ) -> list[RecordRef]:
        """Records whose email columns hold ``address``, grouped in ``tables`` order (party resolution).

        One ``$batch`` of GETs: one round trip, one request against the service protection limits, and
        the address travels in the body, never in a URL that an HTTP log line could show.
        """
        literal = "'" + address.replace("'", "''") + "'"
        searched: list[tuple[str, str]] = []  # (table, primary id column)
        requests: list[_Request] = []
        for table in tables:
            info = table_info(table)
            columns = self._email_columns.get(table, info.email_columns)
            if columns:
                query = {
                    "$select": info.primary_id,
                    "$filter": " or ".join(f"{c} eq {literal}" for c in columns),
                }
                searched.append((table, info.primary_id))
                requests.append(
                    _Request("GET", f"{info.entity_set}?{urlencode(query, quote_via=quote, safe='$')}")
                )
        if not requests:
            return []
        parts = await self._post_batch(requests, atomic=False, caller=caller)
        found: list[RecordRef] = []
        for (table, primary_id), part in zip(searched, parts, strict=True):
            if part.status >= 400:
                raise caller_not_found(error_from_response(part.status, part.body, part.headers), caller)
            found += [
                RecordRef(table, uuid.UUID(row[primary_id])) for row in (part.json() or {}).get("value", [])
            ]
        return found

    # --- batches ----------------------------------------------------------------

    def _operation_request(self, op: Operation) -> _Request:
        return self._upsert_request(op) if isinstance(op, Upsert) else self._delete_request(op)

    def _batch_part(self, request: _Request) -> BatchRequest:
        return BatchRequest(request.method, self._url(request.path), request.headers, request.body)

    @staticmethod
    def _operation_result(op: Operation, response: BatchResponse) -> OperationResult:
        body = _json_body(response.body)
        if response.status < 400:
            record_id = op.id or _entity_id(response.headers, body, op.table)
            return OperationResult(
                ok=True,
                status=response.status,
                ref=RecordRef(op.table, record_id) if record_id else None,
                etag=_etag(response.headers, body),
                created=response.status == 201,
            )
        error = error_from_response(response.status, response.body, response.headers)
        if isinstance(op, Delete) and isinstance(error, RecordNotFound):
            return OperationResult(ok=True, status=response.status, ref=RecordRef(op.table, op.id))
        return OperationResult(ok=False, status=response.status, error=error)

    async def _post_batch(
        self, requests: Sequence[_Request], *, atomic: bool, caller: str | None
    ) -> list[BatchResponse]:
        """POST one ``$batch``; independent requests run on after a failure (continue-on-error), so each
        of them is answered (a failed change set is answered by its one failing response)."""
        content = encode_batch([self._batch_part(request) for request in requests], atomic=atomic)
        headers = {} if atomic else {"Prefer": "odata.continue-on-error"}
        response = await self._send(
            _Request("POST", "$batch", headers=headers), caller=caller, content=content
        )
        parts = decode_batch(response.headers.get("content-type", ""), response.content)
        if not atomic and len(parts) != len(requests):
            raise CrmError(f"Dataverse answered {len(parts)} of {len(requests)} batch requests", status=200)
        return parts

    async def _run_batch(
        self, ops: Sequence[Operation], *, atomic: bool, caller: str | None
    ) -> list[OperationResult]:
        parts = await self._post_batch(
            [self._operation_request(op) for op in ops], atomic=atomic, caller=caller
        )
        if len(parts) == len(ops):
            return [self._operation_result(op, part) for op, part in zip(ops, parts, strict=True)]
        if atomic and len(parts) == 1 and parts[0].status >= 400:
            # A failed change set is answered by the one failing response; everything rolled back.
            error = error_from_response(parts[0].status, parts[0].body, parts[0].headers)
            return [OperationResult(ok=False, status=parts[0].status, error=error) for _ in ops]
        raise CrmError(f"Dataverse answered {len(parts)} of {len(ops)} batch operations", status=200)

    async def apply_batch(
        self, ops: Sequence[Operation], *, atomic: bool = False, caller: str | None
    ) -> list[OperationResult]:
        """Run operations in ``$batch`` requests of at most 1000; results in ``ops`` order.

        ``atomic``: one change set, all or nothing (at most 1000 operations). Otherwise operations are
        independent (``Prefer: odata.continue-on-error``). A throttled or failed ``$batch`` request is
        retried like any call; an operation that failed inside a batch is reported with its error
        (``error.retryable`` tells the engine whether to retry the job or park the item).
        """
        if atomic and len(ops) > MAX_BATCH_OPERATIONS:
            raise ValueError("an atomic batch (one change set) holds at most 1000 operations")
        results: list[OperationResult] = []
        for chunk in chunked(ops):
            results.extend(await self._run_batch(chunk, atomic=atomic, caller=caller))
        return results

    # --- change tracking, identity ----------------------------------------------

    def _own_link(self, link: str) -> str:
        """A next/delta link must point back at this Web API: the bearer token goes with it."""
        base, given = urlsplit(self._base), urlsplit(link)
        if (given.scheme, given.netloc) != (base.scheme, base.netloc) or not given.path.startswith(base.path):
            raise ValueError("change-tracking link does not belong to this Dataverse Web API")
        return link

    async def read_changes(
        self, table: str, *, select: Sequence[str], link: str | None = None, caller: str | None
    ) -> ChangePage:
        """One page of ``table``'s change stream: from the start (``link=None``: every row, then a
        delta link) or from a next/delta link of an earlier page. An expired token raises
        :class:`~shared.crm.errors.ChangeTokenExpired`: start again with ``link=None``."""
        info = table_info(table)
        prefer = f"odata.track-changes,{_LOOKUP_ANNOTATIONS}"
        if self._change_page_size:
            prefer += f",odata.maxpagesize={self._change_page_size}"
        request = _Request("GET", info.entity_set, headers={"Prefer": prefer})
        if link is None:
            columns = [info.primary_id, *(column for column in select if column != info.primary_id)]
            response = await self._send(request, caller=caller, params={"$select": ",".join(columns)})
        else:
            response = await self._send(request, caller=caller, url=self._own_link(link))
        document = _json_body(response.content) or {}
        changed: list[Mapping[str, Any]] = []
        deleted: list[uuid.UUID] = []
        for row in document.get("value", []):
            if "$deletedEntity" in str(row.get("@odata.context", "")):
                deleted.append(uuid.UUID(row["id"]))
            else:
                changed.append(row)
        return ChangePage(
            table=table,
            changed=tuple(changed),
            deleted=tuple(deleted),
            next_link=document.get("@odata.nextLink"),
            delta_link=document.get("@odata.deltaLink"),
        )

    async def whoami(self, *, caller: str | None) -> WhoAmI:
        """Who a call runs as (``WhoAmI`` function): proves impersonation resolves to the user."""
        response = await self._send(_Request("GET", "WhoAmI"), caller=caller)
        body = _json_body(response.content) or {}
        return WhoAmI(
            user_id=uuid.UUID(body["UserId"]),
            business_unit_id=uuid.UUID(body["BusinessUnitId"]),
            organization_id=uuid.UUID(body["OrganizationId"]),
        )
