"""The in-memory mailbox registry (mailbox <-> CRM user, one to one)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from shared.domain.mailbox_settings import MailboxSettings
from shared.store.errors import (
    CrmUserAlreadyRegistered,
    MailboxAlreadyRegistered,
    MailboxNotFound,
    SettingsConflict,
)
from shared.store.keys import encode_key
from shared.store.memory.common import Clock, new_etag
from shared.store.records import (
    Mailbox,
    MailboxState,
)


class MemoryRegistry:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._mailboxes: dict[str, Mailbox] = {}
        self._crm_users: dict[str, str] = {}

    async def register(
        self,
        *,
        mailbox_id: str,
        upn: str,
        crm_user_id: str,
        crm_caller_object_id: str,
        settings: MailboxSettings | None = None,
        enabled: bool = True,
    ) -> Mailbox:
        encode_key(mailbox_id)  # the same identifiers are refused as by the table store
        crm_user = crm_user_id.lower()
        if mailbox_id in self._mailboxes:
            raise MailboxAlreadyRegistered(mailbox_id)
        if crm_user in self._crm_users:
            raise CrmUserAlreadyRegistered(crm_user)
        now = self._clock()
        mailbox = Mailbox(
            mailbox_id=mailbox_id,
            upn=upn,
            crm_user_id=crm_user,
            crm_caller_object_id=crm_caller_object_id,
            enabled=enabled,
            settings=settings or MailboxSettings(),
            created_at=now,
            updated_at=now,
            etag=new_etag(),
        )
        self._mailboxes[mailbox_id] = mailbox
        self._crm_users[crm_user] = mailbox_id
        return mailbox

    async def get_mailbox(self, mailbox_id: str) -> Mailbox:
        try:
            return self._mailboxes[mailbox_id]
        except KeyError as exc:
            raise MailboxNotFound(mailbox_id) from exc

    async def get_by_crm_user(self, crm_user_id: str) -> Mailbox:
        try:
            return self._mailboxes[self._crm_users[crm_user_id.lower()]]
        except KeyError as exc:
            raise MailboxNotFound(crm_user_id) from exc

    async def list_mailboxes(self, *, enabled_only: bool = False) -> AsyncIterator[Mailbox]:
        for mailbox_id in sorted(self._mailboxes, key=encode_key):
            mailbox = self._mailboxes[mailbox_id]
            if mailbox.enabled or not enabled_only:
                yield mailbox

    def _change(self, mailbox_id: str, **changes: Any) -> Mailbox:
        mailbox = self._mailboxes.get(mailbox_id)
        if mailbox is None:
            raise MailboxNotFound(mailbox_id)
        changed = dataclasses.replace(mailbox, updated_at=self._clock(), etag=new_etag(), **changes)
        self._mailboxes[mailbox_id] = changed
        return changed

    async def set_enabled(self, mailbox_id: str, enabled: bool) -> None:
        self._change(mailbox_id, enabled=enabled)

    async def set_state(self, mailbox_id: str, state: MailboxState) -> None:
        self._change(mailbox_id, state=state)

    async def update_settings(self, mailbox: Mailbox, settings: MailboxSettings) -> Mailbox:
        if mailbox.etag is None:
            raise ValueError("update_settings needs a mailbox read from the registry (it carries the etag)")
        current = self._mailboxes.get(mailbox.mailbox_id)
        if current is None:
            raise MailboxNotFound(mailbox.mailbox_id)
        if current.etag != mailbox.etag:
            raise SettingsConflict
        return self._change(mailbox.mailbox_id, settings=settings)

    async def unregister(self, mailbox_id: str) -> None:
        mailbox = self._mailboxes.pop(mailbox_id, None)
        if mailbox is not None:
            del self._crm_users[mailbox.crm_user_id]
