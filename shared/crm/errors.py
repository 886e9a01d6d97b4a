"""Typed Dataverse errors that keep Dataverse's own error code and say what an administrator should do.

Dataverse answers a failed Web API call with ``{"error": {"code": "0x80040217", "message": ...}}``
(powerapps-docs: "Compose HTTP requests and handle errors", learn.microsoft.com
/power-apps/developer/data-platform/webapi/compose-http-requests-handle-errors). The hex codes come
from "Web service error codes" (learn.microsoft.com/power-apps/developer/data-platform/reference
/web-service-error-codes) and the service protection codes from "Service protection API limits"
(learn.microsoft.com/power-apps/developer/data-platform/api-limits).

The engine only needs two things from an error: its class (what happened) and ``retryable``
(transient: fail the job and let the queue retry; permanent: park the item and go on).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from shared.domain.redact import redact_addresses

# Dataverse error codes, named as in "Web service error codes".
OBJECT_DOES_NOT_EXIST = "0x80040217"
PRIVILEGE_DENIED = "0x80040220"
DUPLICATE_RECORD = "0x80040237"
CONCURRENCY_VERSION_MISMATCH = "0x80060882"
DUPLICATE_RECORD_ENTITY_KEY = "0x80060892"
STRING_LENGTH_TOO_LONG = "0x80044331"
EXPIRED_VERSION_STAMP = "0x80044352"
ACCESS_DENIED = "0x80048306"
CANNOT_ACT_ON_BEHALF = "0x8004a110"
USER_NOT_ENABLED = "0x80040225"
ATTRIBUTE_PRIVILEGE_CREATE_IS_MISSING = "0x8004f502"
ATTRIBUTE_PERMISSION_READ_IS_MISSING = "0x8004f504"
ATTRIBUTE_PERMISSION_UPDATE_IS_MISSING = "0x8004f507"
REQUESTS_LIMIT_EXCEEDED = "0x80072322"
EXECUTION_TIME_LIMIT_EXCEEDED = "0x80072321"
CONCURRENT_REQUESTS_LIMIT_EXCEEDED = "0x80072326"


class CrmError(Exception):
    """A failed Dataverse call: Dataverse's ``code`` (hex), HTTP ``status``, ``message`` and a ``remedy``.

    ``message`` is Dataverse's own text with every email address replaced by its fingerprint: the
    text names tables, columns and ids, but may quote a value (a duplicate key, a user's address),
    and the exception's string ends up in the host's logs.
    """

    retryable: ClassVar[bool] = False
    default_remedy: ClassVar[str] = "Check the Dataverse error code in the Web service error codes reference."

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int = 0,
        remedy: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.status = status
        self.message = redact_addresses(message)
        self.remedy = remedy or self.default_remedy
        self.retry_after = retry_after
        super().__init__(f"{self.message} (status {status}, code {code or 'n/a'}). {self.remedy}")


class RecordNotFound(CrmError):
    default_remedy = "The record was deleted or never existed; resync the link or recreate the record."


class ConcurrencyMismatch(CrmError):
    default_remedy = "The record changed since it was read (If-Match failed); re-read it and merge again."


class DuplicateRecord(CrmError):
    default_remedy = (
        "A record with this id or alternate key already exists; upsert it instead, or remove the duplicate."
    )


class PrivilegeDenied(CrmError):
    default_remedy = (
        "Give the user a security role with the missing privilege (named in the message), "
        "or stop synchronizing this item type for the user."
    )


class AttributePermissionDenied(CrmError):
    default_remedy = (
        "The user lacks a field security profile for a secured column; add the user to a profile "
        "that allows it, or set the column's sync direction to none."
    )


class CallerNotFound(CrmError):
    default_remedy = (
        "No enabled Dataverse user has this Entra object id: add the mailbox owner as a user of the "
        "environment, or unlink the mailbox."
    )


class InvalidData(CrmError):
    default_remedy = (
        "A value does not fit the column (length, type or choice value); fix the field map or the item."
    )


class AuthenticationFailed(CrmError):
    default_remedy = (
        "Dataverse refused the token: check that the crmsync app registration is an application user "
        "in this environment and that CRMSYNC_DATAVERSE_URL is the organization URL."
    )


class ChangeTokenExpired(CrmError):
    default_remedy = "The change-tracking token expired; run a full resync of the table (automatic)."


class ServiceProtectionLimit(CrmError):
    retryable = True
    default_remedy = (
        "Dataverse service protection limits were hit; crmsync waits as Dataverse asks and retries. If "
        "this persists, lower max_concurrency_per_user or the number of mailboxes synced at once."
    )


class CrmUnavailable(CrmError):
    retryable = True
    default_remedy = "Dataverse is unavailable or timed out; the change is kept and retried later."


_ACT_ON_BEHALF_REMEDY = (
    "Give the crmsync application user a security role with the prvActOnBehalfOfAnotherUser "
    "privilege (Delegate role) so it can impersonate mailbox users."
)
_USER_DISABLED_REMEDY = "The CRM user is disabled: enable the user or stop synchronizing the mailbox."

# code -> (class, specific remedy or None); codes not listed fall back to the HTTP status.
_BY_CODE: Mapping[str, tuple[type[CrmError], str | None]] = {
    OBJECT_DOES_NOT_EXIST: (RecordNotFound, None),
    PRIVILEGE_DENIED: (PrivilegeDenied, None),
    ACCESS_DENIED: (PrivilegeDenied, None),
    CANNOT_ACT_ON_BEHALF: (PrivilegeDenied, _ACT_ON_BEHALF_REMEDY),
    USER_NOT_ENABLED: (CallerNotFound, _USER_DISABLED_REMEDY),
    DUPLICATE_RECORD: (DuplicateRecord, None),
    CONCURRENCY_VERSION_MISMATCH: (ConcurrencyMismatch, None),
    DUPLICATE_RECORD_ENTITY_KEY: (DuplicateRecord, None),
    STRING_LENGTH_TOO_LONG: (InvalidData, None),
    EXPIRED_VERSION_STAMP: (ChangeTokenExpired, None),
    ATTRIBUTE_PRIVILEGE_CREATE_IS_MISSING: (AttributePermissionDenied, None),
    ATTRIBUTE_PERMISSION_READ_IS_MISSING: (AttributePermissionDenied, None),
    ATTRIBUTE_PERMISSION_UPDATE_IS_MISSING: (AttributePermissionDenied, None),
    REQUESTS_LIMIT_EXCEEDED: (ServiceProtectionLimit, None),
    EXECUTION_TIME_LIMIT_EXCEEDED: (ServiceProtectionLimit, None),
    CONCURRENT_REQUESTS_LIMIT_EXCEEDED: (ServiceProtectionLimit, None),
}

_BY_STATUS: Mapping[int, type[CrmError]] = {
    400: InvalidData,
    401: AuthenticationFailed,
    403: PrivilegeDenied,
    404: RecordNotFound,
    409: DuplicateRecord,
    410: ChangeTokenExpired,
    412: ConcurrencyMismatch,
    429: ServiceProtectionLimit,
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (Dataverse sends delta-seconds, possibly fractional)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0)


def _error_fields(body: bytes | str | Mapping[str, Any] | None) -> tuple[str | None, str]:
    """(code, message) from an OData error body; tolerant of non-JSON bodies from proxies."""
    document: Any = body
    if isinstance(body, bytes | str):
        try:
            document = json.loads(body) if body else None
        except ValueError:
            return None, "Dataverse returned a non-JSON error response"
    if not isinstance(document, Mapping):
        return None, "Dataverse returned an error without details"
    error = document.get("error")
    if not isinstance(error, Mapping):
        return None, "Dataverse returned an error without details"
    code = error.get("code")
    inner = error.get("innererror")
    if not (isinstance(code, str) and code.lower().startswith("0x")) and isinstance(inner, Mapping):
        code = inner.get("code", code)
    message = error.get("message")
    return (
        code.lower() if isinstance(code, str) and code else None,
        message if isinstance(message, str) and message else "Dataverse reported an error",
    )


def error_from_response(
    status: int, body: bytes | str | Mapping[str, Any] | None, headers: Mapping[str, str] | None = None
) -> CrmError:
    """Map one failed Dataverse response (top-level or inside a $batch) to a typed :class:`CrmError`.

    The Dataverse code wins over the HTTP status (a duplicate alternate key arrives as 412, like a
    concurrency mismatch); 5xx without a known code is transient.
    """
    code, message = _error_fields(body)
    retry_after = parse_retry_after(
        next((value for name, value in (headers or {}).items() if name.lower() == "retry-after"), None)
    )
    error_class, remedy = _BY_CODE.get(code or "", (None, None))
    if error_class is None:
        error_class = _BY_STATUS.get(status, CrmUnavailable if status >= 500 or status == 0 else CrmError)
    return error_class(message, code=code, status=status, remedy=remedy, retry_after=retry_after)


def caller_not_found(error: CrmError, caller: str | None) -> CrmError:
    """A "does not exist" that names the impersonated user, not the record, becomes :class:`CallerNotFound`.

    Without this a get or delete for an unknown user would look like a missing record.
    """
    if caller and isinstance(error, RecordNotFound) and caller.lower() in error.message.lower():
        return CallerNotFound(error.message, code=error.code, status=error.status)
    return error
