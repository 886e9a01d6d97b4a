"""One Web API operation at a time: retrieve, query, create, update, upsert, delete, change tracking.

Independent of HTTP so the $batch handler runs each part through exactly the same code.
Behaviour follows these learn.microsoft.com pages (power-apps/developer/data-platform/webapi/...):

- "Create a table row using the Web API": POST -> 204 + OData-EntityId, or 201 with the row under
  ``Prefer: return=representation``; a client-chosen primary id that exists -> 412 0x80040237;
  deep insert of activity parties through ``<activity>_activity_parties``; lookups set with
  ``<navigation>@odata.bind``.
- "Upsert a table row": PATCH creates or updates -> 204 either way (201 / 200 with a
  representation); alternate-key addressing ``table(key='value')``.
- "Perform conditional operations using the Web API": ``If-Match: *`` on a missing row -> 404,
  ``If-None-Match: *`` on an existing row -> 412, an etag mismatch -> 412 0x80060882, a GET with a
  matching ``If-None-Match`` etag -> 304 (never with ``$expand`` or annotations);
  ``@odata.etag`` is ``W/"<versionnumber>"``.
- "Query data using the Web API": $select, $filter, $orderby, $top, $expand, $count, paging by
  ``Prefer: odata.maxpagesize`` and ``@odata.nextLink`` ("Page results": ``$top`` is ignored
  when ``odata.maxpagesize`` is given).
- "Use change tracking to synchronize data with external systems": ``Prefer: odata.track-changes``
  -> ``@odata.deltaLink``; the delta answers changed rows and ``$deletedEntity`` rows.
- "Query data using FetchXml" (fetchxml/overview): ``?fetchXml=`` (module fetchxml); it takes no
  other query option. Any query option the simulator does not implement (``?sql=``, ``$apply``,
  ``$skip``, ...) is refused with 400, never ignored: a client must not get every row and column
  back for a query it thinks was applied.
- "Format query results" (webapi/query/format-results), formatted values: under
  ``Prefer: odata.include-annotations="*"`` (or naming ``OData.Community.Display.V1.FormattedValue``)
  choices, booleans, lookups, numbers, money and dates carry
  ``<property>@OData.Community.Display.V1.FormattedValue``.
"""

from __future__ import annotations

import base64
import bisect
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import quote, urlencode

from simulators.dataverse import errors, fetchxml
from simulators.dataverse import options as opts
from simulators.dataverse.query import (
    GUID,
    column_of,
    normalize_datetime,
    parse_filter,
    parse_orderby,
    parse_select,
    property_name,
    sort_key,
    sort_records,
)
from simulators.dataverse.schema import (
    LOOKUP_TYPES,
    NOT_A_PROPERTY_TYPES,
    PARTICIPATION_MASKS,
    Column,
    Table,
    load_tables,
    tables_by_entity_set,
)
from simulators.dataverse.security import BUSINESS_UNIT_ID, ORGANIZATION_ID, Caller, Security
from simulators.dataverse.store import Record, Ref, Store, index_key

PATH = re.compile(
    r"^(?P<set>[A-Za-z_][A-Za-z0-9_]*)(?:\((?P<key>.*)\))?(?:/(?P<nav>[A-Za-z_][A-Za-z0-9_]*))?$"
)
KEY_PART = re.compile(r"\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>'(?:[^']|'')*'|[^,]+)\s*(?:,|$)")
COLLECTION_OPTIONS = frozenset(
    {"$select", "$filter", "$orderby", "$top", "$expand", "$count", "$skiptoken", "$deltatoken", "fetchXml"}
)
ROW_OPTIONS = frozenset({"$select", "$expand"})
FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP_LOGICAL_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"
TOTAL_RECORD_COUNT = "Microsoft.Dynamics.CRM.totalrecordcount"
ASSOCIATED_NAVIGATION = "Microsoft.Dynamics.CRM.associatednavigationproperty"
# Change tracking is enabled on these tables; activityparty rows travel with their activity.
CHANGE_TRACKED = frozenset(
    {"contact", "account", "lead", "email", "appointment", "recurringappointmentmaster", "task", "systemuser"}
)
FULL_NAME_TABLES = frozenset({"contact", "lead", "systemuser"})
AUDIT_COLUMNS = (
    "createdon",
    "modifiedon",
    "createdby",
    "modifiedby",
    "createdonbehalfby",
    "modifiedonbehalfby",
)


@dataclass
class ApiRequest:
    """One operation: ``path`` is relative to the Web API base (``contacts(<id>)``)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    base_url: str
    content_ids: dict[str, str] = field(default_factory=dict)

    @property
    def prefer(self) -> str:
        return self.headers.get("prefer", "").lower()


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    entity_path: str | None = None
    #: A text/plain body instead of JSON (``<entityset>/$count``).
    text: str | None = None


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def etag(record: Record) -> str:
    return f'W/"{record["versionnumber"]}"'


@cache
def _navigation_for(table_name: str, column: str, target: str) -> str:
    """The single-valued navigation property of a lookup's value ("Lookup property data": the
    ``associatednavigationproperty`` annotation names what ``$expand`` takes, e.g. ``ownerid`` or
    ``parentcustomerid_account``); a lookup without a writable navigation is named by its column."""
    for name, (lookup, targets) in load_tables()[table_name].navigation.items():
        if lookup == column and target in targets:
            return name
    return column


@cache
def _readable_columns(table_name: str) -> tuple[str, ...]:
    table = load_tables()[table_name]
    return tuple(name for name, column in table.columns.items() if column.type != "PartyList")


class Engine:
    def __init__(self, store: Store, security: Security) -> None:
        self.store = store
        self.security = security

    # -- entry point ---------------------------------------------------------------------------
    def handle(self, request: ApiRequest, caller: Caller) -> ApiResponse:
        """Run one operation atomically: a failure leaves no partial write behind."""
        point = self.store.savepoint()
        try:
            response = self._dispatch(request, caller)
        except BaseException:
            self.store.rollback(point)
            raise
        self.store.release(point)
        return response

    def _dispatch(self, request: ApiRequest, caller: Caller) -> ApiResponse:
        path = request.path.strip("/")
        if path in {"WhoAmI", "WhoAmI()"} and request.method == "GET":
            return ApiResponse(
                200,
                body={
                    "@odata.context": f"{request.base_url}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                    "BusinessUnitId": BUSINESS_UNIT_ID,
                    "UserId": caller.user_id,
                    "OrganizationId": ORGANIZATION_ID,
                },
            )
        path = _resolve_content_id(path, request)
        if path.endswith("/$count") and request.method == "GET":
            return self._count(request, path.removesuffix("/$count"), caller)
        match = PATH.match(path)
        table = tables_by_entity_set().get(match.group("set")) if match else None
        if match is None or table is None:
            segment = match.group("set") if match else path.split("/")[0]
            raise errors.DataverseError(
                404, errors.RESOURCE_NOT_FOUND, f"Resource not found for the segment '{segment}'."
            )
        key, nav = match.group("key"), match.group("nav")
        method = request.method
        if key is None:
            if nav is not None:
                raise errors.bad_request(f"Unsupported path '{path}'.")
            if method == "GET":
                return self._query(request, table, caller)
            if method == "POST":
                return self._create(request, table, caller)
            raise errors.DataverseError(
                405, errors.BAD_PAYLOAD, f"Method {method} is not allowed on a collection."
            )
        record_id, key_values = self._resolve_key(table, key)
        if nav is not None:
            if method != "GET" or record_id is None:
                raise errors.bad_request(f"Unsupported path '{path}'.")
            record = self._existing(table, record_id, caller)
            if nav == table.parties_collection:
                return ApiResponse(200, body={"value": self._parties(record, table, request, None, caller)})
            return self._property(request, table, record, nav, caller)
        if method == "GET":
            return self._retrieve(request, table, record_id, caller)
        if method == "PATCH":
            return self._upsert(request, table, record_id, key_values, caller)
        if method == "DELETE":
            return self._delete(request, table, record_id, caller)
        raise errors.DataverseError(405, errors.BAD_PAYLOAD, f"Method {method} is not allowed on a row.")

    # -- addressing ----------------------------------------------------------------------------
    def _resolve_key(self, table: Table, key: str) -> tuple[str | None, dict[str, Any] | None]:
        """(row id or None, the alternate key values when addressed by alternate key)."""
        key = key.strip()
        if GUID.match(key):
            return key.lower(), None
        values: dict[str, Any] = {}
        position = 0
        while position < len(key):
            part = KEY_PART.match(key, position)
            if part is None:
                raise errors.bad_request(f"Invalid key segment '({key})'.")
            raw = part.group("value").strip()
            values[part.group("name")] = raw[1:-1].replace("''", "'") if raw.startswith("'") else raw
            position = part.end()
        if set(values) == {table.primary_id} and GUID.match(str(values[table.primary_id])):
            return str(values[table.primary_id]).lower(), None
        return self.store.find_by_key(table.logical_name, values), values

    def _existing(self, table: Table, record_id: str, caller: Caller, action: str = "Read") -> Record:
        record = self.store.get(table.logical_name, record_id)
        if record is None:
            raise errors.not_found(table.logical_name, record_id)
        self.security.require(caller, action, table, _owner(record), record_id)
        return record

    def _bind_target(self, value: Any, request: ApiRequest) -> tuple[Table, str]:
        if not isinstance(value, str):
            raise errors.bad_request("An @odata.bind value must be a string URL.")
        path = _resolve_content_id(value.split("/api/data/v9.2/", 1)[-1].lstrip("/"), request)
        match = PATH.match(path)
        table = tables_by_entity_set().get(match.group("set")) if match else None
        if match is None or table is None or match.group("key") is None or match.group("nav"):
            raise errors.bad_request(f"The @odata.bind value '{value}' does not address a row.")
        record_id, _ = self._resolve_key(table, match.group("key"))
        if record_id is None or self.store.get(table.logical_name, record_id) is None:
            raise errors.not_found(table.logical_name, record_id or match.group("key"))
        return table, record_id

    # -- reads ---------------------------------------------------------------------------------
    def _retrieve(
        self, request: ApiRequest, table: Table, record_id: str | None, caller: Caller
    ) -> ApiResponse:
        if record_id is None:
            raise _no_row_for_key(table)
        opts.check(request.query, ROW_OPTIONS)
        record = self._existing(table, record_id, caller)
        if request.headers.get("if-none-match", "") == etag(record) and opts.may_be_not_modified(
            request.query, request.headers.get("prefer", "")
        ):
            return ApiResponse(304)
        select = parse_select(request.query.get("$select"), table)
        body = {
            "@odata.context": f"{request.base_url}/$metadata#{table.entity_set}/$entity",
            **self.project(table, record, select, caller, request),
        }
        applied = opts.annotations_applied(request.headers.get("prefer", ""))
        return ApiResponse(
            200, {"ETag": etag(record), **({"Preference-Applied": applied[0]} if applied else {})}, body
        )

    def project(
        self, table: Table, record: Record, select: list[str] | None, caller: Caller, request: ApiRequest
    ) -> dict[str, Any]:
        """A row as the Web API returns it; secured columns the caller may not read are null."""
        wanted = opts.annotations(request.headers.get("prefer", ""))
        lookup_names = opts.wants(wanted, LOOKUP_LOGICAL_NAME)
        navigations = opts.wants(wanted, ASSOCIATED_NAVIGATION)
        formatted = opts.wants(wanted, FORMATTED)
        secured = self.security.secured_columns
        out: dict[str, Any] = {"@odata.etag": etag(record)}
        for column in select if select is not None else _readable_columns(table.logical_name):
            value = record.get(column)
            if (table.logical_name, column) in secured and not caller.field(table.logical_name, column).read:
                value = None
            name = property_name(table, column)
            if isinstance(value, Ref):
                out[name] = value.id
                if navigations:
                    out[f"{name}@{ASSOCIATED_NAVIGATION}"] = _navigation_for(
                        table.logical_name, column, value.table
                    )
                if lookup_names:
                    out[f"{name}@{LOOKUP_LOGICAL_NAME}"] = value.table
            else:
                out[name] = value
            if formatted and value is not None:
                text = self._formatted(table.columns[column], value)
                if text is not None:
                    out[f"{name}@{FORMATTED}"] = text
        out[table.primary_id] = record[table.primary_id]
        expand = request.query.get("$expand")
        if expand:
            for name, options in opts.split_expand(expand):
                out[name] = self._expand(table, record, name, options, caller=caller, request=request)
        return out

    def _formatted(self, column: Column, value: Any) -> str | None:
        """The value as the user sees it (en-US, UTC: the simulator's users' settings)."""
        if isinstance(value, Ref):
            target_table = load_tables().get(value.table)
            target = self.store.get(value.table, value.id) if target_table else None
            if target_table is None or target is None or not target_table.primary_name:
                return None
            name = target.get(target_table.primary_name)
            return str(name) if name is not None else None
        return format_value(column, value)

    def _expand(
        self,
        table: Table,
        record: Record,
        name: str,
        options: dict[str, str],
        *,
        caller: Caller,
        request: ApiRequest,
    ) -> Any:
        if name == table.parties_collection:
            opts.check(options, frozenset({"$select"}))  # $filter/$orderby/$top there: not simulated
            return self._parties(record, table, request, options.get("$select"), caller)
        # "Nested $expand options can only be applied to single-valued navigation properties."
        opts.check(options, frozenset({"$select", "$expand"}))
        if name in table.navigation:
            column, targets = table.navigation[name]
        elif name in table.columns and table.columns[name].type in LOOKUP_TYPES:
            # A read-only lookup (createdby, createdonbehalfby, owninguser, ...) is a single-valued
            # navigation property too ("Impersonate another user using the Web API" expands them).
            column, targets = name, table.columns[name].targets
        else:
            raise errors.unknown_property(name, table.logical_name)
        value = record.get(column)
        if not isinstance(value, Ref) or (len(targets) == 1 and value.table != targets[0]):
            return None
        target_table = load_tables()[value.table]
        target = self.store.get(value.table, value.id)
        if target is None or not self.security.may_read(caller, target_table, _owner(target)):
            return None
        nested = {"$expand": options["$expand"]} if "$expand" in options else {}
        return self.project(
            target_table,
            target,
            parse_select(options.get("$select"), target_table),
            caller,
            ApiRequest(request.method, request.path, nested, request.headers, b"", request.base_url),
        )

    def _property(
        self, request: ApiRequest, table: Table, record: Record, name: str, caller: Caller
    ) -> ApiResponse:
        """Retrieve a table row, "Retrieve a single property value" (``{"value"}``) and "Retrieve
        navigation property values" (the related row; ``$select`` allowed); a null one is 204."""
        lookup = table.navigation.get(name, (name, ()))[0]
        if (
            lookup in table.columns
            and table.columns[lookup].type in LOOKUP_TYPES
            and not name.startswith("_")
        ):
            opts.check(request.query, frozenset({"$select"}))
            related = self._expand(table, record, name, dict(request.query), caller=caller, request=request)
            target = record.get(lookup)
            if related is None or not isinstance(target, Ref):
                return ApiResponse(204)
            context = f"{request.base_url}/$metadata#{load_tables()[target.table].entity_set}/$entity"
            return ApiResponse(200, body={"@odata.context": context, **related})
        opts.check(request.query, frozenset())
        column = column_of(table, name)
        value = self.project(table, record, [column], caller, request)[property_name(table, column)]
        if value is None:
            return ApiResponse(204)
        context = f"{request.base_url}/$metadata#{table.entity_set}({record[table.primary_id]})/{name}"
        return ApiResponse(200, body={"@odata.context": context, "value": value})

    def _parties(
        self, record: Record, table: Table, request: ApiRequest, select_text: str | None, caller: Caller
    ) -> list[dict[str, Any]]:
        party_table = load_tables()["activityparty"]
        select = parse_select(select_text, party_table)
        ids = self._party_ids(Ref(table.logical_name, record[table.primary_id]))
        rows = sorted((self.store.rows["activityparty"][i] for i in ids), key=lambda r: r["versionnumber"])
        return [self.project(party_table, row, select, caller, _without_expand(request)) for row in rows]

    def _related(self, reference: Any) -> Record | None:
        return self.store.get(reference.table, reference.id) if isinstance(reference, Ref) else None

    def _party_ids(self, activity: Ref) -> list[str]:
        """Ids of the activityparty rows of one activity (from the activityid index)."""
        return sorted(self.store.find("activityparty", "activityid", activity) or ())

    def _query(self, request: ApiRequest, table: Table, caller: Caller) -> ApiResponse:
        self.security.require(caller, "Read", table)
        query = opts.with_aliases(request.query)
        opts.check(query, COLLECTION_OPTIONS)
        if "fetchXml" in query:
            return self._fetch(request, table, caller)
        select = parse_select(query.get("$select"), table)
        if "$deltatoken" in query:
            return self._delta(request, table, select, caller)
        tracking = "odata.track-changes" in request.prefer
        if tracking:
            if table.logical_name not in CHANGE_TRACKED:
                raise errors.bad_request(
                    f"Entity {table.logical_name} isn't enabled for change tracking.",
                    errors.CHANGE_TRACKING_NOT_ENABLED,
                )
            for option in ("$filter", "$orderby", "$expand", "$top"):
                if option in query:
                    # "Query options not supported in Change Tracking Web API request" (its message).
                    raise errors.bad_request(
                        f'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.'
                    )
        cursor = _decode_skiptoken(query.get("$skiptoken"))
        start_version = int(cursor.get("v", self.store.version))
        rows = self._matching(table, query.get("$filter"), caller)
        sort_records(rows, parse_orderby(query.get("$orderby"), table))
        requested_size = opts.page_size(request.prefer)
        if "$top" in query and requested_size is None:
            # "Don't use $top with Prefer: odata.maxpagesize. If you include both, $top is ignored."
            # (learn.microsoft.com/power-apps/developer/data-platform/webapi/query/page-results)
            rows = rows[: _int_option(query, "$top")]
        offset = int(cursor.get("o", 0))
        page_size = requested_size or opts.DEFAULT_PAGE_SIZE
        page = rows[offset : offset + page_size]
        selected = ",".join(property_name(table, c) for c in select) if select else ""
        body: dict[str, Any] = {
            "@odata.context": f"{request.base_url}/$metadata#{table.entity_set}({selected})",
        }
        counted = query.get("$count", "").lower() == "true"
        if counted:
            body["@odata.count"] = min(len(rows), opts.MAX_COUNT)
        if opts.wants(opts.annotations(request.prefer), TOTAL_RECORD_COUNT):
            # "Count rows using OData": -1 without $count=true; the limit flag says whether rows passed 5,000.
            body[f"@{TOTAL_RECORD_COUNT}"] = min(len(rows), opts.MAX_COUNT) if counted else -1
            body[f"@{TOTAL_RECORD_COUNT}limitexceeded"] = len(rows) > opts.MAX_COUNT
        body["value"] = [self.project(table, r, select, caller, request) for r in page]
        applied = []
        if requested_size:
            applied.append(f"odata.maxpagesize={requested_size}")
        if offset + page_size < len(rows):
            token = _encode_skiptoken({"o": offset + page_size, "v": start_version})
            body["@odata.nextLink"] = _link(request, table, {**query, "$skiptoken": token})
        elif tracking:
            body["@odata.deltaLink"] = self._delta_link(request, table, start_version)
        if tracking:
            applied.append("odata.track-changes")
        applied += opts.annotations_applied(request.headers.get("prefer", ""))
        headers = {"Preference-Applied": ",".join(applied)} if applied else {}
        return ApiResponse(200, headers, body)

    def _count(self, request: ApiRequest, entity_set: str, caller: Caller) -> ApiResponse:
        """``GET <entityset>/$count``: "just a number", text/plain, of the rows the caller may read
        ("Count rows using OData",
        learn.microsoft.com/power-apps/developer/data-platform/webapi/query/count-rows); capped at
        5,000 like ``$count=true`` (the simulator's reading: the page names no other limit)."""
        table = tables_by_entity_set().get(entity_set)
        if table is None:
            raise errors.DataverseError(
                404, errors.RESOURCE_NOT_FOUND, f"Resource not found for the segment '{entity_set}'."
            )
        self.security.require(caller, "Read", table)
        opts.check(request.query, frozenset({"$filter", "$deltatoken"}))
        if "$deltatoken" in request.query:
            # Change tracking, "Retrieve count of the changes made in tables": $count on a delta link.
            changes = self._changed_since(table, request.query["$deltatoken"], self.store.version)
            return ApiResponse(
                200, {"Content-Type": "text/plain"}, text=str(min(len(changes), opts.MAX_COUNT))
            )
        count = min(len(self._matching(table, request.query.get("$filter"), caller)), opts.MAX_COUNT)
        return ApiResponse(200, {"Content-Type": "text/plain"}, text=str(count))

    def _fetch(self, request: ApiRequest, table: Table, caller: Caller) -> ApiResponse:
        """A FetchXml query (module fetchxml), answered in the shape of an OData query."""
        others = sorted(k for k in request.query if k != "fetchXml")
        if others:
            raise errors.bad_request(f"The query parameter {others[0]} can't be used with fetchXml.")
        fetch = fetchxml.parse(request.query["fetchXml"], table, caller.user_id)
        records = [
            r
            for r in sorted(self.store.rows[table.logical_name].values(), key=lambda r: r["versionnumber"])
            if self.security.may_read(caller, table, _owner(r))
        ]

        def linked(link: fetchxml.Link, parent: Record) -> list[Record]:
            value = fetchxml.link_value(link, parent)
            if value is None:
                return []
            name = link.table.logical_name
            found = self.store.find(name, link.from_column, value)
            rows = self.store.rows[name]
            candidates = (
                [rows[i] for i in sorted(found)]
                if found is not None
                else [
                    r for r in rows.values() if index_key(_plain(r.get(link.from_column))) == index_key(value)
                ]
            )
            return [r for r in candidates if self.security.may_read(caller, link.table, _owner(r))]

        rows = fetchxml.join(fetch, records, linked)
        for column, descending in reversed(fetch.order):
            rows.sort(key=lambda row, c=column: sort_key(row[""].get(c)), reverse=descending)  # type: ignore[misc]
        values: list[dict[str, Any]] = []
        seen: set[str] = set()
        for row in rows:
            item = self.project(table, row[""], fetch.attributes, caller, _without_expand(request))
            for alias, linked_table, column in fetch.linked_columns():
                record = row.get(alias)
                projected = (
                    self.project(linked_table, record, [column], caller, _without_expand(request))
                    if record is not None
                    else {}
                )
                name = property_name(linked_table, column)
                for key, value in projected.items():
                    if key == name or key.startswith(f"{name}@"):
                        out_key = f"{alias}.{column}" + key[len(name) :]
                        item[out_key] = value
                item.setdefault(f"{alias}.{column}", None)
            if fetch.distinct:
                key = json.dumps({k: v for k, v in item.items() if k != "@odata.etag"}, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
            values.append(item)
        more = False
        if fetch.top is not None:
            values = values[: fetch.top]
        else:
            size = fetch.count or opts.DEFAULT_PAGE_SIZE
            start = (fetch.page - 1) * size
            more = len(values) > start + size
            values = values[start : start + size]
        body: dict[str, Any] = {"@odata.context": f"{request.base_url}/$metadata#{table.entity_set}"}
        if fetch.count is not None or more:
            body["@Microsoft.Dynamics.CRM.morerecords"] = more
        body["value"] = values
        return ApiResponse(200, {}, body)

    def _matching(self, table: Table, filter_text: str | None, caller: Caller) -> list[Record]:
        rows_by_id = self.store.rows[table.logical_name]
        condition = parse_filter(filter_text, table, self._related) if filter_text else None
        candidates: Any = rows_by_id.values()
        if condition is not None and condition.index_hint is not None:
            ids: set[str] = set()
            for column, value in condition.index_hint:
                if column == table.primary_id:  # the rows are keyed by it
                    ids |= {value} if isinstance(value, str) and value in rows_by_id else set()
                    continue
                found = self.store.find(table.logical_name, column, value)
                if found is None:
                    break
                ids |= found
            else:
                candidates = sorted((rows_by_id[i] for i in ids), key=lambda r: r["versionnumber"])
        return [
            r
            for r in candidates
            if (condition is None or condition.predicate(r))
            and self.security.may_read(caller, table, _owner(r))
        ]

    def _delta_link(self, request: ApiRequest, table: Table, version: int) -> str:
        stamp = datetime.now(UTC).strftime("%m/%d/%Y %H:%M:%S")
        query = {k: v for k, v in request.query.items() if k == "$select"}
        return _link(request, table, {**query, "$deltatoken": f"{version}!{stamp}"})

    def _delta(
        self, request: ApiRequest, table: Table, select: list[str] | None, caller: Caller
    ) -> ApiResponse:
        cursor = _decode_skiptoken(request.query.get("$skiptoken"))
        upper = int(cursor.get("u", self.store.version))
        offset = int(cursor.get("o", 0))
        changed = self._changed_since(table, request.query["$deltatoken"], upper)
        requested_size = opts.page_size(request.prefer)
        page_size = requested_size or opts.DEFAULT_PAGE_SIZE
        values: list[dict[str, Any]] = []
        for record_id in list(changed)[offset : offset + page_size]:
            record = self.store.get(table.logical_name, record_id)
            if record is None:
                values.append(
                    {
                        "@odata.context": f"{request.base_url}/$metadata#{table.entity_set}/$deletedEntity",
                        "id": record_id,
                        "reason": "deleted",
                    }
                )
            elif self.security.may_read(caller, table, _owner(record)):
                values.append(self.project(table, record, select, caller, request))
        selected = ",".join(property_name(table, c) for c in select) if select else ""
        body: dict[str, Any] = {
            "@odata.context": f"{request.base_url}/$metadata#{table.entity_set}({selected})/$delta",
            "value": values,
        }
        if offset + page_size < len(changed):
            query = {k: v for k, v in request.query.items() if k in {"$select", "$deltatoken"}}
            cursor = {"o": offset + page_size, "u": upper}
            body["@odata.nextLink"] = _link(
                request, table, {**query, "$skiptoken": _encode_skiptoken(cursor)}
            )
        else:
            body["@odata.deltaLink"] = self._delta_link(request, table, upper)
        applied = ([f"odata.maxpagesize={requested_size}"] if requested_size else []) + [
            "odata.track-changes"
        ]
        return ApiResponse(200, {"Preference-Applied": ",".join(applied)}, body)

    def _changed_since(self, table: Table, token: str, upper: int) -> dict[str, None]:
        """Ids of the rows changed or deleted after a delta token's version up to ``upper``, in the
        order of their last change."""
        try:
            since = int(token.split("!", 1)[0])
        except ValueError:
            raise errors.bad_request(f"Invalid delta token '{token}'.") from None
        if since < self.store.token_floor[table.logical_name]:
            raise errors.bad_request(
                "Version stamp associated with the client has expired. Please perform a full sync.",
                errors.EXPIRED_VERSION_STAMP,
            )
        log = self.store.changes[table.logical_name]
        changed: dict[str, None] = {}
        first, last = (bisect.bisect_right(log, v, key=lambda entry: entry[0]) for v in (since, upper))
        for _, record_id in log[first:last]:
            changed.pop(record_id, None)
            changed[record_id] = None
        return changed

    # -- writes --------------------------------------------------------------------------------
    def _create(self, request: ApiRequest, table: Table, caller: Caller) -> ApiResponse:
        payload = _json_object(request.body, table)
        raw_id = payload.get(table.primary_id)
        record_id = str(raw_id).lower() if raw_id else str(uuid.uuid4())
        if self.store.get(table.logical_name, record_id) is not None:
            raise errors.DataverseError(
                412, errors.DUPLICATE_RECORD, "A record with matching key values already exists."
            )
        record = self.write(table, record_id, payload, existing=None, caller=caller, request=request)
        return self._written(request, table, record, caller, created=True)

    def _upsert(
        self,
        request: ApiRequest,
        table: Table,
        record_id: str | None,
        key_values: dict[str, Any] | None,
        caller: Caller,
    ) -> ApiResponse:
        existing = self.store.get(table.logical_name, record_id) if record_id else None
        if_match = request.headers.get("if-match")
        if_none_match = request.headers.get("if-none-match")
        if existing is None and if_match is not None:
            raise errors.DataverseError(
                404,
                errors.OBJECT_DOES_NOT_EXIST,
                f"{table.logical_name} With Id = {record_id or key_values} Does Not Exist",
            )
        if existing is not None:
            if if_none_match is not None and if_none_match.strip() == "*":
                raise errors.DataverseError(
                    412, errors.DUPLICATE_RECORD, "A record with matching key values already exists."
                )
            _check_if_match(if_match, existing)
        payload = _json_object(request.body, table)
        if existing is not None:
            self.security.require(caller, "Write", table, _owner(existing), record_id)
            record = self.write(
                table, str(record_id), payload, existing=existing, caller=caller, request=request
            )
            return self._written(request, table, record, caller, created=False)
        if key_values:
            payload = {**key_values, **payload}
        new_id = record_id or str(payload.get(table.primary_id) or uuid.uuid4()).lower()
        record = self.write(table, new_id, payload, existing=None, caller=caller, request=request)
        return self._written(request, table, record, caller, created=True)

    def _written(
        self, request: ApiRequest, table: Table, record: Record, caller: Caller, *, created: bool
    ) -> ApiResponse:
        record_id = record[table.primary_id]
        entity_path = f"{table.entity_set}({record_id})"
        headers = {"OData-EntityId": f"{request.base_url}/{entity_path}", "ETag": etag(record)}
        if "return=representation" in request.prefer:
            select = parse_select(request.query.get("$select"), table)
            body = {
                "@odata.context": f"{request.base_url}/$metadata#{table.entity_set}/$entity",
                **self.project(table, record, select, caller, request),
            }
            headers["Preference-Applied"] = "return=representation"
            return ApiResponse(201 if created else 200, headers, body, entity_path)
        return ApiResponse(204, headers, None, entity_path)

    def _delete(
        self, request: ApiRequest, table: Table, record_id: str | None, caller: Caller
    ) -> ApiResponse:
        if record_id is None:
            raise _no_row_for_key(table)
        record = self._existing(table, record_id, caller, "Delete")
        _check_if_match(request.headers.get("if-match"), record)
        self.delete(table, record_id)
        return ApiResponse(204)

    def delete(self, table: Table, record_id: str) -> None:
        """Delete a row; an activity takes its parties and attachments with it (cascade)."""
        ref = Ref(table.logical_name, record_id)
        for child_table, column in (("activityparty", "activityid"), ("activitymimeattachment", "objectid")):
            for child_id in sorted(self.store.find(child_table, column, ref) or ()):
                self.store.delete(child_table, child_id)
        self.store.delete(table.logical_name, record_id)

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
        """Validate ``payload`` and store the created or updated row; returns the stored row.

        ``computed`` sets columns the platform maintains (read-only to clients), such as a
        recurring instance's ``seriesid``."""
        creating = existing is None
        if creating:
            self.security.require(caller, "Create", table)
        record: Record = dict(existing) if existing else {table.primary_id: record_id}
        parties: list[Any] | None = None
        for name, raw in payload.items():
            if name.startswith("@odata."):
                continue
            if name.endswith("@odata.bind"):
                self._bind(
                    table,
                    record,
                    name[: -len("@odata.bind")],
                    raw,
                    caller=caller,
                    request=request,
                    creating=creating,
                )
            elif name == table.parties_collection:
                if not isinstance(raw, list):
                    raise errors.bad_request(f"'{name}' must be an array.")
                parties = raw
            elif name == table.primary_id:
                if str(raw).lower() != record_id:
                    raise errors.bad_request(f"The {name} in the payload does not match the row addressed.")
            else:
                column = table.columns.get(name)
                if column is None or column.type in NOT_A_PROPERTY_TYPES:
                    raise errors.bad_request(
                        f"The property '{name}' does not exist on type "
                        f"'Microsoft.Dynamics.CRM.{table.logical_name}'. "
                        "Make sure to only use property names that are defined by the type."
                    )
                if not column.writable:
                    continue  # read-only columns are ignored, as the platform computes them
                value = _validate(table, column, raw)
                self._check_field_write(
                    table, name, value, record.get(name), caller=caller, creating=creating
                )
                record[name] = value
        record.update(computed or {})
        self._finish(table, record, payload, creating=creating, caller=caller)
        self.store.put(table.logical_name, record, table.primary_id)
        if parties is not None:
            self._write_parties(table, record, parties, caller, request)
        return record

    def _check_field_write(
        self, table: Table, column: str, value: Any, old: Any, *, caller: Caller, creating: bool
    ) -> None:
        if (table.logical_name, column) not in self.security.secured_columns or value == old:
            return
        permission = caller.field(table.logical_name, column)
        if creating and value is not None and not permission.create:
            raise errors.DataverseError(
                403,
                errors.ATTRIBUTE_CREATE_MISSING,
                f"The user does not have create permissions to a secured field ({column}). "
                "The requested operation could not be completed.",
            )
        if not creating and not permission.update:
            raise errors.DataverseError(
                403,
                errors.ATTRIBUTE_UPDATE_MISSING,
                f"The user doesn't have AttributePrivilegeUpdate and not granted shared access for a secured "
                f"attribute ({column}) during update operation",
            )

    def _bind(
        self,
        table: Table,
        record: Record,
        nav: str,
        raw: Any,
        *,
        caller: Caller,
        request: ApiRequest,
        creating: bool,
    ) -> None:
        if nav not in table.navigation:
            raise errors.bad_request(
                f"An undeclared property '{nav}' which only has property annotations in the payload but no "
                f"property value was found in the payload."
            )
        column, targets = table.navigation[nav]
        if raw is None and column != "ownerid":
            # "Associate and disassociate table rows using the Web API": a null bind removes the reference.
            record[column] = None
            return
        target_table, target_id = self._bind_target(raw, request)
        if target_table.logical_name not in targets:
            raise errors.bad_request(
                f"The navigation property '{nav}' does not accept a {target_table.logical_name} row."
            )
        target = self.store.get(target_table.logical_name, target_id) or {}
        if column == "ownerid":
            if not creating and _owner(record) != target_id:
                self.security.require(caller, "Assign", table, _owner(record), record.get(table.primary_id))
        else:
            self.security.require(
                caller, "Append", table, None if creating else _owner(record), record.get(table.primary_id)
            )
            self.security.require(caller, "AppendTo", target_table, _owner(target), target_id)
        record[column] = Ref(target_table.logical_name, target_id)

    def _finish(
        self, table: Table, record: Record, payload: dict[str, Any], *, creating: bool, caller: Caller
    ) -> None:
        """Platform-set columns: state/status, owner, audit columns, full name, version."""
        columns = table.columns
        stamp = now()
        if "statecode" in columns:
            _settle_state(table, record, payload)
        if creating:
            if table.ownership == "UserOwned" and "ownerid" in columns and record.get("ownerid") is None:
                record["ownerid"] = Ref("systemuser", caller.user_id)
            for column in ("createdon", "createdby", "createdonbehalfby"):
                if column in columns:
                    record[column] = stamp if column == "createdon" else _by(column, caller)
            if "activitytypecode" in columns:
                record["activitytypecode"] = table.logical_name
        for column in ("modifiedon", "modifiedby", "modifiedonbehalfby"):
            if column in columns:
                record[column] = stamp if column == "modifiedon" else _by(column, caller)
        owner = record.get("ownerid")
        for column, kind in (("owninguser", "systemuser"), ("owningteam", "team")):
            if column in columns and isinstance(owner, Ref):  # the owner, split by kind (read-only)
                record[column] = owner if owner.table == kind else None
        if table.logical_name in FULL_NAME_TABLES:
            parts = [record.get("firstname"), record.get("lastname")]
            record["fullname"] = " ".join(p for p in parts if p) or None
        record["versionnumber"] = self.store.next_version()

    def _write_parties(
        self, table: Table, record: Record, parties: list[Any], caller: Caller, request: ApiRequest
    ) -> None:
        """Replace the activity's party list (deep insert / deep update of <activity>_activity_parties)."""
        party_table = load_tables()["activityparty"]
        activity = Ref(table.logical_name, record[table.primary_id])
        for party_id in self._party_ids(activity):
            self.store.delete("activityparty", party_id)
        allowed = PARTICIPATION_MASKS.get(table.logical_name, frozenset())
        for item in parties:
            if not isinstance(item, dict):
                raise errors.bad_request("Each activity party must be an object.")
            mask = item.get("participationtypemask")
            if not isinstance(mask, int) or isinstance(mask, bool) or mask not in allowed:
                raise errors.bad_request(
                    f"A validation error occurred. The value {mask} of 'participationtypemask' on record "
                    "of type 'activityparty' is outside the valid range. "
                    f"Accepted Values: {','.join(map(str, sorted(allowed)))}",
                    errors.VALUE_OUT_OF_RANGE,
                )
            party_id = str(item.get("activitypartyid") or uuid.uuid4()).lower()
            party: Record = {"activitypartyid": party_id, "activityid": activity}
            for name, raw in item.items():
                if name.endswith("@odata.bind"):
                    self._bind(
                        party_table,
                        party,
                        name[: -len("@odata.bind")],
                        raw,
                        caller=caller,
                        request=request,
                        creating=True,
                    )
                elif name not in {"activitypartyid", "activityid"}:
                    column = party_table.columns.get(name)
                    if column is None or column.type in NOT_A_PROPERTY_TYPES:
                        raise errors.bad_request(
                            f"The property '{name}' does not exist on type "
                            "'Microsoft.Dynamics.CRM.activityparty'."
                        )
                    party[name] = _validate(party_table, column, raw)
            self._fill_address(party)
            party["ownerid"] = record.get("ownerid")
            party["versionnumber"] = self.store.next_version()
            self.store.put("activityparty", party, "activitypartyid")

    def _fill_address(self, party: Record) -> None:
        """A party bound to a record and given no address gets the record's primary email address,
        as Dataverse fills ``addressused`` (and the read-only ``addressusedemailcolumnnumber``, "email
        address column number from associated party") from the party record:
        https://learn.microsoft.com/power-apps/developer/data-platform/reference/entities/activityparty"""
        target = party.get("partyid")
        if not isinstance(target, Ref) or party.get("addressused"):
            return
        column = PRIMARY_EMAIL.get(target.table)
        row = self.store.get(target.table, target.id) if column is not None else None
        if column is not None and row and row.get(column):
            party["addressused"] = row[column]
            party["addressusedemailcolumnnumber"] = 1


# -- helpers -------------------------------------------------------------------------------------
# The email column a party's address comes from (column number 1 of each table).
PRIMARY_EMAIL = {
    "systemuser": "internalemailaddress",
    "contact": "emailaddress1",
    "account": "emailaddress1",
    "lead": "emailaddress1",
}


def _resolve_content_id(path: str, request: ApiRequest) -> str:
    """``$1/...`` -> the row created by the change set request with Content-ID 1."""
    head, _, rest = path.partition("/")
    if head not in request.content_ids:
        return path
    return request.content_ids[head] + (f"/{rest}" if rest else "")


def _no_row_for_key(table: Table) -> errors.DataverseError:
    return errors.DataverseError(
        404,
        errors.OBJECT_DOES_NOT_EXIST,
        f"A record with the specified key values does not exist in {table.logical_name} entity",
    )


def _owner(record: Record) -> str | None:
    owner = record.get("ownerid")
    return owner.id if isinstance(owner, Ref) else None


def _by(column: str, caller: Caller) -> Ref | None:
    if column.endswith("onbehalfby"):
        return Ref("systemuser", caller.impersonator_id) if caller.impersonator_id else None
    return Ref("systemuser", caller.user_id)


def _check_if_match(if_match: str | None, record: Record) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    if etag(record) not in [tag.strip() for tag in if_match.split(",")]:
        raise errors.DataverseError(
            412,
            errors.CONCURRENCY_VERSION_MISMATCH,
            "The version of the existing record doesn't match the RowVersion property provided.",
        )


def _settle_state(table: Table, record: Record, payload: dict[str, Any]) -> None:
    """statecode/statuscode must agree: a status alone implies its state, a state alone takes its
    default status, a new row starts in state 0 (the table reference pages' State/Status options)."""
    state_column, status_column = table.columns["statecode"], table.columns.get("statuscode")
    state: int | None = record.get("statecode")
    status: int | None = record.get("statuscode")
    if (
        status_column is not None
        and status is not None
        and "statuscode" in payload
        and "statecode" not in payload
    ):
        state = status_column.option_state.get(status, state)
    if state is None:
        state = 0
    if (
        status_column is not None
        and ("statecode" in payload or status is None)
        and "statuscode" not in payload
    ):
        status = state_column.default_status.get(state, status)
    if status is None:
        status = state_column.default_status.get(state)
    if (
        status_column is not None
        and status is not None
        and status_column.option_state.get(status, state) != state
    ):
        raise errors.bad_request(
            f"{status} is not a valid status code for state code {table.logical_name}State.{state}",
            errors.VALUE_OUT_OF_RANGE,
        )
    record["statecode"] = state
    if status_column is not None:
        record["statuscode"] = status


def _validate(table: Table, column: Column, raw: Any) -> Any:
    """Type, length and range checks of one column value, with Dataverse's error codes."""
    if raw is None:
        return None
    kind = column.type
    if kind in {"String", "Memo", "EntityName"}:
        if not isinstance(raw, str):
            raise errors.bad_request(f"Cannot convert the literal '{raw}' to the expected type 'Edm.String'.")
        if column.max_length is not None and len(raw) > column.max_length:
            raise errors.bad_request(
                f"A validation error occurred. The length of the '{column.name}' attribute of the "
                f"'{table.logical_name}' entity exceeded the maximum allowed length of "
                f"'{column.max_length}'.",
                errors.STRING_TOO_LONG,
            )
        return raw
    if kind in {"Integer", "BigInt", "Picklist", "State", "Status"}:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise errors.bad_request(f"Cannot convert the literal '{raw}' to the expected type 'Edm.Int32'.")
        if kind not in {"Integer", "BigInt"} and column.options and raw not in column.options:
            raise errors.bad_request(
                f"A validation error occurred. The value {raw} of '{column.name}' on record of type "
                f"'{table.logical_name}' is outside the valid range. "
                f"Accepted Values: {','.join(map(str, sorted(column.options)))}",
                errors.VALUE_OUT_OF_RANGE,
            )
        _check_range(table, column, raw)
        return raw
    if kind in {"Double", "Decimal", "Money"}:
        if not isinstance(raw, int | float) or isinstance(raw, bool):
            raise errors.bad_request(
                f"Cannot convert the literal '{raw}' to the expected type 'Edm.Decimal'."
            )
        _check_range(table, column, raw)
        return raw
    if kind == "Boolean":
        if not isinstance(raw, bool):
            raise errors.bad_request(
                f"Cannot convert the literal '{raw}' to the expected type 'Edm.Boolean'."
            )
        return raw
    if kind == "DateTime":
        try:
            return normalize_datetime(str(raw))
        except ValueError:
            raise errors.bad_request(
                f"Cannot convert the literal '{raw}' to the expected type 'Edm.DateTimeOffset'."
            ) from None
    if kind == "Uniqueidentifier":
        if not isinstance(raw, str) or not GUID.match(raw):
            raise errors.bad_request(f"Cannot convert the literal '{raw}' to the expected type 'Edm.Guid'.")
        return raw.lower()
    return raw


def _check_range(table: Table, column: Column, value: float) -> None:
    low, high = column.min_value, column.max_value
    if (low is not None and value < low) or (high is not None and value > high):
        raise errors.bad_request(
            f"A validation error occurred. The value {value} of '{column.name}' on record of type "
            f"'{table.logical_name}' is outside the valid range.",
            errors.VALUE_OUT_OF_RANGE,
        )


def _json_object(body: bytes, table: Table) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        raise errors.bad_request(
            f"Error identified in Payload provided by the user for Entity :'{table.entity_set}'"
        ) from None
    if not isinstance(payload, dict):
        raise errors.bad_request(
            f"Error identified in Payload provided by the user for Entity :'{table.entity_set}'"
        )
    return payload


def _plain(value: Any) -> Any:
    return value.id if isinstance(value, Ref) else value


def format_value(column: Column, value: Any) -> str | None:
    """Formatted value of a non-lookup column ("Format values": en-US, the user's UTC time zone)."""
    if column.type in {"Picklist", "State", "Status"}:
        return column.labels.get(value) if isinstance(value, int) else None
    if column.type == "Boolean":
        return column.labels.get(int(value), "Yes" if value else "No")
    if column.type == "Money" and isinstance(value, int | float):
        return f"${value:,.2f}"
    if column.type in {"Integer", "BigInt"} and isinstance(value, int):
        return f"{value:,}"
    if column.type in {"Double", "Decimal"} and isinstance(value, int | float):
        return f"{value:,.2f}"
    if column.type == "DateTime" and isinstance(value, str):
        if len(value) == 10:
            day = datetime.fromisoformat(value)
            return f"{day.month}/{day.day}/{day.year}"
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        hour = moment.hour % 12 or 12
        half = "AM" if moment.hour < 12 else "PM"
        return f"{moment.month}/{moment.day}/{moment.year} {hour}:{moment.minute:02d} {half}"
    return None


def _int_option(query: dict[str, str], name: str) -> int:
    try:
        value = int(query[name])
    except ValueError:
        raise errors.bad_request(f"Invalid value for {name}: '{query[name]}'.") from None
    if value < 0:
        raise errors.bad_request(f"Invalid value for {name}: '{query[name]}'.")
    return value


def _encode_skiptoken(cursor: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()


def _decode_skiptoken(token: str | None) -> dict[str, int]:
    if not token:
        return {}
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        raise errors.bad_request("Invalid $skiptoken.") from None
    if not isinstance(cursor, dict):
        raise errors.bad_request("Invalid $skiptoken.")
    return {str(k): int(v) for k, v in cursor.items()}


def _link(request: ApiRequest, table: Table, query: dict[str, str]) -> str:
    return f"{request.base_url}/{table.entity_set}?{urlencode(query, quote_via=quote, safe='$,')}"


def _without_expand(request: ApiRequest) -> ApiRequest:
    return ApiRequest(request.method, request.path, {}, request.headers, b"", request.base_url)


__all__ = ["LOOKUP_TYPES", "ApiRequest", "ApiResponse", "Engine", "column_of"]
