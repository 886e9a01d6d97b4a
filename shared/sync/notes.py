"""Standing notes a run leaves for the administrator: something synced on purpose in a form the
user may not expect, shown on the status page and by ``crmsync status`` until a resync.

A note is the reason code of a pseudo-resource's sync state (``note:<topic>``), so leaving one is
a single merge write, reading one a single point read, and nothing new is stored per item: the
audit trail (``crmsync audit``) names the items.
"""

from __future__ import annotations

from shared.store.ports import SyncStateStore

#: An Outlook series with no Dynamics form (or the reverse) is synchronised as its occurrences.
SERIES_NOT_EXPRESSIBLE = "series_pattern_not_expressible"
_SERIES = "note:series"

MESSAGES = {
    SERIES_NOT_EXPRESSIBLE: (
        "a recurring series has a pattern the other side cannot express (for example an interval "
        "over 1000 or more than 999 occurrences), so it is synced as single occurrences, not as a "
        "series; `crmsync audit <mailbox>` lists it (reason series_pattern_not_expressible)"
    ),
}
_TOPICS = {SERIES_NOT_EXPRESSIBLE: _SERIES}


async def leave_note(state: SyncStateStore, mailbox_id: str, reason_code: str) -> None:
    await state.record_error(mailbox_id, _TOPICS[reason_code], reason_code)


async def clear_notes(state: SyncStateStore, mailbox_id: str) -> None:
    """A resync reads everything again: the runs that follow leave the notes that still hold."""
    for topic in _TOPICS.values():
        await state.reset(mailbox_id, topic)


async def read_notes(state: SyncStateStore, mailbox_id: str) -> dict[str, str]:
    """reason code -> what it means for the user, for the notes that stand."""
    notes = {}
    for topic in sorted(set(_TOPICS.values())):
        code = (await state.get_state(mailbox_id, topic)).last_error
        if code is not None:
            notes[code] = MESSAGES.get(code, code)
    return notes
