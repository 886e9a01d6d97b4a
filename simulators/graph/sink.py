"""A real webhook endpoint for tests: answers Graph's validation handshake and records notifications.

It runs uvicorn in a background thread on a free loopback port, so the simulator's deliveries
travel over real HTTP. ``status``, ``delay`` and ``echo_validation`` make it misbehave the way
an unhealthy receiver would; ``validation_delay`` slows the validation handshake.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from simulators.ports import free_port, wait_for_port


@dataclass
class NotificationSink:
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    status: int = 202
    delay: float = 0.0
    validation_delay: float = 0.0
    echo_validation: bool = True
    received: list[dict[str, Any]] = field(default_factory=list)
    validations: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/notify"

    @property
    def lifecycle_url(self) -> str:
        return f"http://{self.host}:{self.port}/lifecycle"

    async def _handle(self, request: Request) -> Response:
        token = request.query_params.get("validationToken")
        if token is not None:
            with self._lock:
                self.validations.append(token)
            if self.validation_delay:
                await asyncio.sleep(self.validation_delay)
            if not self.echo_validation:
                return PlainTextResponse("nope", status_code=400)
            return PlainTextResponse(token)
        body = json.loads(await request.body())
        with self._lock:
            self.received.append({"path": request.url.path, "body": body, "at": time.monotonic()})
        if self.delay:
            await asyncio.sleep(self.delay)
        return Response(status_code=self.status)

    def notifications(self, path: str = "/notify") -> list[dict[str, Any]]:
        """Every notification object received on ``path``, flattened out of the value arrays."""
        with self._lock:
            return [n for r in self.received if r["path"] == path for n in r["body"]["value"]]

    def wait_for(self, count: int, *, path: str = "/notify", timeout: float = 10.0) -> list[dict[str, Any]]:
        """Poll until ``count`` notifications arrived on ``path``; raise on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.notifications(path)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise TimeoutError(f"{len(self.notifications(path))} of {count} notifications arrived on {path}")

    def start(self) -> NotificationSink:
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for_port(self.host, self.port, timeout=10)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> NotificationSink:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
