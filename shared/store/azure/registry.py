"""The mailbox registry on Table Storage: mailbox rows and their CRM-user rows in one partition."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient

from shared.domain.mailbox_settings import MailboxSettings
from shared.store.azure.common import (
    Clock,
    entity_etag,
    if_match,
    query,
    range_filter,
    required_utc,
)
from shared.store.azure.transactions import submit_transaction
from shared.store.errors import (
    CrmUserAlreadyRegistered,
    MailboxAlreadyRegistered,
    MailboxNotFound,
    SettingsConflict,
    StaleWrite,
)
from shared.store.keys import encode_key, key_range, row_key
from shared.store.records import (
    Mailbox,
    MailboxState,
)

_REGISTRY_PARTITION = "registry"
_MAILBOX = "mailbox"
_CRM_USER = "crmuser"


def _mailbox_row(mailbox_id: str) -> str:
    return row_key(_MAILBOX, encode_key(mailbox_id))


def _crm_user_row(crm_user_id: str) -> str:
    return row_key(_CRM_USER, encode_key(crm_user_id))


def _mailbox_from(entity: TableEntity) -> Mailbox:
    return Mailbox(
        mailbox_id=entity["mailbox_id"],
        upn=entity["upn"],
        crm_user_id=entity["crm_user_id"],
        crm_caller_object_id=entity["crm_caller_object_id"],
        enabled=bool(entity["enabled"]),
        state=MailboxState(entity["state"]),
        settings=MailboxSettings.model_validate_json(entity["settings"]),
        created_at=required_utc(entity["created_at"]),
        updated_at=required_utc(entity["updated_at"]),
        etag=entity_etag(entity),
    )


class AzureRegistry:
    """Registry rows live in ONE partition, so a mailbox row and its CRM-user row commit together."""

    def __init__(self, table: TableClient, clock: Clock) -> None:
        self._table = table
        self._clock = clock

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
        now = self._clock()
        mailbox = Mailbox(
            mailbox_id=mailbox_id,
            upn=upn,
            crm_user_id=crm_user_id.lower(),
            crm_caller_object_id=crm_caller_object_id,
            enabled=enabled,
            settings=settings or MailboxSettings(),
            created_at=now,
            updated_at=now,
        )
        mailbox_entity = {
            "PartitionKey": _REGISTRY_PARTITION,
            "RowKey": _mailbox_row(mailbox.mailbox_id),
            "mailbox_id": mailbox.mailbox_id,
            "upn": mailbox.upn,
            "crm_user_id": mailbox.crm_user_id,
            "crm_caller_object_id": mailbox.crm_caller_object_id,
            "enabled": mailbox.enabled,
            "state": mailbox.state.value,
            "settings": mailbox.settings.model_dump_json(),
            "created_at": now,
            "updated_at": now,
        }
        crm_user_entity = {
            "PartitionKey": _REGISTRY_PARTITION,
            "RowKey": _crm_user_row(mailbox.crm_user_id),
            "crm_user_id": mailbox.crm_user_id,
            "mailbox_id": mailbox.mailbox_id,
        }
        try:
            results = await submit_transaction(
                self._table, [("create", mailbox_entity), ("create", crm_user_entity)]
            )
        except TableTransactionError as exc:
            if exc.status_code == 409:
                if exc.index == 0:
                    raise MailboxAlreadyRegistered(mailbox_id) from exc
                raise CrmUserAlreadyRegistered(mailbox.crm_user_id) from exc
            raise
        return replace(mailbox, etag=results[0]["etag"])

    async def _get_entity(self, mailbox_id: str) -> TableEntity:
        try:
            return await self._table.get_entity(_REGISTRY_PARTITION, _mailbox_row(mailbox_id))
        except ResourceNotFoundError as exc:
            raise MailboxNotFound(mailbox_id) from exc

    async def get_mailbox(self, mailbox_id: str) -> Mailbox:
        return _mailbox_from(await self._get_entity(mailbox_id))

    async def get_by_crm_user(self, crm_user_id: str) -> Mailbox:
        """Two round trips: the CRM-user row names the mailbox."""
        try:
            pointer = await self._table.get_entity(_REGISTRY_PARTITION, _crm_user_row(crm_user_id.lower()))
        except ResourceNotFoundError as exc:
            raise MailboxNotFound(crm_user_id) from exc
        return await self.get_mailbox(pointer["mailbox_id"])

    async def list_mailboxes(self, *, enabled_only: bool = False) -> AsyncIterator[Mailbox]:
        low, high = key_range(_MAILBOX)
        query_filter = range_filter(" and enabled eq true" if enabled_only else "")
        async for entity in query(
            self._table, query_filter, {"pk": _REGISTRY_PARTITION, "low": low, "high": high}
        ):
            yield _mailbox_from(entity)

    async def _merge(self, mailbox_id: str, **properties: Any) -> None:
        entity = {"PartitionKey": _REGISTRY_PARTITION, "RowKey": _mailbox_row(mailbox_id), **properties}
        try:  # unconditional MERGE still sends If-Match: *, so a missing mailbox is a 404
            await self._table.update_entity(entity, mode=UpdateMode.MERGE)
        except ResourceNotFoundError as exc:
            raise MailboxNotFound(mailbox_id) from exc

    async def set_enabled(self, mailbox_id: str, enabled: bool) -> None:
        await self._merge(mailbox_id, enabled=enabled, updated_at=self._clock())

    async def set_state(self, mailbox_id: str, state: MailboxState) -> None:
        await self._merge(mailbox_id, state=state.value, updated_at=self._clock())

    async def update_settings(self, mailbox: Mailbox, settings: MailboxSettings) -> Mailbox:
        if mailbox.etag is None:
            raise ValueError("update_settings needs a mailbox read from the registry (it carries the etag)")
        now = self._clock()
        entity = {
            "PartitionKey": _REGISTRY_PARTITION,
            "RowKey": _mailbox_row(mailbox.mailbox_id),
            "settings": settings.model_dump_json(),
            "updated_at": now,
        }
        try:
            result = await self._table.update_entity(entity, mode=UpdateMode.MERGE, **if_match(mailbox.etag))
        except ResourceNotFoundError as exc:
            raise MailboxNotFound(mailbox.mailbox_id) from exc
        except ResourceModifiedError as exc:
            raise SettingsConflict from exc
        return replace(mailbox, etag=result["etag"], settings=settings, updated_at=now)

    async def unregister(self, mailbox_id: str) -> None:
        """Two round trips: read the mailbox (for its CRM user), then delete both rows at once."""
        try:
            entity = await self._get_entity(mailbox_id)
        except MailboxNotFound:
            return
        crm_user_row = {"PartitionKey": _REGISTRY_PARTITION, "RowKey": _crm_user_row(entity["crm_user_id"])}
        try:
            await submit_transaction(
                self._table, [("delete", entity, if_match(entity_etag(entity))), ("delete", crm_user_row)]
            )
        except TableTransactionError as exc:
            if exc.status_code in (404, 412):
                raise StaleWrite("mailbox registration") from exc
            raise
