"""Credentials for Graph: the sandbox's fixed token, or the Entra app's real identity from settings.

``federated`` follows "Configure an application to trust a managed identity" (learn.microsoft.com
/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity): the function
app's user-assigned managed identity gets a token for ``api://AzureADTokenExchange`` and hands it
to ``ClientAssertionCredential`` as the app's client assertion, so no secret exists anywhere.
``certificate`` uses ``CertificateCredential`` with the PEM or PKCS#12 the Key Vault reference
resolves to.
"""

from __future__ import annotations

import base64
import binascii
import time
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from azure.identity import ManagedIdentityCredential
from azure.identity.aio import CertificateCredential, ClientAssertionCredential

from shared.config import CredentialKind, Settings

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"
SANDBOX_TOKEN = "crmsync-sandbox-token"  # a placeholder, accepted only by the local simulators


class StaticTokenCredential:
    """An async credential returning one fixed bearer token, for the local simulators only.

    Refuses any non-loopback URL so a sandbox configuration can never send a dummy token (or
    anything else) to a real tenant.
    """

    def __init__(self, *, base_url: str, token: str = SANDBOX_TOKEN) -> None:
        host = urlsplit(base_url).hostname
        if host not in LOOPBACK_HOSTS:
            raise ValueError("StaticTokenCredential only talks to loopback simulators")
        self._token = token

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)

    async def close(self) -> None:
        """Nothing to release; present to satisfy ``AsyncTokenCredential``."""

    async def __aenter__(self) -> StaticTokenCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()


def _certificate_bytes(value: str) -> bytes:
    """A Key Vault certificate reference resolves to PEM text or to base64 PKCS#12; accept both."""
    if "-----BEGIN" in value:
        return value.encode("ascii")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError("CRMSYNC_CLIENT_CERTIFICATE is neither PEM nor base64 PKCS#12") from None


def credential_from_settings(settings: Settings) -> AsyncTokenCredential:
    """The credential ``settings.credential_kind`` asks for (sandbox, federated or certificate)."""
    kind = settings.credential_kind
    if kind is CredentialKind.SANDBOX:
        return StaticTokenCredential(base_url=str(settings.graph_url))
    if kind is CredentialKind.CERTIFICATE:
        if not settings.client_certificate:
            raise ValueError("CRMSYNC_CLIENT_CERTIFICATE is required for certificate credentials")
        return CertificateCredential(
            settings.tenant_id,
            settings.client_id,
            certificate_data=_certificate_bytes(settings.client_certificate),
        )
    managed_identity = ManagedIdentityCredential(client_id=settings.managed_identity_client_id)

    def managed_identity_assertion() -> str:
        # ClientAssertionCredential (aio) calls this synchronously; the managed identity credential
        # caches its token, so the endpoint is contacted about once an hour.
        token: str = managed_identity.get_token(TOKEN_EXCHANGE_SCOPE).token
        return token

    return ClientAssertionCredential(settings.tenant_id, settings.client_id, managed_identity_assertion)
