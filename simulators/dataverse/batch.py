"""$batch: multipart/mixed requests with change sets ("Execute batch operations using the Web API").

- Up to 1000 requests per batch; more -> 400 for the whole batch.
- A change set is atomic: if one of its requests fails, none of its writes take effect and the
  response holds only that failure for the change set. ``Content-ID`` values name rows created
  earlier in the same change set (``$1`` in a URL or an ``@odata.bind``).
- Without ``Prefer: odata.continue-on-error`` the batch stops at the first failure and the batch
  itself is answered ``400 Bad Request`` (its multipart body holds the responses so far, the failure
  last: "Handling errors", "the batch error represents the error of the first failing request"; a
  failed change set counts the same); with it, the remaining requests run, every one gets its
  response, and the batch is ``200 OK``.
- The batch request's impersonation headers (CallerObjectId, MSCRMCallerID) apply to each request
  that does not set its own.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote, urlsplit

from simulators.dataverse import errors
from simulators.dataverse.engine import ApiRequest, ApiResponse

MAX_OPERATIONS = 1000
INHERITED_HEADERS = ("callerobjectid", "mscrmcallerid")
BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
API_PATH = "/api/data/v9.2/"


@dataclass
class Part:
    """One request inside the batch."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    parts: list[Part] = field(default_factory=list)


Item = Part | ChangeSet
Execute = Callable[[ApiRequest], ApiResponse]
Transaction = Callable[[Callable[[], list[tuple[Part, ApiResponse]]]], list[tuple[Part, ApiResponse]]]


def parse(body: bytes, content_type: str) -> list[Item]:
    match = BOUNDARY.search(content_type)
    if match is None:
        raise errors.bad_request("The batch request must be multipart/mixed with a boundary.")
    items: list[Item] = []
    for headers, content in _split(body.decode("utf-8"), match.group(1)):
        part_type = headers.get("content-type", "")
        if part_type.lower().startswith("multipart/mixed"):
            inner = BOUNDARY.search(part_type)
            if inner is None:
                raise errors.bad_request("A change set needs a boundary.")
            change_set = ChangeSet()
            for inner_headers, inner_content in _split(content, inner.group(1)):
                part = _http_part(inner_content, inner_headers.get("content-id"))
                if part.method == "GET":
                    raise errors.bad_request("A change set cannot contain GET requests.")
                change_set.parts.append(part)
            items.append(change_set)
        else:
            items.append(_http_part(content, headers.get("content-id")))
    count = sum(len(i.parts) if isinstance(i, ChangeSet) else 1 for i in items)
    if count > MAX_OPERATIONS:
        raise errors.bad_request(
            f"The number of requests in the batch, {count}, exceeds the maximum of {MAX_OPERATIONS}.",
        )
    return items


def operation_count(items: list[Item]) -> int:
    return sum(len(i.parts) if isinstance(i, ChangeSet) else 1 for i in items)


def operation_names(items: list[Item]) -> list[str]:
    """``METHOD path`` of each operation, in order (the request log's record of what a batch did)."""
    parts = [part for item in items for part in (item.parts if isinstance(item, ChangeSet) else [item])]
    return [f"{part.method} {part.path}" for part in parts]


def _split(text: str, boundary: str) -> list[tuple[dict[str, str], str]]:
    """Parts between ``--boundary`` delimiter lines (RFC 2046): (headers, content)."""
    parts: list[tuple[dict[str, str], str]] = []
    for raw in text.split(f"--{boundary}")[1:]:
        if raw.startswith("--"):
            break
        chunk = _strip_line_break(raw.lstrip(" \t"))
        if chunk.strip():
            head, content = _split_head(chunk)
            parts.append((_headers(head), content))
    return parts


def _strip_line_break(chunk: str) -> str:
    """Drop the line break after the delimiter and the one before the next (they belong to it)."""
    chunk = chunk[2:] if chunk.startswith("\r\n") else chunk.removeprefix("\n")
    return chunk[:-2] if chunk.endswith("\r\n") else chunk.removesuffix("\n")


def _split_head(text: str) -> tuple[str, str]:
    """(header block, rest) at the first empty line."""
    match = re.search(r"\r?\n\r?\n", text)
    if match is None:
        return text, ""
    return text[: match.start()], text[match.end() :]


def _headers(block: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _http_part(content: str, content_id: str | None) -> Part:
    head, body = _split_head(content.lstrip("\r\n"))
    lines = head.strip().splitlines()
    if not lines:
        raise errors.bad_request("A batch part has no request line.")
    method, _, target = lines[0].strip().partition(" ")
    url = re.sub(r"\s+HTTP/\d\.\d$", "", target.strip())
    if not method or not url:
        raise errors.bad_request(f"Invalid request line '{lines[0]}'.")
    method = method.upper()
    split = urlsplit(url)
    path = unquote(split.path)
    if API_PATH in path:
        path = path.split(API_PATH, 1)[1]
    return Part(
        method=method,
        path=path.lstrip("/"),
        query=dict(parse_qsl(split.query, keep_blank_values=True)),
        headers=_headers("\n".join(lines[1:])),
        body=body.rstrip("\r\n").encode("utf-8"),
        content_id=content_id,
    )


def run(
    items: list[Item],
    batch_headers: dict[str, str],
    base_url: str,
    execute: Execute,
    transaction: Transaction,
) -> tuple[str, str, bool]:
    """Execute the parts in order; returns (boundary, multipart/mixed response body, whether the
    batch stopped at a failure)."""
    continue_on_error = "odata.continue-on-error" in batch_headers.get("prefer", "").lower()
    inherited = {h: batch_headers[h] for h in INHERITED_HEADERS if h in batch_headers}
    boundary = f"batchresponse_{uuid.uuid4()}"
    out: list[str] = []
    stopped = False
    for item in items:
        if isinstance(item, ChangeSet):
            content_ids: dict[str, str] = {}

            def run_change_set(
                change_set: ChangeSet = item, ids: dict[str, str] = content_ids
            ) -> list[tuple[Part, ApiResponse]]:
                results: list[tuple[Part, ApiResponse]] = []
                for part in change_set.parts:
                    response = execute(_request(part, inherited, base_url, ids))
                    if response.status >= 400:
                        raise _PartFailed(part, response)
                    if part.content_id and response.entity_path:
                        ids[f"${part.content_id}"] = response.entity_path
                    results.append((part, response))
                return results

            try:
                results = transaction(run_change_set)
            except _PartFailed as failure:
                out.append(_render(boundary, failure.part, failure.response))
                if not continue_on_error:
                    stopped = True
                    break
                continue
            inner = f"changesetresponse_{uuid.uuid4()}"
            rendered = "".join(_render(inner, part, response) for part, response in results)
            opening = f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={inner}\r\n\r\n"
            out.append(f"{opening}{rendered}--{inner}--\r\n")
        else:
            response = execute(_request(item, inherited, base_url, {}))
            out.append(_render(boundary, item, response))
            if response.status >= 400 and not continue_on_error:
                stopped = True
                break
    return boundary, "".join(out) + f"--{boundary}--\r\n", stopped


class _PartFailed(Exception):
    def __init__(self, part: Part, response: ApiResponse) -> None:
        super().__init__(response.status)
        self.part = part
        self.response = response


def _request(part: Part, inherited: dict[str, str], base_url: str, content_ids: dict[str, str]) -> ApiRequest:
    return ApiRequest(
        method=part.method,
        path=part.path,
        query=part.query,
        headers={**inherited, **part.headers},
        body=part.body,
        base_url=base_url,
        content_ids=dict(content_ids),
    )


def _render(boundary: str, part: Part, response: ApiResponse) -> str:
    lines = [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if part.content_id:
        lines.append(f"Content-ID: {part.content_id}")
    lines.append("")
    lines.append(f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}")
    headers = {"OData-Version": "4.0", **response.headers}
    body = response.text or ""
    if response.body is not None:
        headers["Content-Type"] = "application/json; odata.metadata=minimal"
        body = json.dumps(response.body)
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append("")
    lines.append(body)
    return "\r\n".join(lines) + "\r\n"
