"""Registry contract: one mailbox per CRM user and one CRM user per mailbox, atomically."""

from __future__ import annotations

import pytest

from shared.domain.mailbox_settings import MailboxSettings
from shared.domain.model import ItemKind, TrackingRule
from shared.store import Store
from shared.store.errors import (
    CrmUserAlreadyRegistered,
    MailboxAlreadyRegistered,
    MailboxNotFound,
    SettingsConflict,
)
from shared.store.records import Mailbox, MailboxState
from tests.store.helpers import ManualClock, race

MAILBOX = "5f0b1c1e-0000-4000-8000-00000000000a"
OTHER_MAILBOX = "5f0b1c1e-0000-4000-8000-00000000000b"
CRM_USER = "A1B2C3D4-0000-4000-8000-000000000001"
OTHER_CRM_USER = "a1b2c3d4-0000-4000-8000-000000000002"


async def _register(store: Store, mailbox_id: str = MAILBOX, crm_user_id: str = CRM_USER) -> Mailbox:
    return await store.registry.register(
        mailbox_id=mailbox_id,
        upn=f"user-{mailbox_id[-1]}@contoso.example",
        crm_user_id=crm_user_id,
        crm_caller_object_id="caller-" + mailbox_id[-1],
    )


async def _all(store: Store, *, enabled_only: bool = False) -> list[str]:
    return [mailbox.mailbox_id async for mailbox in store.registry.list_mailboxes(enabled_only=enabled_only)]


class TestRegistryContract:
    async def test_register_then_read_from_either_side(self, store: Store, clock: ManualClock) -> None:
        registered = await _register(store)

        by_mailbox = await store.registry.get_mailbox(MAILBOX)
        by_crm_user = await store.registry.get_by_crm_user(CRM_USER.upper())
        assert by_mailbox == by_crm_user == registered
        assert by_mailbox.crm_user_id == CRM_USER.lower()
        assert by_mailbox.settings == MailboxSettings()
        assert (by_mailbox.enabled, by_mailbox.state) == (True, MailboxState.ACTIVE)
        assert by_mailbox.created_at == by_mailbox.updated_at == clock.now
        assert by_mailbox.etag

    async def test_unknown_mailbox_and_crm_user_raise_not_found(self, store: Store) -> None:
        with pytest.raises(MailboxNotFound):
            await store.registry.get_mailbox(MAILBOX)
        with pytest.raises(MailboxNotFound):
            await store.registry.get_by_crm_user(CRM_USER)
        with pytest.raises(MailboxNotFound):
            await store.registry.set_enabled(MAILBOX, False)

    async def test_a_second_mailbox_for_the_same_crm_user_is_refused_whole(self, store: Store) -> None:
        await _register(store)
        with pytest.raises(CrmUserAlreadyRegistered):
            await _register(store, OTHER_MAILBOX, CRM_USER.lower())
        with pytest.raises(MailboxNotFound):  # nothing half-written
            await store.registry.get_mailbox(OTHER_MAILBOX)

    async def test_a_second_crm_user_for_the_same_mailbox_is_refused_whole(self, store: Store) -> None:
        await _register(store)
        with pytest.raises(MailboxAlreadyRegistered):
            await _register(store, MAILBOX, OTHER_CRM_USER)
        with pytest.raises(MailboxNotFound):
            await store.registry.get_by_crm_user(OTHER_CRM_USER)

    async def test_racing_registrations_of_one_mailbox_one_wins(self, store: Store) -> None:
        won, lost = await race(_register(store, MAILBOX, CRM_USER), _register(store, MAILBOX, OTHER_CRM_USER))
        assert len(won) == 1
        assert [type(error) for error in lost] == [MailboxAlreadyRegistered]
        assert await _all(store) == [MAILBOX]
        assert (await store.registry.get_by_crm_user(won[0].crm_user_id)).mailbox_id == MAILBOX
        loser = OTHER_CRM_USER if won[0].crm_user_id == CRM_USER.lower() else CRM_USER
        with pytest.raises(MailboxNotFound):
            await store.registry.get_by_crm_user(loser)

    async def test_racing_registrations_of_one_crm_user_one_wins(self, store: Store) -> None:
        won, lost = await race(_register(store, MAILBOX, CRM_USER), _register(store, OTHER_MAILBOX, CRM_USER))
        assert len(won) == 1
        assert [type(error) for error in lost] == [CrmUserAlreadyRegistered]
        assert await _all(store) == [won[0].mailbox_id]

    async def test_enable_disable_and_state(self, store: Store) -> None:
        await _register(store)
        await _register(store, OTHER_MAILBOX, OTHER_CRM_USER)
        await store.registry.set_enabled(MAILBOX, False)
        await store.registry.set_state(OTHER_MAILBOX, MailboxState.DEGRADED)

        assert await _all(store) == [MAILBOX, OTHER_MAILBOX]
        assert await _all(store, enabled_only=True) == [OTHER_MAILBOX]
        assert (await store.registry.get_mailbox(OTHER_MAILBOX)).state is MailboxState.DEGRADED

    async def test_settings_update_is_etag_conditional(self, store: Store, clock: ManualClock) -> None:
        read = await _register(store)
        settings = MailboxSettings(item_kinds=frozenset({ItemKind.EMAIL}), tracking=TrackingRule.ALL)
        clock.advance(60)

        updated = await store.registry.update_settings(read, settings)
        assert updated.settings == settings
        assert updated.updated_at == clock.now
        assert await store.registry.get_mailbox(MAILBOX) == updated
        with pytest.raises(SettingsConflict):  # `read` is stale now
            await store.registry.update_settings(read, MailboxSettings())
        assert (await store.registry.get_mailbox(MAILBOX)).settings == settings

    async def test_unregister_frees_both_sides(self, store: Store) -> None:
        await _register(store)
        await store.registry.unregister(MAILBOX)
        await store.registry.unregister(MAILBOX)  # already gone: fine

        with pytest.raises(MailboxNotFound):
            await store.registry.get_by_crm_user(CRM_USER)
        again = await _register(store, OTHER_MAILBOX, CRM_USER)  # the CRM user is free again
        assert again.mailbox_id == OTHER_MAILBOX
