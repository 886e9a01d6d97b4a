"""The Starlette application: the Graph surface under /v1.0 and the control API under /_sim."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.graph import auth
from simulators.graph.api import GraphApi, collection, create_item
from simulators.graph.batch import JsonBatch
from simulators.graph.core import GraphError, Json, bad_request, error_body
from simulators.graph.delta import DeltaTokens
from simulators.graph.http import Call, Ctx, Router, error_response, json_response, parse_prefer, split_path
from simulators.graph.limits import ClientGone, Config, Faults, RequestLog, Throttle
from simulators.graph.notify import Notifier, Subscription, parse_resource
from simulators.graph.store import Kind, Mailbox, Store

LOG = logging.getLogger("simulators.graph")
API_PREFIX = "/v1.0"
METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]
#: Logged for a request whose client closed the connection before it was answered (a ``hang``).
CLIENT_CLOSED_REQUEST = 499


class Simulator:
    """All simulator state; ``reset()`` returns it to a fresh start."""

    def __init__(self) -> None:
        self.config = Config()
        self.store = Store()
        self.faults = Faults()
        self.log = RequestLog()
        self.throttle = Throttle(self.config)
        self.delta = DeltaTokens()
        self.tokens = auth.Tokens()
        self.notifier = Notifier(self.store, self.config, self.faults)
        self.router = Router()
        self.api = GraphApi(self)
        self.router.add("subscriptions", get=self.list_subscriptions, post=self.create_subscription)
        self.router.add("subscriptions/{subscription}", get=self.get_subscription,
                        patch=self.update_subscription, delete=self.delete_subscription)  # fmt: skip
        self.router.add("subscriptions/{subscription}/reauthorize", post=self.reauthorize_subscription)
        self.api.register(self.router)
        self.router.add("$batch", post=JsonBatch(self).handle)

    def reset(self) -> None:
        self.notifier.reset()
        self.store.users.clear()
        self.store.invitations.clear()
        self.tokens.issued.clear()
        self.faults.rules.clear()
        self.log.entries.clear()
        self.throttle.mailboxes.clear()
        self.delta.states.clear()
        self.delta.pages.clear()
        defaults = Config()
        for name, value in defaults.as_json().items():
            setattr(self.config, name, value)

    # -- the Graph pipeline: auth, routing, log, throttling, faults -------------------------------

    async def graph(self, request: Request) -> Response:
        raw_path = bytes(request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
        call = Call(
            method=request.method,
            path=raw_path.split("?", 1)[0][len(API_PREFIX) :],
            query=request.url.query,
            headers=request.headers,
            body=await request.body(),
        )
        return await self.serve(request, call)

    async def serve(self, request: Request, call: Call, *, batch: str | None = None) -> Response:
        """One Graph call through auth, routing, throttling, faults and the log; ``$batch`` sends each of
        its requests through here too, so a batched request behaves exactly like a single one."""
        request_id = str(uuid.uuid4())
        segments = split_path(call.path)
        query = dict(parse_qsl(call.query, keep_blank_values=True))
        entry: Json = {
            "id": request_id,
            "method": call.method,
            "path": "/" + "/".join(segments),
            "query": query,
            "select": [s for s in query["$select"].split(",") if s] if query.get("$select") else None,
            "prefer": call.headers.get("prefer"),
            "user": None,
            "batch": batch,
        }
        try:
            response = await self._dispatch(
                request, call, entry, request_id=request_id, segments=segments, query=query
            )
        except GraphError as error:
            client_id = call.headers.get("client-request-id")
            response = error_response(error, error_body(error.code, error.message, request_id, client_id))
        except ClientGone:
            # Nobody reads this answer; the log says the client closed the request (nginx's 499).
            response = Response(status_code=CLIENT_CLOSED_REQUEST)
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            # A body of the wrong shape (e.g. a string where Graph wants an object) is the client's
            # error in Graph: 400. The traceback goes to stderr in case it is the simulator's.
            LOG.warning("answering 400 to %s %s", call.method, entry["path"], exc_info=True)
            body = error_body(
                "BadRequest",
                f"Invalid request: {type(error).__name__}",
                request_id,
                call.headers.get("client-request-id"),
            )
            response = error_response(GraphError(400, "BadRequest", "invalid"), body)
        entry["status"] = response.status_code
        self.log.add(entry)
        response.headers["request-id"] = request_id
        response.headers["client-request-id"] = call.headers.get("client-request-id", request_id)
        return response

    async def _dispatch(
        self,
        request: Request,
        call: Call,
        entry: Json,
        *,
        request_id: str,
        segments: list[str],
        query: dict[str, str],
    ) -> Response:
        """learn.microsoft.com/graph/auth/auth-concepts: every call carries a bearer token, else 401."""
        header = call.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        handler, params, pattern = self.router.resolve(call.method, segments)
        claims = self.tokens.claims(token.strip())
        needed = auth.route_roles(call.method, pattern)
        if needed is not None:
            auth.require(claims, *needed)
        ctx = Ctx(
            request=request,
            method=call.method,
            segments=segments,
            params=params,
            query=query,
            prefer=parse_prefer(call.headers.getlist("prefer")),
            base_url=f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}{API_PREFIX}",
            request_id=request_id,
            raw_body=call.body,
            claims=claims,
            if_match=call.headers.get("if-match"),
        )
        if "user" not in params:
            await self.faults.apply(None, call.method, entry["path"], request.is_disconnected)
            return await handler(ctx)
        ctx.box = self.store.user(params["user"], mailbox=pattern != "users/{user}")
        entry["user"] = ctx.box.id
        self.throttle.enter(ctx.box.id)
        try:
            await self.faults.apply(ctx.box.id, call.method, entry["path"], request.is_disconnected)
            response = await handler(ctx)
            self.faults.lose_answer(ctx.box.id, call.method, entry["path"])
            return response
        finally:
            self.throttle.leave(ctx.box.id)

    # -- subscriptions: learn.microsoft.com/graph/api/subscription-post-subscriptions & co ------

    async def list_subscriptions(self, ctx: Ctx) -> Response:
        self.notifier.purge_expired()
        values = [s.as_json() for s in self.notifier.subscriptions.values()]
        return collection(ctx, values, "subscriptions")

    @staticmethod
    def _subscription(ctx: Ctx, subscription: Subscription, status: int = 200) -> Response:
        body = {"@odata.context": ctx.context("subscriptions/$entity"), **subscription.as_json()}
        return json_response(ctx, body, status)

    def _may_subscribe(self, ctx: Ctx, kind: Kind, operation: str) -> None:
        """A subscription needs the read permission of its resource (subscription-post-subscriptions)."""
        auth.require(ctx.claims, auth.SUBSCRIPTION_ROLES[kind], "subscription", operation)

    def _owned(self, ctx: Ctx, operation: str) -> Subscription:
        subscription = self.notifier.live(ctx.params["subscription"])
        self._may_subscribe(ctx, subscription.kind, operation)
        return subscription

    async def create_subscription(self, ctx: Ctx) -> Response:
        body = ctx.json()
        if isinstance(body.get("resource"), str):
            self._may_subscribe(ctx, parse_resource(self.store, body["resource"])[1], "Create")
        return self._subscription(ctx, await self.notifier.create(body, ctx.immutable_ids), 201)

    async def get_subscription(self, ctx: Ctx) -> Response:
        return self._subscription(ctx, self._owned(ctx, "Get"))

    async def update_subscription(self, ctx: Ctx) -> Response:
        self._owned(ctx, "Update")
        return self._subscription(ctx, self.notifier.renew(ctx.params["subscription"], ctx.json()))

    async def delete_subscription(self, ctx: Ctx) -> Response:
        self._owned(ctx, "Delete")
        self.notifier.delete(ctx.params["subscription"])
        return json_response(ctx, None, 204)

    async def reauthorize_subscription(self, ctx: Ctx) -> Response:
        """subscription-reauthorize: answers 204 No Content."""
        self._owned(ctx, "Reauthorize")
        return json_response(ctx, None, 204)

    # -- control API (documented in simulators/graph/README.md) ----------------------------------

    def seed(self, box: Mailbox, spec: Json) -> Json:
        """Create items in bulk, as real changes (they show in delta and notify) without throttling."""
        created: Json = {}

        def make(kind: Kind, container: str, bodies: object, *, draft: bool = False) -> list[str]:
            if not isinstance(bodies, list):
                raise bad_request("Seed lists must be JSON arrays of Graph objects.")
            return [
                create_item(
                    self.store, box, kind, container, body, draft=bool(body.get("isDraft", draft))
                ).immutable_id
                for body in bodies
            ]

        if "contacts" in spec:
            created["contacts"] = make(Kind.CONTACT, box.default_contacts, spec["contacts"])
        if "contactFolders" in spec:
            created["contactFolders"] = {
                key: make(Kind.CONTACT, box.contact_folder(key).id, bodies)
                for key, bodies in dict(spec["contactFolders"]).items()
            }
        if "messages" in spec:
            created["messages"] = {
                key: make(Kind.MESSAGE, box.mail_folder(key).id, bodies)
                for key, bodies in dict(spec["messages"]).items()
            }
        if "events" in spec:
            created["events"] = make(Kind.EVENT, "calendar", spec["events"])
        if "todo" in spec:
            lists = {
                ("defaultList" if f.id == box.default_tasks else f.id): f.id for f in box.todo_lists.values()
            }
            created["todo"] = {}
            for key, bodies in dict(spec["todo"]).items():
                list_id = lists.get(key) or box.todo_list(key).id
                created["todo"][key] = make(Kind.TASK, list_id, bodies)
        if "categories" in spec:
            created["categories"] = []
            for category in spec["categories"]:
                new = {"id": str(uuid.uuid4()), "displayName": category["displayName"],
                       "color": category.get("color", "none")}  # fmt: skip
                box.categories[new["id"]] = new
                created["categories"].append(new["id"])
        return created

    def user_info(self, box: Mailbox) -> Json:
        return {
            **box.as_user(),
            "mailFolders": {f.well_known: f.id for f in box.mail_folders.values() if f.well_known},
            "defaultContactFolder": box.default_contacts,
            "defaultTodoList": box.default_tasks,
            "inFlightRequests": self.throttle.limits(box.id).in_flight,
        }

    async def control(self, request: Request) -> Response:
        parts = [p for p in request.url.path.split("/") if p][1:]
        method = request.method
        user = request.query_params.get("user")
        body: Json = {}
        if method in ("POST", "PATCH") and await request.body():
            parsed = await request.json()
            body = parsed if isinstance(parsed, dict) else {}
        try:
            return await self._control(method, parts, user, body)
        except GraphError as error:
            return JSONResponse(error_body(error.code, error.message, "control"), status_code=error.status)
        except (KeyError, TypeError, ValueError) as error:
            return JSONResponse(error_body("BadRequest", str(error), "control"), status_code=400)

    async def _control(self, method: str, parts: list[str], user: str | None, body: Json) -> Response:
        match (method, parts):
            case ("GET", ["health"]):
                return JSONResponse({"status": "ok"})
            case ("POST", ["reset"]):
                self.reset()
                return Response(status_code=204)
            case ("GET", ["config"]):
                return JSONResponse(self.config.as_json())
            case ("PATCH", ["config"]):
                self.config.update(body)
                return JSONResponse(self.config.as_json())
            case ("POST", ["users"]):
                box = self.store.add_user(
                    body.get("id"),
                    str(body["userPrincipalName"]),
                    str(body.get("displayName") or body["userPrincipalName"]),
                    str(body.get("mail") or body["userPrincipalName"]),
                )
                return JSONResponse(self.user_info(box), status_code=201)
            case ("GET", ["users", user_id]):
                return JSONResponse(self.user_info(self.store.user(user_id)))
            case ("PATCH", ["users", user_id, "limits"]):
                limits = self.throttle.limits(self.store.user(user_id).id)
                limits.budget = int(body["budget"]) if body.get("budget") is not None else None
                window = body.get("window_seconds")
                limits.window_seconds = float(window) if window is not None else None
                return JSONResponse({"budget": limits.budget, "window_seconds": limits.window_seconds})
            case ("POST", ["users", user_id, "seed"]):
                return JSONResponse(self.seed(self.store.user(user_id), body))
            case ("POST", ["users", user_id, "expire-delta-tokens"]):
                return JSONResponse({"expired": self.delta.expire(self.store.user(user_id).id)})
            case ("POST", ["tokens"]):
                return JSONResponse(self.tokens.issue(body, self.config.tenant_id), status_code=201)
            case ("POST", ["faults"]):
                return JSONResponse(self.faults.add(body).as_json(), status_code=201)
            case ("GET", ["faults"]):
                return JSONResponse(
                    [f.as_json() for f in self.faults.rules if user is None or f.user == user]
                )
            case ("DELETE", ["faults"]):
                return JSONResponse({"cleared": self.faults.clear(user)})
            case ("GET", ["requests"]):
                return JSONResponse(self.log.list(user))
            case ("DELETE", ["requests"]):
                self.log.clear(user)
                return Response(status_code=204)
            case ("GET", ["deliveries"]):
                return JSONResponse(self.notifier.delivery_log(user))
            case ("GET", ["subscriptions"]):
                self.notifier.purge_expired()
                subs = self.notifier.subscriptions.values()
                return JSONResponse([s.as_json() for s in subs if user is None or s.user_id == user])
            case ("POST", ["subscriptions", sub_id, "lifecycle"]):
                return JSONResponse(self.notifier.lifecycle(sub_id, str(body.get("event"))).as_json())
            case ("POST", ["subscriptions", sub_id, "expire"]):
                self.notifier.live(sub_id)
                del self.notifier.subscriptions[sub_id]
                return Response(status_code=204)
        unknown = f"No control endpoint {method} /_sim/{'/'.join(parts)}"
        return JSONResponse(error_body("NotFound", unknown, "control"),
                            status_code=404)  # fmt: skip


def create_app(simulator: Simulator | None = None) -> Starlette:
    sim = simulator or Simulator()

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await sim.notifier.close()

    app = Starlette(
        routes=[
            Route(API_PREFIX + "/{path:path}", sim.graph, methods=METHODS),
            Route("/_sim/{path:path}", sim.control, methods=METHODS),
        ],
        lifespan=lifespan,
    )
    app.state.simulator = sim
    return app
