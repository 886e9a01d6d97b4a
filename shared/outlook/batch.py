"""Microsoft Graph JSON batching through the ``GraphServiceClient``'s own request adapter.

"Combine multiple HTTP requests using JSON batching" (learn.microsoft.com/graph/json-batching):
``POST {base}/$batch`` with ``{"requests": [{"id", "method", "url", "headers", "body"}]}``, at most
20 requests, answered ``{"responses": [{"id", "status", "headers", "body"}]}`` in any order. Each
request is authorised and throttled as if sent alone, so a 200 batch may carry 429 answers with a
``Retry-After`` ("Microsoft Graph throttling guidance", learn.microsoft.com/graph/throttling).

Each request is built by the SDK's own request builder (``to_get_request_information`` &c.), so its
url, query and body are exactly what the single call would send. The batch is posted through
``client.request_adapter``: the same httpx client and middleware (authentication, msgraph-core's
retry handler for the batch request itself, telemetry) as every other call.

Why not msgraph-core's ``BatchRequestBuilder`` (``client.batch``): in msgraph-core 1.5.2 it imports
the ``deprecated`` package, which msgraph-core does not declare (ImportError here); it also writes
``dependsOn`` as ``depends_on``, sends absolute urls and reads answer bodies as base64, losing
Graph's JSON bodies.

Retries: the retry handler only sees the batch's own status. Inner 429/503/504 answers are retried
here, only those requests, at most ``max_attempts`` times in all, after the longest ``Retry-After``
among them (a wait longer than ``max_wait_seconds`` is not waited for: the caller gets the throttled
answer, i.e. :class:`~shared.outlook.errors.GraphThrottled`, and the queue retries the job later).
That is the one retry layer for batched requests (docs/ARCHITECTURE.md).

``Prefer: IdType="ImmutableId"`` goes into every request's own headers: the client's middleware only
sees the batch's HTTP request, and the preference must hold for each request in it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_abstractions.serialization import Parsable, ParsableFactory
from kiota_serialization_json.json_parse_node import JsonParseNode
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_service_client import GraphServiceClient

from shared.outlook.client import IMMUTABLE_ID_PREFERENCE
from shared.outlook.errors import GraphError, ItemNotFound, graph_errors, translate_api_error

MAX_BATCH_REQUESTS = 20  # json-batching: "up to 20 requests"
RETRYABLE_STATUSES = frozenset({429, 503, 504})
_ERROR_MAPPING: dict[str, type[ParsableFactory[Any]]] = {"XXX": ODataError}

ModelT = TypeVar("ModelT", bound=Parsable)


@dataclass(frozen=True)
class BatchAnswer:
    """One request's answer inside a batch."""

    status: int
    headers: Mapping[str, str]
    body: Any  # the JSON body (usually an object), or None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def model(self, factory: ParsableFactory[ModelT]) -> ModelT:
        """The body as an SDK model, parsed by the SDK's JSON parse node (as for a single call)."""
        return JsonParseNode(self.body if isinstance(self.body, dict) else {}).get_object_value(factory)

    def error(self) -> GraphError:
        """The typed error the same answer would have raised as a single call (errors.py's mapping)."""
        odata = self.model(ODataError)
        odata.response_status_code = self.status
        odata.response_headers = dict(self.headers)
        return translate_api_error(odata)


def _relative_url(info: RequestInformation, base_url: str) -> str:
    """The request's url relative to the version, as the batch wants it; the base is set the way the
    request adapter sets it before sending a single call."""
    info.path_parameters["baseurl"] = base_url
    url = str(info.url)
    if not url.startswith(base_url):
        raise ValueError("a batched request must address the client's own Graph base URL")
    return "/" + url[len(base_url) :].lstrip("/")


def retry_after_seconds(answer: BatchAnswer) -> float:
    """Retry-After in seconds or as an HTTP date (RFC 9110); 1 s when Graph sent none or garbage."""
    raw = answer.header("Retry-After")
    if raw is None:
        return 1.0
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return 1.0
    return max(0.0, when.timestamp() - time.time())


class GraphBatch:
    """Sends many Graph requests in as few ``$batch`` calls as Graph allows."""

    def __init__(
        self,
        client: GraphServiceClient,
        *,
        max_attempts: int = 4,
        max_wait_seconds: float = 10.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._adapter = client.request_adapter
        self._max_attempts = max_attempts
        self._max_wait = max_wait_seconds

    async def send(self, requests: Mapping[str, RequestInformation]) -> dict[str, BatchAnswer]:
        """Send each request (keyed by the caller's own key) and return the answers by the same key.

        Batches of at most 20 go out one after another (Graph runs four requests of a batch at a time
        per mailbox; parallel batches would only be throttled). Inner 429/503/504 are retried as the
        module docstring says; any other answer, success or error, is returned as is.
        """
        base_url = str(self._adapter.base_url).rstrip("/")
        items = {key: self._item(info, base_url) for key, info in requests.items()}
        answers: dict[str, BatchAnswer] = {}
        pending = list(items)
        for attempt in range(1, self._max_attempts + 1):
            for start in range(0, len(pending), MAX_BATCH_REQUESTS):
                chunk = pending[start : start + MAX_BATCH_REQUESTS]
                answers.update(await self._post({key: items[key] for key in chunk}))
            pending = [key for key in pending if answers[key].status in RETRYABLE_STATUSES]
            if not pending or attempt == self._max_attempts:
                break
            wait = max(retry_after_seconds(answers[key]) for key in pending)
            if wait > self._max_wait:
                break
            await asyncio.sleep(wait)
        return answers

    async def send_or_missing(
        self, requests: Mapping[str, RequestInformation]
    ) -> dict[str, BatchAnswer | None]:
        """Like :meth:`send`, for requests that address one item each: ``None`` where the item is gone
        (:class:`~shared.outlook.errors.ItemNotFound`); any other failure raises its typed error, as
        the single call would (a missing mailbox is ``MailboxNotFound``, not a missing item)."""
        results: dict[str, BatchAnswer | None] = {}
        for key, answer in (await self.send(requests)).items():
            if answer.ok:
                results[key] = answer
                continue
            error = answer.error()
            if not isinstance(error, ItemNotFound):
                raise error
            results[key] = None
        return results

    @staticmethod
    def _item(info: RequestInformation, base_url: str) -> dict[str, Any]:
        """One batch request from the SDK's request information (method, url, headers, body)."""
        given = info.request_headers or {}
        headers = {name: value for name, value in given.items() if name.lower() != "prefer"}
        preferences = [
            value.strip()
            for name, values in given.items()
            if name.lower() == "prefer"
            for value in values.split(",")
            if value.strip()
        ]
        if not any(value.lower().startswith("idtype=") for value in preferences):
            preferences.append(IMMUTABLE_ID_PREFERENCE)
        headers["Prefer"] = ", ".join(preferences)
        item: dict[str, Any] = {
            "method": info.http_method.value if isinstance(info.http_method, Method) else "GET",
            "url": _relative_url(info, base_url),
            "headers": headers,
        }
        if info.content:
            item["body"] = json.loads(info.content)
        return item

    async def _post(self, items: Mapping[str, dict[str, Any]]) -> dict[str, BatchAnswer]:
        """One ``$batch`` call; batch ids are positions, mapped back to the caller's keys."""
        keys: Sequence[str] = list(items)
        payload = {"requests": [{"id": str(i), **items[key]} for i, key in enumerate(keys)]}
        info = RequestInformation(Method.POST)
        info.url = f"{str(self._adapter.base_url).rstrip('/')}/$batch"
        info.headers.try_add("Content-Type", "application/json")
        info.headers.try_add("Accept", "application/json")
        info.content = json.dumps(payload).encode("utf-8")
        # kiota types the answer by an unbound TypeVar; for "bytes" it is the raw body.
        send = cast(Callable[..., Awaitable[bytes | None]], self._adapter.send_primitive_async)
        with graph_errors():
            raw = await send(info, "bytes", _ERROR_MAPPING)
        if not raw:
            raise GraphError("Graph answered a batch without a body")
        answers: dict[str, BatchAnswer] = {}
        for response in json.loads(raw).get("responses", []):
            key = keys[int(response["id"])]
            headers = {str(k): str(v) for k, v in dict(response.get("headers") or {}).items()}
            answers[key] = BatchAnswer(int(response["status"]), headers, response.get("body"))
        missing = [key for key in keys if key not in answers]
        if missing:
            raise GraphError(f"Graph's batch answer lacks {len(missing)} of its requests")
        return answers
