"""The one way crmsync builds a Graph client: msgraph-sdk over msgraph-core's middleware pipeline.

Every request carries ``Prefer: IdType="ImmutableId"`` (learn.microsoft.com/graph/outlook-immutable-id,
"Obtain immutable identifiers for Outlook resources"): ids then survive moves between folders, so
the link map never goes stale when a user files a message. The header is added by a middleware, not
per call, so no code path can forget it.

Retries are msgraph-core's ``RetryHandler`` only (429/503/504, honouring ``Retry-After``;
learn.microsoft.com/graph/throttling "Microsoft Graph throttling guidance"); nothing in
``shared.outlook`` retries on top of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import httpx
from azure.core.credentials_async import AsyncTokenCredential
from kiota_abstractions.request_option import RequestOption
from kiota_abstractions.serialization import ParseNode
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_http.middleware.middleware import BaseMiddleware
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.generated.models.entity import Entity
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import APIVersion, GraphClientFactory
from msgraph_core.middleware import GraphTelemetryHandler
from msgraph_core.middleware.options import GraphTelemetryHandlerOption

from shared.outlook.pacing import MailboxPacer, PacingHandler

GRAPH_DEFAULT_SCOPES = ("https://graph.microsoft.com/.default",)
_SDK_ENTITY_DESERIALIZERS = Entity.get_field_deserializers


def _entity_fields(self: Entity) -> dict[str, Callable[[ParseNode], None]]:
    """``Entity``'s own two fields, as msgraph-sdk's generated method returns them.

    The generated method first runs ~1,500 ``from .x import X`` statements that only serve type
    checking, on every call, and every model it parses calls it (each contact, event, message and
    extended property): measured at ~50 % of an initial sync's CPU. The result is identical;
    tests/outlook/test_client.py compares both on every SDK version we install."""
    return {
        "id": lambda n: setattr(self, "id", n.get_str_value()),
        "@odata.type": lambda n: setattr(self, "odata_type", n.get_str_value()),
    }


Entity.get_field_deserializers = _entity_fields  # type: ignore[method-assign]
IMMUTABLE_ID_PREFERENCE = 'IdType="ImmutableId"'


class ImmutableIdHandler(BaseMiddleware):
    """Adds ``IdType="ImmutableId"`` to the request's ``Prefer`` header, keeping other preferences.

    ``Prefer`` may carry several comma-separated preferences (RFC 7240), e.g. the delta readers'
    ``odata.maxpagesize``; those are kept.
    """

    async def send(self, request: httpx.Request, transport: httpx.AsyncBaseTransport) -> httpx.Response:
        preferences = [value.strip() for value in request.headers.get_list("Prefer", split_commas=True)]
        if not any(value.lower().startswith("idtype=") for value in preferences):
            preferences.append(IMMUTABLE_ID_PREFERENCE)
            request.headers["Prefer"] = ", ".join(value for value in preferences if value)
        return await super().send(request, transport)


def _pipeline(
    *, max_retries: int, retry_delay: float, pacer: MailboxPacer | None = None
) -> list[BaseMiddleware]:
    options: dict[str, RequestOption] = {
        RetryHandlerOption.get_key(): RetryHandlerOption(delay=retry_delay, max_retries=max_retries),
    }
    middleware = KiotaClientFactory.get_default_middleware(options)
    middleware.append(ImmutableIdHandler())
    middleware.append(GraphTelemetryHandler(options=GraphTelemetryHandlerOption(api_version=APIVersion.v1)))
    if pacer is not None:  # last, after the retry handler: its retries are paced too
        middleware.append(PacingHandler(pacer))
    return middleware


def build_graph_client(
    credential: AsyncTokenCredential,
    *,
    base_url: str,
    scopes: Sequence[str] = GRAPH_DEFAULT_SCOPES,
    max_retries: int = 5,
    retry_delay: float = 0.0,
    timeout_seconds: float = 60.0,
    http_client: httpx.AsyncClient | None = None,
    pacer: MailboxPacer | None = None,
) -> GraphServiceClient:
    """A ``GraphServiceClient`` talking to ``base_url`` (e.g. ``https://graph.microsoft.com/v1.0``).

    ``max_retries`` and ``retry_delay`` configure msgraph-core's retry handler: ``retry_delay`` is a
    base delay it adds to its exponential backoff when Graph sends no ``Retry-After`` (Graph's own
    ``Retry-After`` always wins). Tokens are only sent to ``base_url``'s host. Pass ``http_client``
    to own (and close) the connection pool yourself; its transport is wrapped in the middleware.
    ``pacer`` holds each mailbox's requests under Outlook's request budget (``shared.outlook.pacing``).
    """
    base = base_url.rstrip("/")
    host = urlsplit(base).hostname
    if not host:
        raise ValueError("base_url must be an absolute URL")
    auth = AzureIdentityAuthenticationProvider(credential, scopes=list(scopes), allowed_hosts=[host])
    http_client = GraphClientFactory.create_with_custom_middleware(
        _pipeline(max_retries=max_retries, retry_delay=retry_delay, pacer=pacer),
        client=http_client
        or httpx.AsyncClient(timeout=httpx.Timeout(timeout_seconds, connect=10.0), http2=True),
    )
    adapter = GraphRequestAdapter(auth, client=http_client)
    adapter.base_url = base
    return GraphServiceClient(request_adapter=adapter)
