"""The OData ``$batch`` wire format Dataverse speaks: multipart/mixed requests and responses.

Follows powerapps-docs "Execute batch operations using the Web API"
(learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api)
and OData 4.0 Part 1 section 11.7: a batch holds up to 1000 requests; requests inside a *change set*
succeed or fail together and carry a ``Content-ID``; requests outside a change set are independent
(with ``Prefer: odata.continue-on-error`` the batch goes on after a failure). Responses come back in
request order; a failed change set is answered by a single error response.

Pure: no I/O, so it is unit-tested on the documented example payloads.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, TypeVar

MAX_BATCH_OPERATIONS = 1000
"""Dataverse's limit on requests per ``$batch`` (and per change set)."""

_CRLF = b"\r\n"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One request inside a batch. ``url`` is absolute or relative to the Web API root."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | bytes | None = None  # bytes: already encoded (its Content-Type in headers)


@dataclass(frozen=True, slots=True)
class BatchResponse:
    """One response inside a batch response; ``headers`` keys are lower-case."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    content_id: str | None = None

    def json(self) -> Any:
        return json.loads(self.body) if self.body.strip() else None


class BatchFormatError(ValueError):
    """A batch response that does not follow the multipart/mixed format."""


def chunked(items: Sequence[T], size: int = MAX_BATCH_OPERATIONS) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items (one ``$batch`` each)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _encode_request(request: BatchRequest, content_id: int | None) -> bytes:
    part_headers = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        part_headers.append(f"Content-ID: {content_id}")
    lines = [*part_headers, "", f"{request.method} {request.url} HTTP/1.1"]
    payload = b""
    headers = dict(request.headers)
    if isinstance(request.body, bytes):
        payload = request.body
    elif request.body is not None:
        headers.setdefault("Content-Type", "application/json; type=entry")
        payload = json.dumps(request.body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("")
    return "\r\n".join(lines).encode("utf-8") + _CRLF + payload


def _multipart(boundary: str, parts: Sequence[bytes]) -> bytes:
    delimiter = b"--" + boundary.encode("ascii")
    out = b"".join(delimiter + _CRLF + part + _CRLF for part in parts)
    return out + delimiter + b"--" + _CRLF


def encode_batch(
    requests: Sequence[BatchRequest], *, atomic: bool, boundary: str | None = None
) -> tuple[str, bytes]:
    """(Content-Type header, body) of a ``$batch`` request.

    ``atomic``: all requests in one change set (one transaction). Otherwise each request is a
    top-level part, processed independently.
    """
    if not requests:
        raise ValueError("a batch needs at least one request")
    if len(requests) > MAX_BATCH_OPERATIONS:
        raise ValueError(f"a batch holds at most {MAX_BATCH_OPERATIONS} requests; split it with chunked()")
    batch_boundary = boundary or f"batch_{uuid.uuid4()}"
    if atomic:
        changeset_boundary = f"changeset_{uuid.uuid4()}"
        changeset = _multipart(
            changeset_boundary, [_encode_request(request, index) for index, request in enumerate(requests, 1)]
        )
        head = f"Content-Type: multipart/mixed; boundary={changeset_boundary}\r\n\r\n".encode("ascii")
        parts = [head + changeset]
    else:
        parts = [_encode_request(request, None) for request in requests]
    return f"multipart/mixed; boundary={batch_boundary}", _multipart(batch_boundary, parts)


def _content_type_params(content_type: str) -> tuple[str, str | None]:
    message = Message()
    message["Content-Type"] = content_type
    boundary = message.get_param("boundary")
    return message.get_content_type(), boundary if isinstance(boundary, str) else None


def _split_head(block: bytes) -> tuple[list[bytes], bytes]:
    """Header lines and the rest of a MIME part or HTTP message (CRLF or bare LF line ends)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = block.find(separator)
        if index >= 0:
            return block[:index].splitlines(), block[index + len(separator) :]
    return block.splitlines(), b""


def _parse_headers(lines: Sequence[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.decode("utf-8").partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


def _split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """Body parts between delimiter lines; a delimiter is ``--boundary`` at the start of a line, then
    ``--`` if it closes, blanks and the line end. Found with ``bytes.find``: a regular expression
    starting with the line break tried every byte of a response of a thousand records."""
    dash = b"--" + boundary.encode("ascii")
    delimiters: list[tuple[int, int, bool]] = []  # (start with its line break, end, closing)
    floor, at = 0, body.find(dash)
    while at >= 0:
        found = _delimiter(body, at, len(dash), floor)
        if found is None:
            at = body.find(dash, at + 1)
            continue
        delimiters.append(found)
        floor = found[1]
        at = body.find(dash, floor)
    if not delimiters:
        raise BatchFormatError("batch response lacks its boundary")
    parts = []
    for (_, end, closing), (start, _, _) in itertools.pairwise(delimiters):
        if closing:  # close delimiter: the epilogue follows
            break
        parts.append(body[end:start])
    if not delimiters[-1][2]:
        raise BatchFormatError("batch response is truncated (no closing boundary)")
    return parts


def _delimiter(body: bytes, at: int, length: int, floor: int) -> tuple[int, int, bool] | None:
    """The delimiter line whose ``--boundary`` is at ``at``, if it is one: at the start of the body
    or after a line break not already part of the previous delimiter."""
    if at == 0:
        start = 0
    elif at - 1 >= floor and body[at - 1] == _LF:
        start = at - 2 if at - 2 >= floor and body[at - 2] == _CR else at - 1
    else:
        return None
    end = at + length
    closing = body.startswith(b"--", end)
    end += 2 if closing else 0
    while end < len(body) and body[end] in _BLANKS:
        end += 1
    if body.startswith(b"\r\n", end):
        return start, end + 2, closing
    if end == len(body) or body.startswith(b"\n", end):
        return start, min(end + 1, len(body)), closing
    return None


_CR, _LF, _BLANKS = ord("\r"), ord("\n"), b" \t"


def _decode_http(part_headers: Mapping[str, str], message: bytes) -> BatchResponse:
    head, body = _split_head(message)
    if not head:
        raise BatchFormatError("batch response part lacks a status line")
    status_line = head[0].decode("ascii", "replace").split(" ", 2)
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise BatchFormatError("batch response part has a malformed status line")
    return BatchResponse(
        status=int(status_line[1]),
        headers=_parse_headers(head[1:]),
        body=body,
        content_id=part_headers.get("content-id"),
    )


def decode_batch(content_type: str, body: bytes) -> list[BatchResponse]:
    """The responses of a ``$batch`` response in order, change sets flattened."""
    media_type, boundary = _content_type_params(content_type)
    if media_type != "multipart/mixed" or not boundary:
        raise BatchFormatError(f"expected a multipart/mixed batch response, got {media_type}")
    responses: list[BatchResponse] = []
    for part in _split_multipart(body, boundary):
        head, rest = _split_head(part)
        part_headers = _parse_headers(head)
        part_type = part_headers.get("content-type", "")
        if part_type.lower().startswith("multipart/mixed"):
            responses.extend(decode_batch(part_type, rest))
        else:
            responses.append(_decode_http(part_headers, rest))
    return responses
