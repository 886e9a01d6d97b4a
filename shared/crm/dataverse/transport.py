"""Sending one Dataverse Web API request: the bearer token, impersonation, the per-user cap, one retry layer.

- webapi/compose-http-requests-handle-errors: OData headers, error bodies.
- webapi/impersonate-another-user-web-api: the ``CallerObjectId`` header (Entra object id).
- api-limits ("Service protection API limits"): 429 with ``Retry-After``; retry after that delay.

One retry layer: tenacity around each HTTP call: 429 always (Dataverse rejected it unprocessed); 5xx and
dropped connections only for requests whose replay cannot double a write (everything but a create
without a client-chosen id; a replayed conditional write may at worst fail its condition). A ``$batch``
is one call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Mapping
from typing import Protocol

import httpx
from azure.core.credentials import AccessToken
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.crm.dataverse.wire import Request
from shared.crm.errors import (
    AuthenticationFailed,
    CrmError,
    CrmUnavailable,
    ServiceProtectionLimit,
    caller_not_found,
    error_from_response,
)

_log = logging.getLogger(__name__)

_TOKEN_REFRESH_MARGIN_S = 300
_ODATA_HEADERS = {"OData-MaxVersion": "4.0", "OData-Version": "4.0", "Accept": "application/json"}


class AsyncTokenSource(Protocol):
    """What the adapter needs from a credential: any azure-identity async ``TokenCredential`` fits."""

    async def get_token(self, *scopes: str) -> AccessToken: ...


class _NotSent(CrmUnavailable):
    """The connection failed before the request left: safe to retry even a create without an id."""


class Transport:
    """The HTTP side of :class:`~shared.crm.dataverse.client.DataverseClient` (its options are documented
    there); :meth:`send` is the one way a request reaches Dataverse."""

    def __init__(
        self,
        base_api_url: str,
        credential: AsyncTokenSource,
        *,
        scope: str,
        max_concurrency_per_user: int,
        max_attempts: int,
        max_retry_wait: float,
        http_client: httpx.AsyncClient | None,
        timeout_seconds: float,
    ) -> None:
        if max_concurrency_per_user < 1 or max_attempts < 1:
            raise ValueError("max_concurrency_per_user and max_attempts must be at least 1")
        self.base = base_api_url.rstrip("/")
        self._credential = credential
        self._scope = scope
        self._max_concurrency = max_concurrency_per_user
        self._max_attempts = max_attempts
        self._max_retry_wait = max_retry_wait
        self._backoff = wait_exponential_jitter(multiplier=0.5, max=max_retry_wait, jitter=0.5)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds, connect=10.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        self._token: AccessToken | None = None
        self._token_lock = asyncio.Lock()
        self._slots: weakref.WeakValueDictionary[str, asyncio.Semaphore] = weakref.WeakValueDictionary()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

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

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

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

    async def send(
        self,
        request: Request,
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
        request: Request,
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
                request.method, url or self.url(request.path), headers=headers, params=params, content=body
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
        if response.status_code >= 400 and not _answered_batch(request, response):
            error = error_from_response(response.status_code, response.content, response.headers)
            raise caller_not_found(error, caller)
        return response


def _answered_batch(request: Request, response: httpx.Response) -> bool:
    """A ``$batch`` that stopped at a failed request (no continue-on-error, or a failed change set) is
    answered 400 with the responses in its multipart body (execute-batch-operations-using-web-api,
    "Handling errors"): those are the operations' answers, not an error of the batch."""
    return (
        request.path == "$batch"
        and response.status_code == 400
        and response.headers.get("content-type", "").startswith("multipart/mixed")
    )
