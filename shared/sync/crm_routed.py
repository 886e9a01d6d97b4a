"""A worker's memory of the runs routing queued: per mailbox and record, the version routed.

Every CRM change is reported twice - by the Dataverse webhook and by change tracking - and crmsync's
own writes to the CRM are reported too. Routing reads each changed record's version
(``@odata.etag``) with its owner and parties; a run queued for a mailbox reads the record afresh,
so once a run is queued for a record at a version, another report of that same version would only
queue a run that reads the same record and decides the same (the filter, the link, the copy). Such
a report costs no run: :class:`RoutedVersions` remembers the version each mailbox's run was queued
for, and routing leaves those mailboxes out.

The memory is kept by routing itself, never by a write of the Outlook -> CRM direction (which
records a version in the link without asking the user's filter: a record leaving the filter must
still reach a run). A run that fails in a way the queue may finally poison forgets its records, so
the next report (change tracking's, the safety net) queues a run again; a worker that restarts
forgets everything, which only costs runs. Bounded: the oldest entries go first.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterable

_DEFAULT_SIZE = 100_000  # entries: a few MB; far more than the records changed per minute


class RoutedVersions:
    """(mailbox, table, record) -> the version of the record the mailbox's last queued run was for."""

    def __init__(self, size: int = _DEFAULT_SIZE) -> None:
        self._size = size
        self._versions: OrderedDict[tuple[str, str, uuid.UUID], str] = OrderedDict()

    def queued(self, mailbox_id: str, table: str, record_id: uuid.UUID, version: str | None) -> bool:
        """Whether a run for the record at ``version`` is queued (or done) for the mailbox."""
        return version is not None and self._versions.get((mailbox_id, table, record_id)) == version

    def note(self, mailbox_id: str, table: str, versions: Iterable[tuple[uuid.UUID, str | None]]) -> None:
        """A run for these records is queued for the mailbox (a record without a version: forgotten)."""
        for record_id, version in versions:
            key = (mailbox_id, table, record_id)
            self._versions.pop(key, None)
            if version is not None:
                self._versions[key] = version
        while len(self._versions) > self._size:
            self._versions.popitem(last=False)

    def forget(self, mailbox_id: str, table: str, record_ids: Iterable[uuid.UUID]) -> None:
        """The mailbox's run for these records failed: the next report queues one again."""
        for record_id in record_ids:
            self._versions.pop((mailbox_id, table, record_id), None)
