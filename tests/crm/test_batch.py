"""$batch wire format, on the payloads printed in powerapps-docs "Execute batch operations using the Web API"
(learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api)."""

from __future__ import annotations

import itertools
import json
import re
from email import message_from_bytes
from email.message import Message

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.crm.batch import (
    MAX_BATCH_OPERATIONS,
    BatchFormatError,
    BatchRequest,
    _split_multipart,
    chunked,
    decode_batch,
    encode_batch,
)

ORG = "https://org.crm.dynamics.com/api/data/v9.2"

# The documented response to a batch holding a change set of two task creates and one GET.
DOCUMENTED_RESPONSE = (
    "--batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f\r\n"
    "Content-Type: multipart/mixed; boundary=changesetresponse_ff83b4f1-ab48-430c-b81c-926a2c596abb\r\n"
    "\r\n"
    "--changesetresponse_ff83b4f1-ab48-430c-b81c-926a2c596abb\r\n"
    "Content-Type: application/http\r\n"
    "Content-Transfer-Encoding: binary\r\n"
    "Content-ID: 1\r\n"
    "\r\n"
    "HTTP/1.1 204 No Content\r\n"
    "OData-Version: 4.0\r\n"
    f"Location: {ORG}/tasks(a59c24a0-b45b-e711-8130-e0071b6ac121)\r\n"
    f"OData-EntityId: {ORG}/tasks(a59c24a0-b45b-e711-8130-e0071b6ac121)\r\n"
    "\r\n"
    "\r\n"
    "--changesetresponse_ff83b4f1-ab48-430c-b81c-926a2c596abb\r\n"
    "Content-Type: application/http\r\n"
    "Content-Transfer-Encoding: binary\r\n"
    "Content-ID: 2\r\n"
    "\r\n"
    "HTTP/1.1 204 No Content\r\n"
    "OData-Version: 4.0\r\n"
    f"Location: {ORG}/tasks(a69c24a0-b45b-e711-8130-e0071b6ac121)\r\n"
    f"OData-EntityId: {ORG}/tasks(a69c24a0-b45b-e711-8130-e0071b6ac121)\r\n"
    "\r\n"
    "\r\n"
    "--changesetresponse_ff83b4f1-ab48-430c-b81c-926a2c596abb--\r\n"
    "--batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f\r\n"
    "Content-Type: application/http\r\n"
    "Content-Transfer-Encoding: binary\r\n"
    "\r\n"
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: application/json; odata.metadata=minimal\r\n"
    "OData-Version: 4.0\r\n"
    "\r\n"
    '{"@odata.context":"' + ORG + '/$metadata#tasks(subject)","value":[{"subject":"Task 1 in batch"}]}\r\n'
    "--batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f--\r\n"
).encode()

# The documented continue-on-error response: the first request fails, the second still runs.
CONTINUE_ON_ERROR_RESPONSE = (
    "--batchresponse_156da4b8-cd2b-4d4e-ac0d-0b1b2d8e1b4d\r\n"
    "Content-Type: application/http\r\n"
    "Content-Transfer-Encoding: binary\r\n"
    "\r\n"
    "HTTP/1.1 400 Bad Request\r\n"
    "REQ_ID: 5ecd1cb3-1730-4ffc-909c-d44c22270026\r\n"
    "Content-Type: application/json; odata.metadata=minimal\r\n"
    "OData-Version: 4.0\r\n"
    "\r\n"
    '{"error":{"code":"0x80044331","message":"A validation error occurred.  The length of the '
    "'subject' attribute of the 'task' entity exceeded the maximum allowed length of '200'.\"}}\r\n"
    "--batchresponse_156da4b8-cd2b-4d4e-ac0d-0b1b2d8e1b4d\r\n"
    "Content-Type: application/http\r\n"
    "Content-Transfer-Encoding: binary\r\n"
    "\r\n"
    "HTTP/1.1 204 No Content\r\n"
    "OData-Version: 4.0\r\n"
    f"Location: {ORG}/tasks(aed2ad38-5b4f-ed11-bba3-000d3a9933c9)\r\n"
    f"OData-EntityId: {ORG}/tasks(aed2ad38-5b4f-ed11-bba3-000d3a9933c9)\r\n"
    "\r\n"
    "\r\n"
    "--batchresponse_156da4b8-cd2b-4d4e-ac0d-0b1b2d8e1b4d--\r\n"
).encode()


def test_decodes_documented_changeset_response_in_order() -> None:
    content_type = "multipart/mixed; boundary=batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f"
    responses = decode_batch(content_type, DOCUMENTED_RESPONSE)
    assert [r.status for r in responses] == [204, 204, 200]
    assert [r.content_id for r in responses] == ["1", "2", None]
    assert responses[0].headers["odata-entityid"].endswith("tasks(a59c24a0-b45b-e711-8130-e0071b6ac121)")
    assert responses[2].json()["value"] == [{"subject": "Task 1 in batch"}]
    assert responses[0].json() is None


def test_decodes_continue_on_error_response() -> None:
    responses = decode_batch(
        'multipart/mixed; boundary="batchresponse_156da4b8-cd2b-4d4e-ac0d-0b1b2d8e1b4d"',
        CONTINUE_ON_ERROR_RESPONSE,
    )
    assert [r.status for r in responses] == [400, 204]
    assert responses[0].json()["error"]["code"] == "0x80044331"


def test_decodes_bare_lf_line_endings() -> None:
    lf_only = DOCUMENTED_RESPONSE.replace(b"\r\n", b"\n")
    responses = decode_batch(
        "multipart/mixed; boundary=batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f", lf_only
    )
    assert [r.status for r in responses] == [204, 204, 200]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{}"),
        ("multipart/mixed; boundary=other", DOCUMENTED_RESPONSE),
        (
            "multipart/mixed; boundary=batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f",
            DOCUMENTED_RESPONSE[: len(DOCUMENTED_RESPONSE) // 2],
        ),
    ],
    ids=["not-multipart", "wrong-boundary", "truncated"],
)
def test_rejects_malformed_responses(content_type: str, body: bytes) -> None:
    with pytest.raises(BatchFormatError):
        decode_batch(content_type, body)


def _parts(content_type: str, body: bytes) -> list[Message]:
    """The top-level parts of a multipart body, parsed by the standard library's MIME parser."""
    message = message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    return _children(message)


def _children(message: Message) -> list[Message]:
    payload = message.get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, Message)]


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode("utf-8").replace("\r\n", "\n")


def test_atomic_batch_is_one_changeset_with_content_ids() -> None:
    requests = [
        BatchRequest("POST", f"{ORG}/tasks", body={"subject": "Task 1 in batch"}),
        BatchRequest("PATCH", f"{ORG}/tasks(a69c24a0-b45b-e711-8130-e0071b6ac121)", {"If-Match": "*"}, {}),
    ]
    content_type, body = encode_batch(requests, atomic=True, boundary="batch_AAA123")
    assert content_type == "multipart/mixed; boundary=batch_AAA123"
    [changeset] = _parts(content_type, body)
    assert changeset.get_content_type() == "multipart/mixed"
    parts = _children(changeset)
    assert [part["Content-ID"] for part in parts] == ["1", "2"]
    first = _text(parts[0])
    assert first.startswith(f"POST {ORG}/tasks HTTP/1.1\nContent-Type: application/json; type=entry\n\n")
    assert json.loads(first.split("\n\n", 1)[1]) == {"subject": "Task 1 in batch"}
    assert "If-Match: *" in _text(parts[1])


def test_independent_batch_has_top_level_requests_without_changeset() -> None:
    requests = [BatchRequest("DELETE", f"{ORG}/tasks({n})") for n in range(3)]
    content_type, body = encode_batch(requests, atomic=False)
    parts = _parts(content_type, body)
    assert [part.get_content_type() for part in parts] == ["application/http"] * 3
    assert [part["Content-ID"] for part in parts] == [None] * 3
    assert body.endswith(b"--\r\n")


def test_round_trip_of_unicode_body() -> None:
    content_type, body = encode_batch(
        [BatchRequest("POST", "contacts", body={"lastname": "Müller 北京"})], atomic=False
    )
    [part] = _parts(content_type, body)
    assert json.loads(_text(part).split("\n\n", 1)[1]) == {"lastname": "Müller 北京"}


def test_batch_size_limits() -> None:
    too_many = [BatchRequest("DELETE", f"tasks({n})") for n in range(MAX_BATCH_OPERATIONS + 1)]
    with pytest.raises(ValueError, match="at most 1000"):
        encode_batch(too_many, atomic=False)
    with pytest.raises(ValueError, match="at least one"):
        encode_batch([], atomic=True)
    assert [len(chunk) for chunk in chunked(too_many)] == [1000, 1]
    assert [list(chunk) for chunk in chunked([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]


def _response_part(status: int, body: str, content_id: int | None) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id is not None:
        head += f"Content-ID: {content_id}\r\n"
    return f"{head}\r\nHTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\n\r\n{body}"


@settings(max_examples=40, deadline=None)
@given(
    bodies=st.lists(
        st.tuples(st.sampled_from([200, 201, 204, 400, 404, 412, 429]), st.text(max_size=40)),
        min_size=1,
        max_size=5,
    ),
    in_changeset=st.booleans(),
)
def test_decoder_returns_every_body_unchanged(bodies: list[tuple[int, str]], in_changeset: bool) -> None:
    """Bodies with line breaks, dashes and lookalike boundaries survive; responses keep their order."""
    trap = "\r\n--batchresponse_x-not-a-boundary\r\n--changesetresponse_yz\n"
    bodies = [(status, text + trap + text) for status, text in bodies]
    parts = [
        _response_part(status, body, n if in_changeset else None)
        for n, (status, body) in enumerate(bodies, 1)
    ]
    if in_changeset:
        inner = (
            "".join(f"--changesetresponse_y\r\n{part}\r\n" for part in parts) + "--changesetresponse_y--\r\n"
        )
        parts = [f"Content-Type: multipart/mixed; boundary=changesetresponse_y\r\n\r\n{inner}"]
    document = "".join(f"--batchresponse_x\r\n{part}\r\n" for part in parts) + "--batchresponse_x--\r\n"
    decoded = decode_batch("multipart/mixed; boundary=batchresponse_x", document.encode())
    assert [(r.status, r.body.decode()) for r in decoded] == bodies
    assert [r.content_id for r in decoded] == [
        str(n) if in_changeset else None for n in range(1, len(bodies) + 1)
    ]


def _split_by_expression(body: bytes, boundary: str) -> list[bytes] | None:
    """The delimiter rule as a regular expression (how the parts were split before; slow on big
    bodies): ``None`` where the body is refused."""
    escaped = re.escape(boundary.encode("ascii"))
    delimiter = re.compile(rb"(?:^|\r?\n)--" + escaped + rb"(--)?[ \t]*(?:\r?\n|$)")
    matches = list(delimiter.finditer(body))
    if not matches or not matches[-1].group(1):
        return None
    parts = []
    for current, following in itertools.pairwise(matches):
        if current.group(1):
            break
        parts.append(body[current.end() : following.start()])
    return parts


_PIECES = st.sampled_from([b"--b", b"--b--", b"--bb", b"\r\n", b"\n", b"\r", b" ", b"\t", b"-", b"x", b"b"])


@given(st.lists(_PIECES, max_size=14).map(b"".join))
@settings(max_examples=3000)
def test_parts_are_split_where_the_delimiter_rule_says(body: bytes) -> None:
    """Delimiters found with bytes.find split exactly as the rule's regular expression does."""
    try:
        parts: list[bytes] | None = _split_multipart(body, "b")
    except BatchFormatError:
        parts = None
    assert parts == _split_by_expression(body, "b")
