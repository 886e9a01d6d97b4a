"""Small building blocks every part of the simulator shares: ids, clocks, errors, JSON helpers."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from typing import Any

Json = dict[str, Any]


class GraphError(Exception):
    """An error answered in Graph's documented shape.

    Follows learn.microsoft.com/graph/errors: ``{"error": {"code", "message",
    "innerError": {"date", "request-id", "client-request-id"}}}``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: int | None = None,
        location: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.location = location


def error_body(code: str, message: str, request_id: str, client_request_id: str | None = None) -> Json:
    """``innerError.client-request-id`` is the id the client sent in its ``client-request-id``
    header (msgraph-sdk sends one with every request), else the request's own id."""
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": iso_z(utcnow()),
                "request-id": request_id,
                "client-request-id": client_request_id or request_id,
            },
        }
    }


def not_found(what: str) -> GraphError:
    """Outlook answers a missing item with ErrorItemNotFound (learn.microsoft.com/graph/errors)."""
    return GraphError(404, "ErrorItemNotFound", f"The specified {what} could not be found in the store.")


def check_if_match(if_match: str | None, key: str) -> None:
    """``If-Match`` on a write of an Outlook item: ``*`` or the item's current ``@odata.etag`` (its
    changeKey) lets it through, another value is 412 ``ErrorIrresolvableConflict`` and changes nothing
    (learn.microsoft.com/graph/errors: 412 "A precondition provided in the request (such as an
    if-match header) doesn't match the resource's current state"; Exchange's code and message as
    learn.microsoft.com/answers/questions/271870 quotes them)."""
    if if_match is None:
        return
    wanted = {tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")}
    if "*" not in wanted and key not in wanted:
        raise GraphError(
            412,
            "ErrorIrresolvableConflict",
            "The send or update operation could not be performed because the change key passed in "
            "the request does not match the current change key for the item.",
        )


def bad_request(message: str, code: str = "ErrorInvalidRequest") -> GraphError:
    return GraphError(400, code, message)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso_z(value: dt.datetime) -> str:
    """Graph's timestamp shape for createdDateTime & co: ISO 8601 in UTC with a Z."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> dt.datetime:
    """Parse an ISO 8601 timestamp; a naive one is taken as UTC (as Graph does for query windows)."""
    text = value.strip().replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        tail = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{tail}"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise bad_request(f"'{value}' is not a valid ISO 8601 date and time.") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def opaque_id(prefix: str = "AAMkAD") -> str:
    """An id shaped like Exchange's: base64 that always contains '/', '+' and '='.

    Real Graph ids are opaque base64 strings (learn.microsoft.com/graph/outlook-immutable-id);
    forcing the three awkward characters makes every client exercise its key/URL encoding.
    """
    core = base64.b64encode(secrets.token_bytes(39)).decode("ascii").replace("/", "x").replace("+", "y")
    return f"{prefix}{core[:18]}/{core[18:36]}+{core[36:]}AAA="


def change_key() -> str:
    return base64.b64encode(secrets.token_bytes(12)).decode("ascii")


def url_token() -> str:
    """An opaque, URL-safe state token (skiptoken / deltatoken)."""
    return secrets.token_urlsafe(24)


def etag(key: str) -> str:
    return f'W/"{key}"'


def random_hex_upper(n_bytes: int) -> str:
    return secrets.token_hex(n_bytes).upper()
