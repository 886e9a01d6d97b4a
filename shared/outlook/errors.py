"""Typed Graph errors that keep Graph's own error code, so callers branch on meaning, not on strings.

msgraph-sdk raises ``ODataError`` (a kiota ``APIError``) for every non-2xx answer. The engine needs
to tell "the delta token expired, resync" from "the mailbox is gone" from "still throttled after
the retry handler gave up"; :func:`translate_api_error` turns the SDK's error into one of these.
Messages never include request bodies or addresses: only status, code and Graph's message text, in
which every email address (Graph quotes the UPN it could not find) is replaced by its fingerprint.
The SDK's own error is not chained as the cause: its text holds the address verbatim.

References: learn.microsoft.com/graph/errors ("Microsoft Graph error responses and resource
types"); learn.microsoft.com/graph/delta-query-overview ("Use delta query to track changes",
410 Gone / syncStateNotFound means the client must resynchronise from scratch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from kiota_abstractions.api_error import APIError
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from shared.domain.redact import redact_addresses

# Codes Exchange/Graph use when a delta (sync) state can no longer be used.
_DELTA_EXPIRED_CODES = frozenset({"syncstatenotfound", "syncstateinvalid", "resyncrequired"})
# Codes meaning the user or its mailbox does not exist (or has no Exchange Online mailbox).
_MAILBOX_MISSING_CODES = frozenset(
    {"errorinvaliduser", "mailboxnotenabledforrestapi", "mailboxnotfound", "request_resourcenotfound"}
)


class GraphError(Exception):
    """A Graph call failed; ``status`` and ``code`` are Graph's HTTP status and error code."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(redact_addresses(message))
        self.status = status
        self.code = code

    def __str__(self) -> str:
        return f"{self.args[0]} (status={self.status}, code={self.code})"


class DeltaTokenExpired(GraphError):
    """The stored delta link is no longer valid (410 Gone / syncStateNotFound): resync from scratch."""


class MailboxNotFound(GraphError):
    """The user does not exist or has no mailbox Graph can reach."""


class ItemNotFound(GraphError):
    """The addressed item (message, contact, event, task, subscription) does not exist."""


class GraphThrottled(GraphError):
    """Still 429/503/504 after msgraph-core's retry handler used up its retries."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, retry_after: str | None
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


def _error_code(exc: APIError) -> str | None:
    if isinstance(exc, ODataError) and exc.error is not None:
        code = exc.error.code
        return str(code) if code else None
    return None


def _error_message(exc: APIError) -> str:
    if isinstance(exc, ODataError) and exc.error is not None and exc.error.message:
        return str(exc.error.message)
    return exc.message or type(exc).__name__


def _header(exc: APIError, name: str) -> str | None:
    for key, value in (exc.response_headers or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def translate_api_error(exc: APIError) -> GraphError:
    """Map an SDK error to the most specific :class:`GraphError` subclass."""
    status = exc.response_status_code
    code = _error_code(exc)
    message = _error_message(exc)
    folded = (code or "").lower()
    if status == 410 or folded in _DELTA_EXPIRED_CODES:
        return DeltaTokenExpired(message, status=status, code=code)
    if status in (429, 503, 504):
        return GraphThrottled(message, status=status, code=code, retry_after=_header(exc, "retry-after"))
    if folded in _MAILBOX_MISSING_CODES:
        return MailboxNotFound(message, status=status, code=code)
    if status == 404:
        return ItemNotFound(message, status=status, code=code)
    return GraphError(message, status=status, code=code)


@contextlib.contextmanager
def graph_errors() -> Iterator[None]:
    """Re-raise any SDK ``APIError`` raised inside the block as a typed :class:`GraphError`."""
    try:
        yield
    except APIError as exc:
        # Not ``from exc``: a logged traceback would print the SDK error's text, address included.
        raise translate_api_error(exc) from None


@contextlib.contextmanager
def gone_is_done() -> Iterator[None]:
    """Like :func:`graph_errors`, but a 404/410 answer is success: for deletes, "already gone" is done."""
    try:
        with graph_errors():
            yield
    except GraphError as exc:
        if exc.status not in (404, 410):
            raise
