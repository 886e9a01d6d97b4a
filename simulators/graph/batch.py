"""JSON batching: ``POST /v1.0/$batch``.

Follows "Combine multiple HTTP requests using JSON batching" (learn.microsoft.com/graph/json-batching):

- the body is ``{"requests": [{"id", "method", "url", "headers"?, "body"?, "dependsOn"?}]}`` with at
  most 20 requests; ids are unique (case-insensitive), ``url`` is relative to the version
  (``/users/{id}/messages/{id}?$select=body``), a ``body`` (a JSON object or a base64 value) needs a
  ``Content-Type`` header. Anything else fails the whole batch with 400;
- the answer is ``200 {"responses": [{"id", "status", "headers", "body"}]}``, in any order (here:
  the order they finished in, so clients must correlate by id);
- each request is authorised, throttled and answered exactly as if it had been sent alone: it goes
  through the simulator's own pipeline (the batch's bearer token, routing, per-mailbox throttling
  and faults, the request log with ``batch`` set to the batch's request id). Headers of the batch
  request itself (e.g. ``Prefer``) do not reach its requests; each request carries its own;
- requests run concurrently, at most four at a time: "Microsoft Graph sends the Outlook service up
  to four individual requests from the batch at a time" (learn.microsoft.com/graph/throttling-limits,
  "Outlook service limits"). A request with ``dependsOn`` runs after the requests it names and is
  answered ``424 Failed Dependency`` when one of them failed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import graphlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.responses import Response

from simulators.graph.core import GraphError, Json, bad_request, error_body
from simulators.graph.http import Call, Ctx, json_response

if TYPE_CHECKING:
    from simulators.graph.app import Simulator

MAX_REQUESTS = 20
PARALLEL_REQUESTS = 4
_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})
_HIDDEN_HEADERS = frozenset({"content-length", "request-id", "client-request-id"})


@dataclass(frozen=True)
class Inner:
    """One request of a batch, validated."""

    id: str
    call: Call
    depends_on: tuple[str, ...]


def _batch_error(message: str) -> GraphError:
    return bad_request(message, "BadRequest")


def _inner_body(request_id: str, body: Any, headers: dict[str, str]) -> bytes:
    if body is None:
        return b""
    if not any(name.lower() == "content-type" for name in headers):
        raise _batch_error(f"Request '{request_id}' has a body but no Content-Type header.")
    if isinstance(body, dict | list):
        return json.dumps(body).encode("utf-8")
    if isinstance(body, str):
        try:
            return base64.b64decode(body, validate=True)
        except binascii.Error as exc:
            raise _batch_error(f"The body of request '{request_id}' is not valid base64.") from exc
    raise _batch_error(f"The body of request '{request_id}' must be a JSON object or base64.")


def _parse(raw: Json, authorization: str | None) -> list[Inner]:
    """Validate the whole batch first: a malformed batch runs none of its requests."""
    requests = raw.get("requests")
    if not isinstance(requests, list) or not requests:
        raise _batch_error("The batch needs a non-empty 'requests' array.")
    if len(requests) > MAX_REQUESTS:
        raise _batch_error(f"A batch may hold at most {MAX_REQUESTS} requests, not {len(requests)}.")
    parsed: list[Inner] = []
    seen: set[str] = set()
    for request in requests:
        if not isinstance(request, dict):
            raise _batch_error("Every batch request must be a JSON object.")
        request_id, url = request.get("id"), request.get("url")
        method = str(request.get("method", "")).upper()
        if not isinstance(request_id, str) or not request_id or request_id.lower() in seen:
            raise _batch_error(f"Batch request ids must be unique non-empty strings ({request_id!r}).")
        seen.add(request_id.lower())
        if method not in _METHODS:
            raise _batch_error(f"Request '{request_id}' has an unsupported method.")
        if not isinstance(url, str) or not url or "://" in url:
            raise _batch_error(f"Request '{request_id}' needs a url relative to the version.")
        path, _, query = url.partition("?")
        if path.strip("/").lower() == "$batch":
            raise _batch_error("A batch cannot contain another batch.")
        headers = {str(k): str(v) for k, v in dict(request.get("headers") or {}).items()}
        body = _inner_body(request_id, request.get("body"), headers)
        # The batch's own token authorises every request of it.
        raw_headers = [(b"authorization", authorization.encode("latin-1"))] if authorization else []
        raw_headers += [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in headers.items()
            if k.lower() != "authorization"
        ]
        depends_on = request.get("dependsOn") or []
        if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
            raise _batch_error(f"dependsOn of request '{request_id}' must be an array of ids.")
        call = Call(method, "/" + path.lstrip("/"), query, Headers(raw=raw_headers), body)
        parsed.append(Inner(request_id, call, tuple(depends_on)))
    _check_dependencies(parsed)
    return parsed


def _check_dependencies(requests: list[Inner]) -> None:
    ids = {r.id.lower() for r in requests}
    graph: dict[str, set[str]] = {}
    for request in requests:
        unknown = [d for d in request.depends_on if d.lower() not in ids]
        if unknown:
            raise _batch_error(f"Request '{request.id}' depends on unknown requests {unknown}.")
        graph[request.id.lower()] = {d.lower() for d in request.depends_on}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        raise _batch_error("The dependsOn references of the batch form a cycle.") from exc


def _header_name(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def _answer(request_id: str, response: Response) -> Json:
    """A response as the batch reports it: JSON bodies inline, other bodies base64, none for 204."""
    headers = {_header_name(k): v for k, v in response.headers.items() if k.lower() not in _HIDDEN_HEADERS}
    answer: Json = {"id": request_id, "status": response.status_code, "headers": headers}
    content = bytes(response.body)
    if content:
        is_json = "json" in response.headers.get("content-type", "")
        answer["body"] = json.loads(content) if is_json else base64.b64encode(content).decode("ascii")
    return answer


def _failed_dependency(request_id: str, batch_id: str) -> Json:
    body = error_body("FailedDependency", "A request this request depends on failed.", batch_id)
    return {"id": request_id, "status": 424, "headers": {"Content-Type": "application/json"}, "body": body}


class JsonBatch:
    """The ``$batch`` handler; each request goes through :meth:`Simulator.serve`."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def handle(self, ctx: Ctx) -> Response:
        requests = _parse(ctx.json(), ctx.request.headers.get("authorization"))
        gate = asyncio.Semaphore(PARALLEL_REQUESTS)
        answers: list[Json] = []
        tasks: dict[str, asyncio.Task[Json]] = {}

        async def run(request: Inner) -> Json:
            statuses = [(await tasks[d.lower()])["status"] for d in request.depends_on]
            if any(not 200 <= status < 300 for status in statuses):
                answer = _failed_dependency(request.id, ctx.request_id)
            else:
                async with gate:
                    response = await self.sim.serve(ctx.request, request.call, batch=ctx.request_id)
                answer = _answer(request.id, response)
            answers.append(answer)
            return answer

        for request in requests:
            tasks[request.id.lower()] = asyncio.create_task(run(request))
        await asyncio.gather(*tasks.values())
        return json_response(ctx, {"responses": answers})
