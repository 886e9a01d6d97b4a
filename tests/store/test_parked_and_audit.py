"""Parked-item and audit-trail contracts, and the privacy guards on what they can hold."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from shared.domain.model import ItemKind
from shared.store import Store
from shared.store.fingerprint import fingerprint
from shared.store.records import AuditAction, AuditOutcome, AuditRecord, ItemRef, ParkedItem
from tests.store.helpers import ManualClock

MAILBOX = "5f0b1c1e-0000-4000-8000-00000000000a"
OUTLOOK_REF = ItemRef(kind=ItemKind.EMAIL, outlook_id="AAMkAGI2=/+x")
CRM_REF = ItemRef(kind=ItemKind.CONTACT, crm_table="contact", crm_id="0b7e5a8e-0000-4000-8000-000000000001")
HINT = "Grant the user's security role Create on Email, then it is retried"


async def _parked(store: Store, mailbox_id: str | None = MAILBOX) -> dict[ItemRef, int]:
    return {item.ref: item.attempts async for item in store.parked.list_parked(mailbox_id)}


class TestParkedContract:
    async def test_park_counts_attempts_and_keeps_the_first_failure(
        self, store: Store, clock: ManualClock
    ) -> None:
        first = await store.parked.park(
            MAILBOX, OUTLOOK_REF, reason_code="crm_privilege_denied", message=HINT
        )
        first_at = clock.now
        clock.advance(3600)
        again = await store.parked.park(
            MAILBOX, OUTLOOK_REF, reason_code="crm_invalid_data", message="Fix it"
        )

        assert (first.attempts, again.attempts) == (1, 2)
        assert (again.first_failed_at, again.last_failed_at) == (first_at, clock.now)
        assert again.reason_code == "crm_invalid_data"
        assert [item async for item in store.parked.list_parked(MAILBOX)] == [again]

    async def test_list_count_remove_per_mailbox(self, store: Store) -> None:
        await store.parked.park(MAILBOX, OUTLOOK_REF, reason_code="a", message=HINT)
        await store.parked.park(MAILBOX, CRM_REF, reason_code="b", message=HINT)
        await store.parked.park("other-mailbox", OUTLOOK_REF, reason_code="c", message=HINT)

        assert await _parked(store) == {OUTLOOK_REF: 1, CRM_REF: 1}
        assert len([item async for item in store.parked.list_parked()]) == 3
        assert await store.parked.count(MAILBOX) == 2

        await store.parked.remove(MAILBOX, CRM_REF)
        await store.parked.remove(MAILBOX, CRM_REF)  # already gone: fine
        assert await _parked(store) == {OUTLOOK_REF: 1}
        assert await store.parked.count("other-mailbox") == 1


class TestAuditContract:
    async def test_newest_first_per_mailbox_with_limit(self, store: Store, clock: ManualClock) -> None:
        for minute, action in enumerate([AuditAction.REGISTERED, AuditAction.LINKED, AuditAction.PARKED]):
            clock.advance(60)
            await store.audit.append(
                AuditRecord.for_item(
                    mailbox_id=MAILBOX,
                    actor="engine",
                    action=action,
                    kind=ItemKind.EMAIL,
                    outlook_id=f"item-{minute}",
                    outcome=AuditOutcome.FAILED if action is AuditAction.PARKED else AuditOutcome.OK,
                    reason_code="crm_privilege_denied" if action is AuditAction.PARKED else None,
                    at=clock.now,
                )
            )
        await store.audit.append(
            AuditRecord(mailbox_id="other", actor="admin", action=AuditAction.REGISTERED)
        )

        recent = await store.audit.list_recent(MAILBOX, limit=2)
        assert [record.action for record in recent] == [AuditAction.PARKED, AuditAction.LINKED]
        assert recent[0].outlook_id_hash == fingerprint("item-2")
        assert recent[0].at == clock.now
        assert (recent[0].outcome, recent[0].reason_code) == (AuditOutcome.FAILED, "crm_privilege_denied")
        assert len(await store.audit.list_recent(MAILBOX)) == 3

    async def test_append_many_writes_one_mailboxs_records_in_transactions(
        self, store: Store, clock: ManualClock
    ) -> None:
        records = [
            AuditRecord.for_item(
                mailbox_id=MAILBOX,
                actor="engine",
                action=AuditAction.CREATED_IN_CRM,
                kind=ItemKind.CONTACT,
                outlook_id=f"item-{n}",
                at=clock.now,
            )
            for n in range(150)  # more than one entity-group transaction holds
        ]
        await store.audit.append_many(records)

        recent = await store.audit.list_recent(MAILBOX, limit=1000)
        assert sorted(r.outlook_id_hash or "" for r in recent) == sorted(
            fingerprint(f"item-{n}") for n in range(150)
        )
        with pytest.raises(ValueError, match="one mailbox"):
            await store.audit.append_many([records[0], records[0].model_copy(update={"mailbox_id": "other"})])


@pytest.mark.parametrize(
    "fields",
    [
        {"reason_code": "sent to ann@contoso.example"},
        {"actor": "ann@contoso.example"},
        {"mailbox_id": "ann@contoso.example"},
        {"body": "Hello Ann"},
        {"outlook_id_hash": "AAMkAGI2=/+x"},
    ],
    ids=["reason", "actor", "mailbox", "extra-field", "raw-id"],
)
def test_audit_records_cannot_carry_content_or_addresses(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        AuditRecord.model_validate(
            {"mailbox_id": MAILBOX, "actor": "engine", "action": AuditAction.LINKED, **fields}
        )


def test_parked_messages_refuse_addresses_and_item_refs_name_one_side() -> None:
    with pytest.raises(ValidationError):
        ItemRef(kind=ItemKind.EMAIL)
    with pytest.raises(ValidationError):
        ItemRef(kind=ItemKind.EMAIL, outlook_id="x", crm_table="email", crm_id="y")
    with pytest.raises(ValidationError):
        ItemRef(kind=ItemKind.CONTACT, crm_table="contact")
    with pytest.raises(ValidationError):
        ParkedItem(
            mailbox_id=MAILBOX,
            ref=OUTLOOK_REF,
            reason_code="x",
            message="Reply from ann@contoso.example failed",
            attempts=1,
            first_failed_at=dt.datetime(2026, 11, 22, tzinfo=dt.UTC),
            last_failed_at=dt.datetime(2026, 11, 22, tzinfo=dt.UTC),
        )
