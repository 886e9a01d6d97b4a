"""The tracking decision's only input: a message's envelope.

Dynamics decides tracking from the sender, the recipients, the subject and the message id, never
from the body (docs/ARCHITECTURE.md, privacy). :class:`Envelope` carries exactly that - plus the ids the
decision needs to find the message's folder and its earlier decision - and nothing else, so a
policy *cannot* read content: the rule is structural, not a convention.

Correlation uses ``conversationId``. ``In-Reply-To`` is not a message property in Graph v1.0; it is
one of the ``internetMessageHeaders``, which Graph returns only when ``$select``-ed on a single
message GET ("message resource type", learn.microsoft.com/graph/api/resources/message: "To get the
headers of a message, apply the $select query parameter") - one extra request per message, and not
available in the delta's ``$select``. ``conversationId`` is in the delta page at no cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.model import Email, OutlookItem


@dataclass(frozen=True, slots=True)
class Envelope:
    """Who, to whom, about what, in which thread and folder - no body, no attachments.

    Addresses are lower-cased; they are personal data and never logged.
    """

    item_id: str
    sender: str | None
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str | None
    internet_message_id: str | None
    conversation_id: str | None
    folder_id: str | None
    categories: tuple[str, ...]
    is_outgoing: bool

    @classmethod
    def of(cls, item: OutlookItem) -> Envelope | None:
        """The envelope of a present message; ``None`` for a removal or another kind of item."""
        email = item.item
        if item.removed or not isinstance(email, Email):
            return None
        return cls(
            item_id=item.item_id,
            sender=email.sender.address.lower() if email.sender else None,
            to=tuple(address.address.lower() for address in email.to),
            cc=tuple(address.address.lower() for address in email.cc),
            subject=email.subject,
            internet_message_id=email.internet_message_id,
            conversation_id=email.conversation_id,
            folder_id=item.folder_id,
            categories=item.categories,
            is_outgoing=email.is_outgoing,
        )

    def counterparts(self) -> tuple[str, ...]:
        """The other side of the conversation: the sender of received mail, the recipients of sent mail."""
        if self.is_outgoing:
            return self.to + self.cc
        return (self.sender,) if self.sender else ()
