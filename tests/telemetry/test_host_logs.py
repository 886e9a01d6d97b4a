"""What the Functions host's log receives from the worker holds no address, URL with ids or GUID.

The Python worker attaches a handler to the root logger before it imports the function app; that
handler formats each record (``logging.Formatter``: message, then ``exc_text`` or the formatted
exception) and sends the text to the host, which writes it to its logs and, with a connection
string, to Application Insights, outside OpenTelemetry's processors. A ``StreamHandler`` formats
the same way.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from shared import telemetry
from shared.store.fingerprint import short_fingerprint
from shared.telemetry.logs import RedactingLogFilter

UPN = "erin.castellanos@contoso.example"
GUID = "6f1c2920-6ccc-4cd1-b1b7-dc8ea73ea595"


@pytest.fixture
def host_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for other in root.handlers:  # pytest's own handlers got the filter too: take it back
            for found in [f for f in other.filters if isinstance(f, RedactingLogFilter)]:
                other.removeFilter(found)


def test_records_reach_the_host_handler_scrubbed(host_handler: io.StringIO) -> None:
    telemetry.configure()  # what function_app.py does on import, after the worker's handler exists
    log = logging.getLogger("shared.test_host_logs")

    try:
        raise LookupError(
            f"Resource '{UPN}' does not exist: https://graph.microsoft.com/v1.0/users/{UPN}?$top=1"
        )
    except LookupError:
        log.exception("sync of %s failed (CRM user %s)", UPN, GUID)

    written = host_handler.getvalue()
    assert UPN not in written
    assert GUID not in written
    assert f"sync of {short_fingerprint(UPN)} failed (CRM user {short_fingerprint(GUID)})" in written
    assert "Traceback (most recent call last)" in written
    assert "LookupError: Resource '" + short_fingerprint(UPN) + "' does not exist" in written
    assert "https://graph.microsoft.com/v1.0/users/{id}" in written
