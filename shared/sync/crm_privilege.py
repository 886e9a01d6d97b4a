"""The CRM user's "Sync to Outlook" privilege, without which the CRM -> Outlook direction writes nothing.

Without ``prvSyncToOutlook`` (RetrieveUserPrivileges) a mailbox only tracks mail: a CRM -> Outlook
run writes nothing and keeps the links, and the reason is recorded for ``crmsync status`` and
audited per record (``crmsync audit``); once the privilege is granted, status stops saying so.
Kept apart from the run (:mod:`shared.sync.crm_run`), which it only gates, and shared with the
initial fill and onboarding.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from shared.crm.port import CrmQueryPort
from shared.domain.model import ItemKind
from shared.store.ports import Store, SyncStateStore
from shared.store.records import AuditAction, AuditOutcome, AuditRecord, Mailbox
from shared.sync.applier import ACTOR
from shared.sync.user_reads import user_reads

SYNC_TO_OUTLOOK = "prvSyncToOutlook"
NO_PRIVILEGE_REASON = "crm_no_sync_to_outlook_privilege"


async def may_sync_to_outlook(crm: CrmQueryPort, mailbox: Mailbox) -> bool:
    """Whether the mailbox's CRM user holds "Sync to Outlook" (read as the application)."""
    privileges = await user_reads(crm).privileges(uuid.UUID(mailbox.crm_user_id))
    return SYNC_TO_OUTLOOK in privileges


async def record_refusal(
    store: Store, mailbox: Mailbox, kind: ItemKind, resource: str, record_ids: Iterable[uuid.UUID]
) -> None:
    """Why a run wrote nothing: in the resource's sync state (status) and per record (audit)."""
    await store.sync_state.record_error(mailbox.mailbox_id, resource, NO_PRIVILEGE_REASON)
    await store.audit.append_many(
        [
            AuditRecord.for_item(
                mailbox_id=mailbox.mailbox_id,
                actor=ACTOR,
                action=AuditAction.STATE_CHANGED,
                kind=kind,
                crm_id=str(record_id),
                outcome=AuditOutcome.FAILED,
                reason_code=NO_PRIVILEGE_REASON,
            )
            for record_id in dict.fromkeys(record_ids)
        ]
    )


async def clear_refusal(sync_state: SyncStateStore, mailbox_id: str, resource: str) -> None:
    """The privilege was granted since a run recorded its refusal: status stops saying so."""
    if (await sync_state.get_state(mailbox_id, resource)).last_error == NO_PRIVILEGE_REASON:
        await sync_state.reset(mailbox_id, resource)
