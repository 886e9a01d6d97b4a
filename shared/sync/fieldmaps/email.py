"""Outlook message -> Dataverse ``email`` (to the CRM only: tracked mail is a record of what was said).

Every column is fixed and flows to the CRM only: ``subject``; ``description`` (the body, written
only when it was read, which happens only for mail that will be tracked - until then the column
is left alone rather than cleared); ``directioncode`` (true = outgoing); ``messageid`` (the
internetMessageId, also the record's natural key: one CRM email per message however many
mailboxes hold a copy); the status Completed / Sent (3) for
outgoing and Completed / Received (4) for incoming mail, as Dynamics records tracked mail; and the
parties ``from`` (sender, 1), ``to`` (2), ``cc`` (3) and ``bcc`` (4). The applier resolves each
party address to a systemuser, contact, account or lead, in that order, else keeps it as
``addressused`` only.

Drafts and messages without an internetMessageId are not synchronised (no stable identity).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from shared.domain.model import Email, FieldDirection, ItemKind, Participation
from shared.sync.fieldmaps.base import (
    ABSENT,
    Absent,
    CrmValue,
    FieldMap,
    FieldMapping,
    parties,
    text,
    text_column,
)

STATUS_SENT = 3
STATUS_RECEIVED = 4
STATE_COMPLETED = 1


def _body(email: Email) -> CrmValue | Absent:
    return text(email.body) if email.body is not None else ABSENT


def _skip_reason(email: Email) -> str | None:
    if email.is_draft:
        return "draft: only sent and received mail is tracked"
    if not email.internet_message_id:
        return "no internetMessageId: the message has no stable identity yet"
    return None


def _one_way(
    column: str, value_of: Callable[[Email], CrmValue | Absent], follows: str | None = None
) -> FieldMapping[Email]:
    return FieldMapping(column, value_of, None, FieldDirection.TO_CRM, fixed=True, follows=follows)


def _party_column(
    column: str, participation: Participation, addresses: Callable[[Email], Iterable[str | None]]
) -> FieldMapping[Email]:
    return _one_way(column, lambda email: parties(participation, addresses(email)))


EMAIL_MAP: FieldMap[Email] = FieldMap(
    ItemKind.EMAIL,
    "email",
    (
        text_column(Email, "subject", "subject", direction=FieldDirection.TO_CRM, fixed=True),
        _one_way("description", _body),
        _one_way("directioncode", lambda email: email.is_outgoing),
        _one_way("messageid", lambda email: text(email.internet_message_id)),
        _one_way("statuscode", lambda email: STATUS_SENT if email.is_outgoing else STATUS_RECEIVED),
        _one_way("statecode", lambda email: STATE_COMPLETED, follows="statuscode"),
        _party_column(
            "from", Participation.SENDER, lambda email: [email.sender.address if email.sender else None]
        ),
        _party_column("to", Participation.TO, lambda email: (a.address for a in email.to)),
        _party_column("cc", Participation.CC, lambda email: (a.address for a in email.cc)),
        _party_column("bcc", Participation.BCC, lambda email: (a.address for a in email.bcc)),
    ),
    unsyncable=_skip_reason,
)
