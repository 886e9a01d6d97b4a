"""A small local stand-in for the Azure Functions host (`func start`) for the v2 Python model.

Azure Functions Core Tools cannot be installed offline, so this runner loads the
same ``function_app.app`` the real host indexes and runs its triggers the way
the host documents them, so the very same handler code runs here as in Azure:

- HTTP triggers under ``/api/<route>`` (host.json ``routePrefix``), with route
  parameters, methods and auth levels: ``anonymous``; ``function`` needs the
  function key or the master key in ``x-functions-key`` or ``?code=``; ``admin``
  needs the master key ("Azure Functions HTTP trigger", section "Authorization
  level" and "Obtaining keys").
- Queue triggers polled from Azure Queue Storage (Azurite) with the host.json
  ``queues`` settings: base64 messages, ``batchSize``, ``newBatchThreshold``,
  ``visibilityTimeout`` (after a failure; a running message stays hidden and is renewed, as the
  host keeps it), ``maxDequeueCount`` and a ``<queue>-poison`` queue for
  messages that failed that often, polled as the host polls: 100 ms after a poll
  that found messages, about 200 ms after an empty one, doubling up to
  ``maxPollingInterval``; a new batch is fetched once the messages in flight are
  down to ``newBatchThreshold``, so a long job never holds the others back
  ("Azure Queue storage trigger for Azure Functions", sections "Poison
  messages", "Polling algorithm", "Concurrency" and "host.json settings",
  learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger).
- Timer triggers on six-field NCRONTAB schedules ("Timer trigger for Azure
  Functions", section "NCRONTAB expressions"), ``runOnStartup``, and the host's
  admin API to run a non-HTTP function on demand: ``POST /admin/functions/<name>``
  with the master key answers 202 ("Manually run a non HTTP-triggered function").
- ``%NAME%`` binding expressions resolved from app settings (environment).

It is a development tool: it is never deployed and imports the app by name,
exactly like the host does, instead of importing the connector's packages.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hmac
import importlib
import inspect
import json
import logging
import os
import re
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
import uvicorn
from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue.aio import QueueClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

log = logging.getLogger("simulators.functions_host")
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- NCRONTAB


_FIELD_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def _parse_cron_field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        step = 1
        part = item
        if "/" in item:
            part, step_text = item.split("/", 1)
            step = int(step_text)
            if step <= 0:
                raise ValueError(f"bad NCRONTAB step in {text!r}")
        if part == "*":
            start, end = low, high
        elif "-" in part:
            start_text, end_text = part.split("-", 1)
            start, end = int(start_text), int(end_text)
        else:
            start = int(part)
            end = high if step > 1 else start
        if not (low <= start <= end <= high):
            raise ValueError(f"NCRONTAB value out of range in {text!r}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class NCrontab:
    """``{second} {minute} {hour} {day} {month} {day-of-week}``, as the Functions timer uses."""

    fields: tuple[frozenset[int], ...]

    @classmethod
    def parse(cls, expression: str) -> NCrontab:
        parts = expression.split()
        if len(parts) != 6:
            raise ValueError(f"NCRONTAB needs six fields (second first), got {expression!r}")
        return cls(
            tuple(_parse_cron_field(p, lo, hi) for p, (lo, hi) in zip(parts, _FIELD_RANGES, strict=True))
        )

    def matches(self, when: dt.datetime) -> bool:
        second, minute, hour, day, month, weekday = self.fields
        return (
            when.second in second
            and when.minute in minute
            and when.hour in hour
            and when.day in day
            and when.month in month
            and (when.isoweekday() % 7) in weekday
        )

    def next_after(self, when: dt.datetime) -> dt.datetime:
        """The first matching whole second after ``when`` (searches at most ~400 days)."""
        candidate = when.replace(microsecond=0) + dt.timedelta(seconds=1)
        for _ in range(400 * 24 * 3600):
            if self.matches(candidate):
                return candidate
            candidate += dt.timedelta(seconds=1)
        raise ValueError("schedule never fires")


# --------------------------------------------------------------------------- the host


_SETTING = re.compile(r"%([A-Za-z0-9_]+)%")


def resolve(value: str) -> str:
    """Resolve ``%NAME%`` binding expressions from app settings, as the host does."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise KeyError(f"app setting {name} is referenced by a binding but not set")
        return os.environ[name]

    return _SETTING.sub(lookup, value)


@dataclass
class HttpFunction:
    name: str
    pattern: re.Pattern[str]
    methods: frozenset[str]
    auth_level: str
    handler: Callable[..., Any]
    arg_name: str


@dataclass
class QueueFunction:
    name: str
    queue_name: str
    handler: Callable[..., Any]
    arg_name: str


@dataclass
class TimerFunction:
    name: str
    schedule: NCrontab
    run_on_startup: bool
    handler: Callable[..., Any]
    arg_name: str


@dataclass
class QueueSettings:
    """The subset of host.json ``extensions.queues`` the runner honours."""

    batch_size: int = 16
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 2.0
    new_batch_threshold: int | None = None  # None: batchSize / 2, the host's default on one instance
    # How long a received message stays hidden while its function runs, renewed at half of it. The
    # host's is fixed at 10 minutes (azure-webjobs-sdk QueueListener); the sandbox shortens it with
    # CRMSYNC_RUNNER_MESSAGE_LEASE_SECONDS, so a killed runner's messages come back within seconds.
    message_lease: float = 600.0

    @classmethod
    def from_host_json(cls, path: Path) -> QueueSettings:
        """host.json's values, each overridable by an ``AzureFunctionsJobHost__extensions__queues__<name>``
        app setting, as the host allows (learn.microsoft.com/azure/azure-functions/functions-host-json,
        "Override host.json values")."""
        queues = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
        prefix = "AzureFunctionsJobHost__extensions__queues__"
        queues |= {k.removeprefix(prefix): v for k, v in os.environ.items() if k.startswith(prefix)}
        threshold = queues.get("newBatchThreshold")
        return cls(
            batch_size=int(queues.get("batchSize", 16)),
            new_batch_threshold=None if threshold is None else int(threshold),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=_timespan_seconds(queues.get("visibilityTimeout", "00:00:00")),
            max_polling_interval=_timespan_seconds(queues.get("maxPollingInterval", "00:00:02")),
            message_lease=float(os.environ.get("CRMSYNC_RUNNER_MESSAGE_LEASE_SECONDS", "600")),
        )

    @property
    def refill_at(self) -> int:
        """Fetch the next batch once no more than this many messages are in flight."""
        return self.batch_size // 2 if self.new_batch_threshold is None else self.new_batch_threshold


@dataclass
class PollDelay:
    """The queue trigger's pause before its next poll ("Polling algorithm"): 100 ms after a poll
    that found messages, about 200 ms after the first empty one, then doubling up to
    ``maxPollingInterval``."""

    maximum: float
    _empty: int = 0

    def next(self, *, found: bool) -> float:
        if found:
            self._empty = 0
            return min(0.1, self.maximum)
        self._empty += 1
        return min(0.2 * 2.0 ** (self._empty - 1), self.maximum)


def _timespan_seconds(text: str) -> float:
    hours, minutes, seconds = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _route_pattern(route: str) -> re.Pattern[str]:
    """Turn ``admin/mailboxes/{id}`` (optionally ``{id?}`` / ``{id:guid}``) into a regex."""
    regex = ""
    for piece in re.split(r"(\{[^}]+\})", route.strip("/")):
        if piece.startswith("{"):
            name = piece[1:-1].split(":")[0].rstrip("?")
            optional = piece.endswith("?}")
            regex += f"(?P<{name}>[^/]+)" + ("?" if optional else "")
        else:
            regex += re.escape(piece)
    return re.compile(f"^{regex}/?$", re.IGNORECASE)


async def _call(handler: Callable[..., Any], **kwargs: Any) -> Any:
    """Call a sync or async user function; sync ones run on a worker thread like the host."""
    if inspect.iscoroutinefunction(handler):
        return await handler(**kwargs)
    return await asyncio.to_thread(handler, **kwargs)


@dataclass
class FunctionsHost:
    """Indexes an ``azure.functions.FunctionApp`` and runs its triggers locally."""

    app: func.FunctionApp
    storage_connection_string: str
    master_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    function_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    queue_settings: QueueSettings = field(default_factory=QueueSettings)
    # The app module's ``shutdown()`` coroutine, awaited when the host stops (it closes the app's
    # clients); the real host ends the worker process instead.
    on_shutdown: Callable[[], Awaitable[None]] | None = None
    http: list[HttpFunction] = field(default_factory=list)
    queues: list[QueueFunction] = field(default_factory=list)
    timers: list[TimerFunction] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for function in self.app.get_functions():
            trigger = function.get_trigger()
            name = str(function.get_function_name())
            if trigger is None:
                raise ValueError(f"{name}: a function without a trigger cannot run")
            spec = trigger.get_dict_repr()
            handler = function.get_user_function()
            kind = spec["type"]
            if kind == "httpTrigger":
                methods = spec.get("methods") or list(func.HttpMethod)
                self.http.append(
                    HttpFunction(
                        name=name,
                        pattern=_route_pattern(str(spec.get("route") or name)),
                        methods=frozenset(str(getattr(m, "value", m)).upper() for m in methods),
                        auth_level=str(
                            getattr(spec.get("authLevel"), "value", spec.get("authLevel"))
                        ).lower(),
                        handler=handler,
                        arg_name=spec["name"],
                    )
                )
            elif kind == "queueTrigger":
                self.queues.append(QueueFunction(name, resolve(spec["queueName"]), handler, spec["name"]))
            elif kind == "timerTrigger":
                self.timers.append(
                    TimerFunction(
                        name,
                        NCrontab.parse(resolve(spec["schedule"])),
                        bool(spec.get("runOnStartup")),
                        handler,
                        spec["name"],
                    )
                )
            else:
                raise ValueError(f"{name}: the local runner does not support {kind} triggers")

    # ------------------------------------------------------------------ HTTP

    def _authorized(self, level: str, request: Request) -> bool:
        presented = request.headers.get("x-functions-key") or request.query_params.get("code") or ""
        if level == "anonymous":
            return True
        keys = [self.master_key] if level == "admin" else [self.master_key, self.function_key]
        return any(hmac.compare_digest(presented.encode(), key.encode()) for key in keys)

    async def _dispatch_http(self, request: Request) -> Response:
        path = request.path_params["path"]
        route_exists = False
        for function in self.http:
            match = function.pattern.match(path)
            if not match:
                continue
            route_exists = True
            if request.method not in function.methods:
                continue  # another function may serve this method on the same route
            if not self._authorized(function.auth_level, request):
                return Response(status_code=401)
            http_request = func.HttpRequest(
                method=request.method,
                url=str(request.url),
                headers=dict(request.headers),
                params=dict(request.query_params),
                route_params={k: v for k, v in match.groupdict().items() if v is not None},
                body=await request.body(),
            )
            try:
                result = await _call(function.handler, **{function.arg_name: http_request})
            except Exception:
                log.exception("function %s failed", function.name)
                return Response(status_code=500)
            return Response(
                content=result.get_body(),
                status_code=result.status_code,
                headers={k: v for k, v in result.headers.items() if k.lower() != "content-length"},
                media_type=result.mimetype,
            )
        return Response(status_code=405 if route_exists else 404)

    async def _run_function(self, request: Request) -> Response:
        """``POST /admin/functions/{name}``: the host's way to run a timer or queue function now."""
        if not self._authorized("admin", request):
            return Response(status_code=401)
        name = request.path_params["name"]
        body = await request.body()
        payload = json.loads(body or b"{}").get("input", "")
        for timer in self.timers:
            if timer.name == name:
                await _call(timer.handler, **{timer.arg_name: TimerRequest(past_due=False)})
                return Response(status_code=202)
        for queue in self.queues:
            if queue.name == name:
                message = QueueMessage(id="manual", body=str(payload), dequeue_count=1)  # type: ignore[no-untyped-call]
                await _call(queue.handler, **{queue.arg_name: message})
                return Response(status_code=202)
        return Response(status_code=404)

    def asgi(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/admin/functions/{name}", self._run_function, methods=["POST"]),
                Route(
                    "/api/{path:path}",
                    self._dispatch_http,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
                ),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Starlette) -> Any:
        await self.start_background()
        try:
            yield
        finally:
            await self.stop_background()
            if self.on_shutdown is not None:
                await self.on_shutdown()

    # ------------------------------------------------------------------ queues and timers

    async def start_background(self) -> None:
        for queue in self.queues:
            self._tasks.append(asyncio.create_task(self._poll_queue(queue), name=f"queue:{queue.name}"))
        for timer in self.timers:
            self._tasks.append(asyncio.create_task(self._run_timer(timer), name=f"timer:{timer.name}"))

    async def stop_background(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _queue_client(self, name: str) -> QueueClient:
        return QueueClient.from_connection_string(self.storage_connection_string, name)

    async def _poll_queue(self, function: QueueFunction) -> None:
        settings = self.queue_settings
        async with (
            self._queue_client(function.queue_name) as queue,
            self._queue_client(function.queue_name + "-poison") as poison,
        ):
            for client in (queue, poison):
                with contextlib.suppress(ResourceExistsError):
                    await client.create_queue()
            delay = PollDelay(settings.max_polling_interval)
            in_flight: set[asyncio.Task[None]] = set()
            try:
                while True:
                    while len(in_flight) > settings.refill_at:
                        await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    try:
                        received = [
                            message
                            async for message in queue.receive_messages(
                                messages_per_page=settings.batch_size,
                                max_messages=settings.batch_size,
                                visibility_timeout=max(1, int(settings.message_lease)),
                            )
                        ]
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.warning("queue %s: receive failed; retrying", function.queue_name, exc_info=True)
                        received = []
                    for message in received:
                        task = asyncio.create_task(self._handle(function, queue, poison, message))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                    await asyncio.sleep(delay.next(found=bool(received)))
            finally:
                for task in list(in_flight):
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _handle(
        self, function: QueueFunction, queue: QueueClient, poison: QueueClient, message: Any
    ) -> None:
        body = base64.b64decode(message.content)
        if message.dequeue_count > self.queue_settings.max_dequeue_count:
            await poison.send_message(message.content)
            await queue.delete_message(message)
            log.warning("queue %s: message %s moved to poison queue", function.queue_name, message.id)
            return
        trigger = QueueMessage(  # type: ignore[no-untyped-call]
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            insertion_time=message.inserted_on,
            expiration_time=message.expires_on,
            pop_receipt=message.pop_receipt,
        )
        receipt: list[str | None] = [message.pop_receipt]  # each renewal gives the message a new pop receipt
        done = asyncio.Event()
        hidden = asyncio.create_task(self._keep_hidden(queue, message.id, receipt, done))
        try:
            await _call(function.handler, **{function.arg_name: trigger})
        except Exception:
            # Like the host: the message becomes visible again after the visibility timeout.
            log.warning(
                "queue %s: function %s failed (attempt %d)",
                function.queue_name,
                function.name,
                message.dequeue_count,
                exc_info=True,
            )
            done.set()
            await hidden
            with contextlib.suppress(Exception):
                await queue.update_message(
                    message.id,
                    pop_receipt=receipt[0],
                    visibility_timeout=int(self.queue_settings.visibility_timeout),
                )
            return
        done.set()
        await hidden
        await queue.delete_message(message.id, pop_receipt=receipt[0])

    async def _keep_hidden(
        self, queue: QueueClient, message_id: str, receipt: list[str | None], done: asyncio.Event
    ) -> None:
        """Renew the running message's invisibility at half its lease, as the host does
        (``UpdateQueueMessageVisibilityCommand``), so a long run is never delivered twice. Stopped by
        ``done``, never in the middle of a renewal: a renewal cancelled after storage applied it
        left the old pop receipt, and the message's delete failed (PopReceiptMismatch) and it ran
        twice."""
        lease = max(1, int(self.queue_settings.message_lease))
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(lease / 2):
                    await done.wait()
                return
            with contextlib.suppress(Exception):  # the next renewal tries again; the lease may lapse
                updated = await queue.update_message(
                    message_id, pop_receipt=receipt[0], visibility_timeout=lease
                )
                receipt[0] = updated.pop_receipt

    async def _run_timer(self, function: TimerFunction) -> None:
        if function.run_on_startup:
            await self._fire(function)
        while True:
            now = dt.datetime.now(dt.UTC)
            due = function.schedule.next_after(now)
            await asyncio.sleep((due - now).total_seconds())
            await self._fire(function)

    async def _fire(self, function: TimerFunction) -> None:
        try:
            await _call(function.handler, **{function.arg_name: TimerRequest(past_due=False)})
        except Exception:
            log.exception("timer %s failed", function.name)


def load_settings_file(path: Path) -> None:
    """Put ``local.settings.json``'s ``Values`` into the environment, as ``func start`` does."""
    values = json.loads(path.read_text()).get("Values", {})
    for key, value in values.items():
        os.environ.setdefault(key, str(value))


def build_host(
    app_module: str = "function_app", *, master_key: str | None = None, function_key: str | None = None
) -> FunctionsHost:
    """Import the app by module name (like the host's indexer) and wrap it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    module = importlib.import_module(app_module)
    return FunctionsHost(
        app=module.app,
        storage_connection_string=os.environ["AzureWebJobsStorage"],
        queue_settings=QueueSettings.from_host_json(ROOT / "host.json"),
        master_key=master_key or secrets.token_urlsafe(32),
        function_key=function_key or secrets.token_urlsafe(32),
        on_shutdown=getattr(module, "shutdown", None),
    )


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run function_app locally (a stand-in for `func start`).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument(
        "--settings", type=Path, help="a local.settings.json whose Values become app settings"
    )
    parser.add_argument("--app", default="function_app")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.settings:
        load_settings_file(args.settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = build_host(
        args.app,
        master_key=os.environ.get("CRMSYNC_LOCAL_MASTER_KEY"),
        function_key=os.environ.get("CRMSYNC_LOCAL_FUNCTION_KEY"),
    )
    uvicorn.run(host.asgi(), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
