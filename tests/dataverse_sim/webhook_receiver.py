"""A small local HTTP server that receives Dataverse webhook posts, and a Web API registration helper."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx


class Receiver:
    """Records every POST; answers with the queued statuses first, then 200; optional delay."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.posts.append(
                        {
                            "query": parse_qs(urlsplit(self.path).query),
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": json.loads(body),
                            "size": length,
                            "status": status,
                        }
                    )
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/dataverse-hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def for_record(self, record_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for p in self.posts if p["body"].get("PrimaryEntityId") == record_id]

    def wait(self, record_id: str, count: int, seconds: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = self.for_record(record_id)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        return self.for_record(record_id)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def record_id_of(response: httpx.Response) -> str:
    assert response.status_code == 204, response.text
    return response.headers["OData-EntityId"].rsplit("(", 1)[-1].rstrip(")")


def _lookup(api: httpx.Client, query: str) -> str:
    rows = api.get(query).json()["value"]
    assert len(rows) == 1, rows
    return str(next(v for k, v in rows[0].items() if k.endswith("id") and not k.startswith("@")))


class Registration:
    def __init__(self, api: httpx.Client, url: str, key: str, authtype: int = 4) -> None:
        self.api = api
        self.endpoint = record_id_of(
            api.post(
                "serviceendpoints",
                json={
                    "name": f"hook-{uuid.uuid4().hex[:8]}",
                    "contract": 8,
                    "authtype": authtype,
                    "url": url,
                    "authvalue": key,
                },
            )
        )
        self.steps: list[str] = []

    def step(self, message: str, table: str, **extra: Any) -> str:
        message_id = _lookup(self.api, f"sdkmessages?$select=sdkmessageid&$filter=name eq '{message}'")
        filter_id = _lookup(
            self.api,
            "sdkmessagefilters?$select=sdkmessagefilterid&$filter=primaryobjecttypecode eq "
            f"'{table}' and _sdkmessageid_value eq {message_id}",
        )
        step_id = record_id_of(
            self.api.post(
                "sdkmessageprocessingsteps",
                json={
                    "name": f"crmsync {message} {table}",
                    "mode": 1,
                    "stage": 40,
                    "sdkmessageid@odata.bind": f"/sdkmessages({message_id})",
                    "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({filter_id})",
                    "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({self.endpoint})",
                    **extra,
                },
            )
        )
        self.steps.append(step_id)
        return step_id

    def remove(self) -> None:
        for step_id in self.steps:
            self.api.delete(f"sdkmessageprocessingsteps({step_id})")
        self.api.delete(f"serviceendpoints({self.endpoint})")
