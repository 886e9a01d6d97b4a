"""Credential selection from settings: sandbox, federated (managed identity assertion), certificate."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from azure.identity.aio import CertificateCredential, ClientAssertionCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from shared.config import Settings, load_settings
from shared.outlook.credentials import SANDBOX_TOKEN, StaticTokenCredential, credential_from_settings

BASE: dict[str, Any] = {
    "CRMSYNC_TENANT_ID": "00000000-0000-0000-0000-000000000001",
    "CRMSYNC_CLIENT_ID": "00000000-0000-0000-0000-000000000002",
    "CRMSYNC_DATAVERSE_URL": "https://contoso.crm.dynamics.com",
    "CRMSYNC_NOTIFICATION_URL": "https://crmsync.example/api/notifications",
    "CRMSYNC_LIFECYCLE_URL": "https://crmsync.example/api/lifecycle",
    "AzureWebJobsStorage__accountName": "crmsyncstore",
}


def settings(**overrides: Any) -> Settings:
    return load_settings(**(BASE | overrides))


def self_signed() -> tuple[str, str]:
    """A throwaway certificate with key, as PEM and as base64 PKCS#12 (Key Vault's two encodings)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crmsync-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ) + cert.public_bytes(serialization.Encoding.PEM)
    pfx = pkcs12.serialize_key_and_certificates(b"crmsync", key, cert, None, serialization.NoEncryption())
    return pem.decode(), base64.b64encode(pfx).decode()


async def test_sandbox_gets_the_static_loopback_token() -> None:
    credential = credential_from_settings(
        settings(
            CRMSYNC_CREDENTIAL_KIND="sandbox",
            CRMSYNC_GRAPH_URL="http://127.0.0.1:4010/v1.0",
            CRMSYNC_DATAVERSE_URL="http://127.0.0.1:4020",
        )
    )
    assert isinstance(credential, StaticTokenCredential)
    async with credential:
        token = await credential.get_token("https://graph.microsoft.com/.default")
    assert token.token == SANDBOX_TOKEN


async def test_federated_uses_a_client_assertion() -> None:
    credential = credential_from_settings(
        settings(CRMSYNC_CREDENTIAL_KIND="federated", CRMSYNC_MANAGED_IDENTITY_CLIENT_ID="mi-client")
    )
    assert isinstance(credential, ClientAssertionCredential)
    await credential.close()


@pytest.mark.parametrize("encoding", ["pem", "pkcs12"])
async def test_certificate_accepts_both_key_vault_encodings(encoding: str) -> None:
    pem, pfx = self_signed()
    credential = credential_from_settings(
        settings(
            CRMSYNC_CREDENTIAL_KIND="certificate",
            CRMSYNC_CLIENT_CERTIFICATE=pem if encoding == "pem" else pfx,
        )
    )
    assert isinstance(credential, CertificateCredential)
    await credential.close()


def test_certificate_that_is_neither_pem_nor_base64_is_refused() -> None:
    with pytest.raises(ValueError, match="neither PEM nor base64"):
        credential_from_settings(
            settings(CRMSYNC_CREDENTIAL_KIND="certificate", CRMSYNC_CLIENT_CERTIFICATE="not a cert!")
        )
