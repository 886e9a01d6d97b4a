"""Error mapping: Dataverse codes (powerapps-docs "Web service error codes", "Service protection API
limits", "Perform conditional operations using the Web API") become typed, classified errors."""

from __future__ import annotations

import json

import pytest

from shared.crm.errors import (
    AttributePermissionDenied,
    AuthenticationFailed,
    CallerNotFound,
    ChangeTokenExpired,
    ConcurrencyMismatch,
    CrmError,
    CrmUnavailable,
    DuplicateRecord,
    InvalidData,
    PrivilegeDenied,
    RecordNotFound,
    ServiceProtectionLimit,
    caller_not_found,
    error_from_response,
    parse_retry_after,
)


def _body(code: str, message: str = "m") -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (404, "0x80040217", RecordNotFound),
        (412, "0x80060882", ConcurrencyMismatch),  # conditional operations: etag mismatch
        (412, "0x80040237", DuplicateRecord),  # upsert with If-None-Match: * on an existing row
        (412, "0x80060892", DuplicateRecord),  # alternate key already taken
        (403, "0x80040220", PrivilegeDenied),
        (403, "0x80048306", PrivilegeDenied),  # record-level access right missing
        (403, "0x8004F507", AttributePermissionDenied),  # upper-case hex as some responses print it
        (403, "0x8004f502", AttributePermissionDenied),
        (400, "0x80044331", InvalidData),
        (400, "0x80044352", ChangeTokenExpired),
        (429, "0x80072322", ServiceProtectionLimit),
        (429, "0x80072321", ServiceProtectionLimit),
        (429, "0x80072326", ServiceProtectionLimit),
    ],
)
def test_documented_codes_map_to_typed_errors(status: int, code: str, expected: type[CrmError]) -> None:
    error = error_from_response(status, _body(code, "Dataverse says no"))
    assert type(error) is expected
    assert error.code == code.lower()
    assert error.status == status
    assert error.message == "Dataverse says no"
    assert error.remedy == expected.default_remedy
    assert error.remedy in str(error)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, InvalidData),
        (401, AuthenticationFailed),
        (403, PrivilegeDenied),
        (404, RecordNotFound),
        (410, ChangeTokenExpired),
        (412, ConcurrencyMismatch),
        (429, ServiceProtectionLimit),
        (500, CrmUnavailable),
        (503, CrmUnavailable),
        (418, CrmError),
    ],
)
def test_unknown_codes_fall_back_to_status(status: int, expected: type[CrmError]) -> None:
    assert type(error_from_response(status, _body("0x80001234"))) is expected


def test_only_transient_errors_are_retryable() -> None:
    assert error_from_response(429, _body("0x80072322")).retryable
    assert error_from_response(503, b"<html>gateway</html>").retryable
    for status in (400, 403, 404, 412):
        assert not error_from_response(status, b"").retryable


def test_retry_after_is_kept_from_headers_in_any_case() -> None:
    assert error_from_response(429, _body("0x80072322"), {"Retry-After": "2"}).retry_after == 2.0
    assert error_from_response(429, _body("0x80072322"), {"retry-after": "0.5"}).retry_after == 0.5
    assert error_from_response(429, _body("0x80072322")).retry_after is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-3") == 0.0


def test_code_in_innererror_and_unparseable_bodies() -> None:
    inner = json.dumps({"error": {"code": "", "message": "x", "innererror": {"code": "0x80040217"}}})
    assert isinstance(error_from_response(404, inner), RecordNotFound)
    garbage = error_from_response(502, b"\xff not json")
    assert isinstance(garbage, CrmUnavailable)
    assert garbage.code is None
    assert "non-JSON" in garbage.message
    assert (
        error_from_response(500, {"unexpected": 1}).message == "Dataverse returned an error without details"
    )


def test_impersonation_failures_name_their_remedy() -> None:
    """Impersonate another user using the Web API: the app user needs prvActOnBehalfOfAnotherUser;
    the impersonated user must exist and be enabled."""
    cannot_impersonate = error_from_response(403, _body("0x8004A110"))
    assert isinstance(cannot_impersonate, PrivilegeDenied)
    assert "prvActOnBehalfOfAnotherUser" in cannot_impersonate.remedy
    disabled = error_from_response(403, _body("0x80040225"))
    assert isinstance(disabled, CallerNotFound)
    assert "disabled" in disabled.remedy

    caller = "9B949F0D-9C26-49DF-B905-86938B58CDE5"
    unknown = error_from_response(
        404, _body("0x80040217", f"systemuser With Id = {caller.lower()} Does Not Exist")
    )
    assert isinstance(caller_not_found(unknown, caller), CallerNotFound)
    missing_row = error_from_response(404, _body("0x80040217", "contact With Id = 1 Does Not Exist"))
    assert caller_not_found(missing_row, caller) is missing_row
    assert caller_not_found(missing_row, None) is missing_row
