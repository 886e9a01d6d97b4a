"""Request context, routing and response helpers for the Graph surface (/v1.0/...)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlencode

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from simulators.graph.core import GraphError, Json, bad_request
from simulators.graph.resources import View, extended_key

if TYPE_CHECKING:
    from simulators.graph.auth import Claims
    from simulators.graph.store import Mailbox


def split_path(raw_path: str) -> list[str]:
    """Path segments, each percent-decoded on its own so ids containing '/' (sent as %2F) survive.

    ``mailFolders('inbox')`` (OData key syntax) becomes ``mailFolders`` + ``inbox``, and the
    function-call spelling ``delta()`` becomes ``delta`` (learn.microsoft.com/graph/delta-query-overview).
    """
    segments: list[str] = []
    for raw in raw_path.strip("/").split("/"):
        part = unquote(raw)
        keyed = re.fullmatch(r"([A-Za-z]+)\('(.*)'\)", part)
        if keyed:
            segments.extend([keyed.group(1), keyed.group(2)])
        elif part.endswith("()"):
            segments.append(part[:-2])
        elif part:
            segments.append(part)
    return segments


def parse_select(raw: str | None) -> frozenset[str] | None:
    return frozenset(s.strip() for s in raw.split(",") if s.strip()) if raw else None


def parse_expand(raw: str | None) -> frozenset[str] | None:
    """$expand=singleValueExtendedProperties($filter=id eq '{id}') (learn.microsoft.com/graph/api/
    singlevaluelegacyextendedproperty-get): the lower-cased ids wanted (empty: all), None: no expand."""
    if not raw:
        return None
    match = re.fullmatch(r"\s*singleValueExtendedProperties(?:\((.*)\))?\s*", raw, re.IGNORECASE)
    if not match:
        raise bad_request(f"Expanding '{raw}' is not supported by this simulator.", "BadRequest")
    if not match.group(1):
        return frozenset()
    ids = re.findall(r"id\s+eq\s+'([^']*)'", match.group(1), re.IGNORECASE)
    if not ids:
        raise bad_request("Only $filter=id eq '...' is supported inside the $expand.", "BadRequest")
    return frozenset(extended_key(i) for i in ids)


def parse_prefer(values: list[str]) -> dict[str, str]:
    """Prefer header preferences (RFC 7240) with lower-cased names and unquoted values."""
    prefs: dict[str, str] = {}
    for header in values:
        for piece in header.split(","):
            name, _, value = piece.strip().partition("=")
            if name:
                prefs[name.strip().lower()] = value.strip().strip('"')
    return prefs


@dataclass(frozen=True)
class Call:
    """One Graph call as the pipeline needs it: an HTTP request, or one request of a ``$batch``.

    ``path`` is relative to ``/v1.0`` and still percent-encoded; ``query`` is the raw query string.
    """

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes


@dataclass
class Ctx:
    """Everything a handler needs about one Graph request."""

    request: Request
    method: str
    segments: list[str]
    params: dict[str, str]
    query: dict[str, str]
    prefer: dict[str, str]
    base_url: str
    request_id: str
    box: Mailbox | None = None
    applied: list[str] = field(default_factory=list)
    raw_body: bytes = b""
    claims: Claims | None = None  # an issued app-only token's claims; None: not limited by roles
    if_match: str | None = None  # the request's If-Match header (core.check_if_match)

    def json(self) -> Json:
        if not self.raw_body:
            return {}
        try:
            parsed = json.loads(self.raw_body)
        except ValueError as exc:
            raise bad_request("Unable to read JSON request payload.", "BadRequest") from exc
        if not isinstance(parsed, dict):
            raise bad_request("The request body must be a JSON object.", "BadRequest")
        return parsed

    @property
    def mailbox(self) -> Mailbox:
        assert self.box is not None, "route without {user}"  # noqa: S101 - router invariant
        return self.box

    @property
    def immutable_ids(self) -> bool:
        """learn.microsoft.com/graph/outlook-immutable-id: ``Prefer: IdType="ImmutableId"``."""
        wanted = self.prefer.get("idtype", "").lower() == "immutableid"
        if wanted and 'IdType="ImmutableId"' not in self.applied:
            self.applied.append('IdType="ImmutableId"')
        return wanted

    def view(self, *, select: bool = True) -> View:
        zone_name = self.prefer.get("outlook.timezone")
        if zone_name and f'outlook.timezone="{zone_name}"' not in self.applied:
            self.applied.append(f'outlook.timezone="{zone_name}"')
        body_type = self.prefer.get("outlook.body-content-type", "").lower() or None
        if body_type not in (None, "text", "html"):
            body_type = None
        if body_type and f'outlook.body-content-type="{body_type}"' not in self.applied:
            self.applied.append(f'outlook.body-content-type="{body_type}"')
        return View(
            immutable_ids=self.immutable_ids,
            time_zone=zone_name or "UTC",
            select=self.select() if select else None,
            expand_extended=self.expand_extended(),
            body_type=body_type,
        )

    def select(self) -> frozenset[str] | None:
        return parse_select(self.query.get("$select"))

    def expand_extended(self) -> frozenset[str] | None:
        return parse_expand(self.query.get("$expand"))

    def page_size(self, default: int, *, cap: int | None = None) -> int:
        """Prefer: odata.maxpagesize (learn.microsoft.com/graph/paging) or $top; a larger size than
        ``cap`` is served as ``cap``, and ``Preference-Applied`` says which size was used."""
        raw = self.prefer.get("odata.maxpagesize") or self.query.get("$top")
        if raw is None:
            return default
        try:
            size = int(raw)
        except ValueError as exc:
            raise bad_request(f"Invalid page size '{raw}'.", "BadRequest") from exc
        if size < 1:
            raise bad_request("The page size must be positive.", "BadRequest")
        if cap is not None:
            size = min(size, cap)
        if "odata.maxpagesize" in self.prefer:
            self.applied.append(f"odata.maxpagesize={size}")
        return size

    def link(self, segments: list[str], query: dict[str, str]) -> str:
        """An absolute link on the simulator's own base (nextLink / deltaLink)."""
        path = "/".join(quote(s, safe="") for s in segments)
        return f"{self.base_url}/{path}" + (f"?{urlencode(query, safe='$,')}" if query else "")

    def context(self, fragment: str) -> str:
        return f"{self.base_url}/$metadata#{fragment}"


GRAPH_JSON = (
    "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
)


def json_response(
    ctx: Ctx, body: Json | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    all_headers = dict(headers or {})
    if ctx.applied:
        all_headers["Preference-Applied"] = ", ".join(ctx.applied)
    if body is None:
        return Response(status_code=status, headers=all_headers)
    payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
    return Response(
        payload,
        status_code=status,
        media_type=GRAPH_JSON,
        headers=all_headers,
    )


def error_response(error: GraphError, body: Json) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    if error.location is not None:
        headers["Location"] = error.location
    return Response(
        json.dumps(body).encode("utf-8"),
        status_code=error.status,
        media_type="application/json",
        headers=headers,
    )


Handler = Callable[[Ctx], Awaitable[Response]]


@dataclass
class Route:
    pattern: tuple[str, ...]
    handlers: dict[str, Handler]

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.pattern):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.pattern, segments, strict=True):
            if want.startswith("{"):
                params[want[1:-1]] = got
            elif want.lower() != got.lower():
                return None
        return params


class Router:
    """Graph's paths, matched segment by segment (literal segments are case-insensitive)."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, pattern: str, **handlers: Handler) -> None:
        self.routes.append(Route(tuple(pattern.split("/")), {m.upper(): h for m, h in handlers.items()}))

    def resolve(self, method: str, segments: list[str]) -> tuple[Handler, dict[str, str], str]:
        """The handler, the path parameters and the route's pattern (for the permission check)."""
        allowed = False
        for route in self.routes:
            params = route.match(segments)
            if params is None:
                continue
            handler = route.handlers.get(method)
            if handler is not None:
                return handler, params, "/".join(route.pattern)
            allowed = True
        if allowed:
            raise GraphError(405, "Request_BadRequest", f"The HTTP method '{method}' is not allowed here.")
        raise GraphError(
            400, "BadRequest", f"Resource not found for the segment '{segments[-1] if segments else ''}'."
        )


def listify(values: Any) -> list[Any]:
    return values if isinstance(values, list) else []
