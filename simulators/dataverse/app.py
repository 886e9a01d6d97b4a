"""The HTTP face of the simulator: the Web API under /api/data/v9.2 and the control API under /_sim.

Every Web API request needs ``Authorization: Bearer <anything>`` (missing -> 401, as Dataverse
answers an unauthenticated call: "Use the Dataverse Web API", Authentication). The control API is
the simulator's own (documented in README.md) and needs no token.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.dataverse import batch, bulk, bulkdelete, errors, plugins
from simulators.dataverse.engine import PATH, ApiRequest, ApiResponse
from simulators.dataverse.limits import (
    ANY_CLIENT,
    HANG,
    HANG_SECONDS,
    LATENCY,
    CommittedWrite,
    Fault,
    Governor,
    RequestLog,
    client_id,
)
from simulators.dataverse.platform import PlatformEngine, PlatformStore, setup
from simulators.dataverse.schema import load_tables, tables_by_entity_set
from simulators.dataverse.security import (
    APP_ROLE,
    APP_USER_ID,
    APP_USER_OBJECT_ID,
    SYSTEM,
    Caller,
    Security,
    TeamSecurity,
    UserSecurity,
)

API_PREFIX = "/api/data/v9.2"
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
LOGGED_HEADERS = ("callerobjectid", "mscrmcallerid", "prefer", "if-match", "if-none-match", "content-type")
JSON_HEADERS = {"OData-Version": "4.0"}
#: Logged for a request whose client closed the connection before it was answered (a ``hang``).
CLIENT_CLOSED_REQUEST = 499


class Simulator:
    """All simulator state; ``reset()`` returns it to the start state (only the application user)."""

    def __init__(self) -> None:
        self.governor = Governor()
        self.log = RequestLog()
        self.webhooks = plugins.Dispatcher()
        self.reset()

    def reset(self) -> None:
        self.token_users: dict[str, str] = {}
        self.store = PlatformStore()
        self.security = Security()
        self.engine = PlatformEngine(self.store, self.security)
        self.governor.reset()
        self.log.entries.clear()
        self.webhooks.log.clear()
        setup(self.store, self.security)
        self.add_user(
            {
                "systemuserid": APP_USER_ID,
                "azureactivedirectoryobjectid": APP_USER_OBJECT_ID,
                "fullname": "crmsync application",
                "roles": [APP_ROLE],
                "accessmode": 4,
            }
        )

    def add_user(self, spec: dict[str, Any]) -> dict[str, Any]:
        user_id = str(spec.get("systemuserid") or uuid.uuid4()).lower()
        first, _, last = str(spec.get("fullname") or "").rpartition(" ")
        payload: dict[str, Any] = {
            "firstname": spec.get("firstname", first or None),
            "lastname": spec.get("lastname", last or None),
            "internalemailaddress": spec.get("internalemailaddress"),
            "azureactivedirectoryobjectid": spec.get("azureactivedirectoryobjectid"),
            "isdisabled": bool(spec.get("isdisabled", False)),
        }
        if "accessmode" in spec:
            payload["accessmode"] = spec["accessmode"]
        object_id = payload["azureactivedirectoryobjectid"]
        if object_id and self.security.by_object_id.get(str(object_id).lower(), user_id) != user_id:
            raise errors.bad_request(
                f"another systemuser already has azureactivedirectoryobjectid {object_id}"
            )
        security = UserSecurity(
            user_id=user_id,
            object_id=str(object_id).lower() if object_id else None,
            roles=[str(r) for r in spec.get("roles") or []],
            profiles=[str(p) for p in spec.get("fieldsecurityprofiles") or []],
            disabled=payload["isdisabled"],
        )
        self.security.add_user(security)
        table = load_tables()["systemuser"]
        existing = self.store.get("systemuser", user_id)
        record = self.engine.write(
            table, user_id, payload, existing=existing, caller=SYSTEM, request=_control_request()
        )
        return {
            "systemuserid": user_id,
            "fullname": record.get("fullname"),
            **{k: payload[k] for k in ("internalemailaddress", "azureactivedirectoryobjectid", "isdisabled")},
        }

    def seed(self, table_name: str, records: list[dict[str, Any]]) -> list[str]:
        """Insert or replace rows as the system (no privilege checks, no limits), all or nothing."""
        table = load_tables().get(table_name)
        if table is None:
            raise errors.bad_request(f"unknown table {table_name!r}")
        point = self.store.savepoint()
        ids: list[str] = []
        try:
            for payload in records:
                record_id = str(payload.get(table.primary_id) or uuid.uuid4()).lower()
                existing = self.store.get(table.logical_name, record_id)
                record = self.engine.write(
                    table, record_id, payload, existing=existing, caller=SYSTEM, request=_control_request()
                )
                ids.append(record[table.primary_id])
        except BaseException:
            self.store.rollback(point)
            raise
        self.store.release(point)
        return ids

    def expire_change_tokens(self, table_name: str | None) -> None:
        """Every delta token issued so far (for one table or all) answers ExpiredVersionStamp."""
        floor = self.store.next_version()
        for name in [table_name] if table_name else list(load_tables()):
            self.store.token_floor[name] = floor

    # -- Web API -------------------------------------------------------------------------------
    def run_one(self, request: ApiRequest, client: str) -> ApiResponse:
        """Resolve the caller from the request's own headers, then run it; errors become responses."""
        try:
            calling_user = self.token_users.get(client, APP_USER_ID)
            caller: Caller = self.security.resolve(request.headers, calling_user)
            return self.engine.handle(request, caller)
        except errors.DataverseError as error:
            return ApiResponse(error.status, error.headers, error.body())

    def run_part(self, request: ApiRequest, client: str) -> ApiResponse:
        """A $batch part: a fault aimed at its path (``path_contains``) answers instead of it."""
        fault = self.governor.part_fault(client, request.path, request.body)
        if fault is not None:
            error = fault.error()
            return ApiResponse(error.status, error.headers, error.body())
        return self.run_one(request, client)

    def run_system_jobs(self) -> None:
        """Run the submitted bulk delete jobs (after their answer was sent), then their webhooks."""
        while self.engine.system_jobs:
            bulkdelete.run(self.engine, self.engine.system_jobs.pop(0))
            self.webhooks.send(self.store.take_committed())

    def transaction(self, work: Callable[[], Any]) -> Any:
        point = self.store.savepoint()
        try:
            result = work()
        except BaseException:
            self.store.rollback(point)
            raise
        self.store.release(point)
        return result


class CommitWatch:
    """Runs one HTTP request's operations and remembers which writes were committed, so a
    hang_after_commit fault can hold the answer; a rolled-back change set's writes do not count."""

    def __init__(self, sim: Simulator, client: str) -> None:
        self.sim = sim
        self.client = client
        self.writes: list[CommittedWrite] = []

    def run_one(self, request: ApiRequest) -> ApiResponse:
        return self._note(request, self.sim.run_one(request, self.client))

    def run_part(self, request: ApiRequest) -> ApiResponse:
        return self._note(request, self.sim.run_part(request, self.client))

    def transaction(self, work: Callable[[], Any]) -> Any:
        kept = len(self.writes)
        try:
            return self.sim.transaction(work)
        except BaseException:
            del self.writes[kept:]
            raise

    def _note(self, request: ApiRequest, response: ApiResponse) -> ApiResponse:
        match = PATH.match(request.path) or bulk.PATH.match(request.path)
        table = tables_by_entity_set().get(match.group("set")) if match else None
        if request.method in WRITE_METHODS and response.status < 400 and table is not None:
            self.writes.append(CommittedWrite(table.logical_name, request.path, request.body))
        return response


def _control_request() -> ApiRequest:
    return ApiRequest("POST", "", {}, {}, b"", API_PREFIX)


def _error_response(error: errors.DataverseError) -> Response:
    return JSONResponse(error.body(), error.status, headers={**JSON_HEADERS, **error.headers})


def _to_http(response: ApiResponse) -> Response:
    headers = {**JSON_HEADERS, **response.headers}
    if response.text is not None:
        return _cased(Response(response.text, response.status, headers=headers), headers)
    if response.body is None:
        return _cased(Response(status_code=response.status, headers=headers), headers)
    answer = Response(
        json.dumps(response.body),
        response.status,
        headers=headers,
        media_type="application/json; odata.metadata=minimal",
    )
    return _cased(answer, headers)


def _cased(answer: Response, headers: dict[str, str]) -> Response:
    """Send header names in their documented casing ("OData-EntityId", "OData-Version"): Starlette
    lowercases them, and a client that looks a header up case-sensitively (the async variant of
    Microsoft's Python client reads ``OData-EntityId``) would miss it."""
    names = {name.lower().encode("latin-1"): name.encode("latin-1") for name in headers}
    answer.raw_headers = [(names.get(key, key), value) for key, value in answer.raw_headers]
    return answer


def _bearer(headers: dict[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def web_api(request: Request) -> Response:
    sim: Simulator = request.app.state.sim
    path = request.path_params["path"]
    headers = {k.lower(): v for k, v in request.headers.items()}
    token = _bearer(headers)
    client = client_id(token) if token else "anonymous"
    entry: dict[str, Any] = {
        "time": time.time(),
        "method": request.method,
        "path": path,
        "query": request.url.query,
        "headers": {h: headers[h] for h in LOGGED_HEADERS if h in headers},
        "client": client,
        "status": None,
        "batch_operations": None,
        "batch_parts": None,  # each operation of a $batch or bulk message (post-mortems: who wrote what)
    }
    sim.log.add(entry)
    response = await _serve(sim, request, path, headers, token=token, client=client, entry=entry)
    entry["status"] = response.status_code
    return response


async def _serve(
    sim: Simulator,
    request: Request,
    path: str,
    headers: dict[str, str],
    *,
    token: str | None,
    client: str,
    entry: dict[str, Any],
) -> Response:
    if token is None:
        return Response(
            status_code=401,
            headers={
                "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"'
            },
        )
    started = time.monotonic()
    admitted = False
    try:
        latency = 0.0
        hangs: list[Fault] = []
        body = await request.body()
        for fault in sim.governor.matching_faults(client, path, body):
            if fault.kind == HANG:
                hangs.append(fault)
            elif fault.kind != LATENCY:
                raise fault.error()
            latency += fault.latency_ms
        rate_headers = sim.governor.admit(client)
        admitted = True
        for hang in hangs:
            if not await hang.hold(gone=request.is_disconnected):
                # Nobody reads this answer; the log says the client closed the request (nginx's 499).
                return Response(status_code=CLIENT_CLOSED_REQUEST)
        if latency:
            await asyncio.sleep(latency / 1000.0)
        base_url = f"{request.url.scheme}://{request.url.netloc}{API_PREFIX}"
        watch = CommitWatch(sim, client)
        if path == "$batch":
            if request.method != "POST":
                raise errors.DataverseError(405, errors.BAD_PAYLOAD, "$batch takes POST.")
            items = batch.parse(body, headers.get("content-type", ""))
            entry["batch_operations"] = batch.operation_count(items)
            entry["batch_parts"] = batch.operation_names(items)
            boundary, text, stopped = batch.run(items, headers, base_url, watch.run_part, watch.transaction)
            answer = Response(
                text,
                400 if stopped else 200,
                headers={**JSON_HEADERS, **rate_headers},
                media_type=f"multipart/mixed; boundary={boundary}",
            )
        else:
            api_request = ApiRequest(
                method=request.method,
                path=path,
                query=dict(parse_qsl(request.url.query, keep_blank_values=True)),
                headers=headers,
                body=body,
                base_url=base_url,
            )
            entry["batch_parts"] = bulk.target_names(path, body)
            response = watch.run_one(api_request)
            response.headers.update(rate_headers)
            answer = _to_http(response)
        sim.webhooks.send(sim.store.take_committed())
        hang = sim.governor.hang_after_commit(client, watch.writes)
        if hang is not None:
            await hang.hold()
        if sim.engine.system_jobs:
            answer.background = BackgroundTask(sim.run_system_jobs)
        return answer
    except errors.DataverseError as error:
        return _error_response(error)
    finally:
        if admitted:
            sim.governor.done(client, started)


# -- control API -----------------------------------------------------------------------------------
async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"{}")
    except ValueError:
        raise errors.bad_request("control API bodies are JSON") from None


def _control(handler: Callable[[Simulator, Request, Any], Any]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        sim: Simulator = request.app.state.sim
        try:
            payload = await _json(request) if request.method in {"POST", "PUT"} else None
            result = handler(sim, request, payload)
        except errors.DataverseError as error:
            return _error_response(error)
        except (KeyError, TypeError, ValueError) as error:
            return _error_response(errors.bad_request(f"invalid control request: {error}"))
        if result is None:
            return Response(status_code=204)
        status, body = result
        return JSONResponse(body, status)

    return endpoint


def _reset(sim: Simulator, _: Request, __: Any) -> None:
    sim.reset()


def _add_user(sim: Simulator, _: Request, spec: Any) -> tuple[int, Any]:
    return 201, sim.add_user(spec)


def _add_role(sim: Simulator, _: Request, spec: Any) -> None:
    sim.security.add_role(str(spec["name"]), spec)


def _add_profile(sim: Simulator, _: Request, spec: Any) -> None:
    sim.security.add_profile(str(spec["name"]), list(spec.get("permissions") or []))


def _add_team(sim: Simulator, _: Request, spec: Any) -> tuple[int, dict[str, str]]:
    team = TeamSecurity(
        team_id=str(spec.get("teamid") or uuid.uuid4()),
        name=str(spec["name"]),
        members=[str(m) for m in spec.get("members") or []],
        profiles=[str(p) for p in spec.get("fieldsecurityprofiles") or []],
    )
    sim.security.add_team(team)
    return 201, {"teamid": team.team_id}


def _add_key(sim: Simulator, _: Request, spec: Any) -> None:
    table = str(spec["table"])
    columns = tuple(str(c) for c in spec["columns"])
    definition = load_tables().get(table)
    if definition is None or not columns or any(c not in definition.columns for c in columns):
        raise errors.bad_request(f"invalid alternate key for table {table!r}: {columns}")
    sim.store.define_key(table, str(spec["name"]), columns)


def _seed(sim: Simulator, _: Request, spec: Any) -> tuple[int, Any]:
    return 200, {"ids": sim.seed(str(spec["table"]), list(spec["records"]))}


def _add_fault(sim: Simulator, _: Request, spec: Any) -> tuple[int, Any]:
    token = spec.get("token")
    table = spec.get("table")
    if table is not None and table not in load_tables():
        raise errors.bad_request(f"unknown table {table!r}")
    fault = Fault(
        kind=str(spec["kind"]),
        client=client_id(str(token)) if token else ANY_CLIENT,
        remaining=int(spec["count"]) if spec.get("count") is not None else None,
        latency_ms=float(spec.get("latency_ms", 0)),
        status=int(spec.get("status", 429 if spec["kind"] == "throttle" else 503)),
        code=str(
            spec.get(
                "code",
                errors.LIMIT_REQUESTS if spec["kind"] == "throttle" else errors.SERVICE_UNAVAILABLE,
            )
        ),
        message=str(spec.get("message", "Simulated fault.")),
        retry_after=int(spec.get("retry_after", 1)),
        path_contains=spec.get("path_contains"),
        table=table,
        body_contains=spec.get("body_contains"),
        seconds=float(spec.get("seconds", HANG_SECONDS if spec["kind"] == HANG else 30)),
        after=int(spec.get("after", 0)),
    )
    sim.governor.add_fault(fault)
    return 201, {"id": fault.id}


def _fault_state(sim: Simulator, request: Request, _: Any) -> tuple[int, Any]:
    fault = sim.governor.added.get(request.path_params["id"])
    if fault is None:
        raise errors.DataverseError(
            404, errors.OBJECT_DOES_NOT_EXIST, "No such fault (or the faults were cleared)."
        )
    return 200, fault.state()


def _bind_token(sim: Simulator, _: Request, spec: Any) -> None:
    user_id = str(spec["systemuserid"]).lower()
    if user_id not in sim.security.users:
        raise errors.not_found("systemuser", user_id)
    sim.token_users[client_id(str(spec["token"]))] = user_id


def _clear_faults(sim: Simulator, _: Request, __: Any) -> None:
    sim.governor.clear_faults()


def _set_limits(sim: Simulator, _: Request, spec: Any) -> tuple[int, Any]:
    token = spec.get("token")
    settings = sim.governor.configure(client_id(str(token)) if token else ANY_CLIENT, spec)
    return 200, settings.__dict__


def _clear_limits(sim: Simulator, _: Request, __: Any) -> None:
    sim.governor.settings.clear()
    sim.governor.usage.clear()


def _requests(sim: Simulator, request: Request, _: Any) -> tuple[int, Any]:
    token = request.query_params.get("token")
    return 200, {"value": sim.log.select(client_id(token) if token else None)}


def _clear_requests(sim: Simulator, _: Request, __: Any) -> None:
    sim.log.entries.clear()


def _expire(sim: Simulator, _: Request, spec: Any) -> None:
    table = spec.get("table")
    if table is not None and table not in load_tables():
        raise errors.bad_request(f"unknown table {table!r}")
    sim.expire_change_tokens(table)


def _record(sim: Simulator, request: Request, _: Any) -> tuple[int, Any]:
    table = load_tables().get(request.path_params["table"])
    if table is None:
        raise errors.bad_request("unknown table")
    record_id = request.path_params["id"]
    record = sim.store.get(table.logical_name, record_id)
    if record is None:
        raise errors.not_found(table.logical_name, record_id)
    return 200, sim.engine.project(table, record, None, SYSTEM, _control_request())


def _webhooks(sim: Simulator, _: Request, __: Any) -> tuple[int, Any]:
    return 200, {"value": sim.webhooks.log, "in_flight": sim.webhooks.pending()}


def _clear_webhooks(sim: Simulator, _: Request, __: Any) -> None:
    sim.webhooks.log.clear()


def _health(sim: Simulator, _: Request, __: Any) -> tuple[int, Any]:
    return 200, {
        "status": "ok",
        "app_user": {"systemuserid": APP_USER_ID, "azureactivedirectoryobjectid": APP_USER_OBJECT_ID},
    }


def create_app() -> Starlette:
    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    app = Starlette(
        routes=[
            Route("/_sim/health", _control(_health), methods=["GET"]),
            Route("/_sim/reset", _control(_reset), methods=["POST"]),
            Route("/_sim/users", _control(_add_user), methods=["POST"]),
            Route("/_sim/roles", _control(_add_role), methods=["POST"]),
            Route("/_sim/fieldsecurityprofiles", _control(_add_profile), methods=["POST"]),
            Route("/_sim/teams", _control(_add_team), methods=["POST"]),
            Route("/_sim/tokens", _control(_bind_token), methods=["POST"]),
            Route("/_sim/keys", _control(_add_key), methods=["POST"]),
            Route("/_sim/seed", _control(_seed), methods=["POST"]),
            Route("/_sim/faults", _control(_add_fault), methods=["POST"]),
            Route("/_sim/faults", _control(_clear_faults), methods=["DELETE"]),
            Route("/_sim/faults/{id}", _control(_fault_state), methods=["GET"]),
            Route("/_sim/limits", _control(_set_limits), methods=["POST"]),
            Route("/_sim/limits", _control(_clear_limits), methods=["DELETE"]),
            Route("/_sim/requests", _control(_requests), methods=["GET"]),
            Route("/_sim/requests", _control(_clear_requests), methods=["DELETE"]),
            Route("/_sim/change-tokens/expire", _control(_expire), methods=["POST"]),
            Route("/_sim/records/{table}/{id}", _control(_record), methods=["GET"]),
            Route("/_sim/webhooks", _control(_webhooks), methods=["GET"]),
            Route("/_sim/webhooks", _control(_clear_webhooks), methods=["DELETE"]),
            Route(API_PREFIX + "/{path:path}", web_api, methods=methods),
        ]
    )
    app.state.sim = Simulator()
    return app
