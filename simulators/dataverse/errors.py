"""Dataverse Web API errors: ``{"error": {"code": "0x...", "message": "..."}}`` with the documented codes.

Codes and messages come from learn.microsoft.com pages named per constant
("Web service error codes" = power-apps/developer/data-platform/reference/web-service-error-codes;
"Troubleshoot Dataverse client errors" = troubleshoot/power-platform/dataverse/.../client-errors).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Troubleshoot Dataverse client errors: "Contact With Ids = <guid> Do Not Exist" -2147220969.
OBJECT_DOES_NOT_EXIST = "0x80040217"
# Troubleshoot Dataverse client errors: "Cannot insert duplicate key" -2147220937 (DuplicateRecord).
DUPLICATE_RECORD = "0x80040237"
# Troubleshoot Dataverse client errors: "Principal user is missing privilege" -2147220960.
PRIVILEGE_DENIED = "0x80040220"
# Troubleshoot Dataverse client errors: "Principal with ID does not have <X>Access right(s)" -2147187962.
ACCESS_DENIED = "0x80048306"
# Web service error codes: CannotActOnBehalfOfAnotherUser.
CANNOT_ACT_ON_BEHALF = "0x8004a110"
# Web service error codes: UserNotEnabled ("The specified user is disabled").
USER_DISABLED = "0x80040225"
# Web service error codes: AttributePermissionUpdateIsMissingDuringUpdate / AttributePrivilegeCreateIsMissing.
ATTRIBUTE_UPDATE_MISSING = "0x8004f507"
ATTRIBUTE_CREATE_MISSING = "0x8004f502"
# Perform conditional operations using the Web API (ConcurrencyVersionMismatch).
CONCURRENCY_VERSION_MISMATCH = "0x80060882"
# Define alternate keys to reference rows: DuplicateRecordEntityKey "Entity Key {0} violated".
DUPLICATE_ENTITY_KEY = "0x80060892"
# Web service error codes: StringLengthTooLong / value outside the valid range.
STRING_TOO_LONG = "0x80044331"
VALUE_OUT_OF_RANGE = "0x8004431a"
# Generic "Error identified in Payload provided by the user" (payload / request shape errors).
BAD_PAYLOAD = "0x80048d19"
# "Could not find a property named '{0}' on type 'Microsoft.Dynamics.CRM.{1}'" (query options); also
# a path naming no entity set, function or action: 404 "Resource not found for the segment '{0}'."
# (as Dataverse answers it, github.com/microsoft/Dataverse-MCP/issues/6).
PROPERTY_NOT_FOUND = "0x80060888"
RESOURCE_NOT_FOUND = PROPERTY_NOT_FOUND
# Use change tracking to synchronize data with external systems; ExpiredVersionStamp "Version stamp
# associated with the client has expired. Please perform a full sync."
EXPIRED_VERSION_STAMP = "0x80044352"
# Web service error codes: ChangeTrackingNotEnabledForEntity.
CHANGE_TRACKING_NOT_ENABLED = "0x80072491"
# Service protection API limits: number of requests / execution time / concurrent requests.
LIMIT_REQUESTS = "0x80072322"
LIMIT_EXECUTION_TIME = "0x80072321"
LIMIT_CONCURRENCY = "0x80072326"
# Web service error codes: InvalidXml ("Invalid XML."), QueryBuilderNoEntity (a FetchXml without an
# entity name, or naming no table), InvalidArgument (a FetchXml element, attribute or operator the
# query cannot use).
INVALID_XML = "0x80040201"
QUERY_BUILDER_NO_ENTITY = "0x80041102"
INVALID_FETCH_XML = "0x80040203"
# Fault injection of an unavailable service (the simulator's own code for a synthetic 5xx).
SERVICE_UNAVAILABLE = "0x80040216"


@dataclass
class DataverseError(Exception):
    """A failed operation, rendered by the HTTP layer as the documented JSON error body."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def body(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}


def not_found(table: str, record_id: str) -> DataverseError:
    return DataverseError(404, OBJECT_DOES_NOT_EXIST, f"{table} With Id = {record_id} Does Not Exist")


def bad_request(message: str, code: str = BAD_PAYLOAD) -> DataverseError:
    return DataverseError(400, code, message)


def unknown_property(name: str, table: str) -> DataverseError:
    return DataverseError(
        400,
        PROPERTY_NOT_FOUND,
        f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{table}'.",
    )


def unsupported_option(name: str) -> DataverseError:
    """A query option the service does not implement is refused, never ignored."""
    return DataverseError(400, PROPERTY_NOT_FOUND, f"The query parameter {name} is not supported")


def json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object (an action's parameters), or the 400 saying so."""
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise bad_request("The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise bad_request("The request body must be a JSON object.")
    return value
