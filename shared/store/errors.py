"""Typed storage errors, built on azure-core's exceptions so callers can catch either level.

Following the Azure SDK design guidelines (azure.github.io/azure-sdk/python_design.html,
"Exceptions"): 409 conflicts are :class:`ResourceExistsError`, lost ETag races (412) are
:class:`ResourceModifiedError`, missing records :class:`ResourceNotFoundError`; the storage
error that caused one is chained (``raise ... from``). Messages name identifiers only by
fingerprint: an error message may end up in a log.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.store.fingerprint import short_fingerprint as _short


class InvalidKey(ValueError):
    """An identifier that cannot become a Table Storage key (empty, too long, not Unicode)."""


class MailboxAlreadyRegistered(ResourceExistsError):
    """The mailbox is already registered (to this or another CRM user); nothing was written."""

    def __init__(self, mailbox_id: str) -> None:
        super().__init__(message=f"mailbox {_short(mailbox_id)} is already registered")
        self.mailbox_id = mailbox_id


class CrmUserAlreadyRegistered(ResourceExistsError):
    """The CRM user already has a mailbox: one mailbox per CRM user. Nothing was written."""

    def __init__(self, crm_user_id: str) -> None:
        super().__init__(message=f"CRM user {_short(crm_user_id)} already has a mailbox")
        self.crm_user_id = crm_user_id


class MailboxNotFound(ResourceNotFoundError):
    """No registered mailbox has that id (or that CRM user)."""

    def __init__(self, identifier: str) -> None:
        super().__init__(message=f"no registered mailbox for {_short(identifier)}")
        self.identifier = identifier


class SubscriptionNotFound(ResourceNotFoundError):
    """No stored Graph subscription has that id."""

    def __init__(self, subscription_id: str) -> None:
        super().__init__(message=f"no subscription {_short(subscription_id)}")
        self.subscription_id = subscription_id


class StaleWrite(ResourceModifiedError):
    """Someone else wrote the record since it was read (ETag mismatch, or it is gone): re-read, retry."""

    def __init__(self, what: str) -> None:
        super().__init__(message=f"{what} changed since it was read")
        self.what = what


class SettingsConflict(StaleWrite):
    """The mailbox record changed since it was read; its settings were not written."""

    def __init__(self) -> None:
        super().__init__("mailbox")


class LinkConflict(StaleWrite):
    """The link changed or was deleted since it was read; neither of its rows was written."""

    def __init__(self) -> None:
        super().__init__("link")


class LinkAlreadyExists(ResourceExistsError):
    """A link already holds that Outlook item (``side="outlook"``) or CRM record (``side="crm"``)."""

    def __init__(self, side: Literal["outlook", "crm"]) -> None:
        super().__init__(message=f"the {side} side of this link is already linked")
        self.side = side


class LeaseHeld(ResourceExistsError):
    """Another owner holds the mailbox lease (``owner``/``expires_at`` are ``None`` after a lost race)."""

    def __init__(self, owner: str | None, expires_at: dt.datetime | None) -> None:
        until = f" until {expires_at.isoformat()}" if expires_at else ""
        super().__init__(message=f"the mailbox lease is held by another owner{until}")
        self.owner = owner
        self.expires_at = expires_at


class LeaseLost(StaleWrite):
    """The lease was taken over (it had expired) or released; the holder must stop writing."""

    def __init__(self) -> None:
        super().__init__("lease")
