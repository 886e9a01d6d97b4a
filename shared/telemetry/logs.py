"""Scrubbing for Python's own log handlers (no OpenTelemetry import: it runs in every process)."""

from __future__ import annotations

import logging
import traceback

from shared.telemetry.scrub import scrub_text


class RedactingLogFilter(logging.Filter):
    """Scrubs a Python log record in place before a handler formats it: the message (arguments
    merged in), the exception's and the stack's text.

    For the handlers that are not OpenTelemetry's: above all the Functions worker's, which sends
    every record it formats to the host's own logs (and, with a connection string, to Application
    Insights as traces). Its formatter uses ``exc_text`` when set, as ``logging.Formatter`` does.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub_text(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub_text("".join(traceback.format_exception(record.exc_info[1])).rstrip("\n"))
        elif record.exc_text:
            record.exc_text = scrub_text(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub_text(record.stack_info)
        return True
