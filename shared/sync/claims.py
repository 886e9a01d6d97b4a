"""Stopping a mailbox another crmsync deployment took over (the claim: shared/outlook/claim.py).

Both directions' runs ask before they take the lease: once another deployment claims the mailbox,
this deployment writes nothing more to it, disables it here and says why in the sync state.
"""

from __future__ import annotations

import logging

from shared.outlook.claim import Claim, ClaimGuard
from shared.store.fingerprint import short_fingerprint
from shared.store.ports import Store
from shared.store.records import MailboxState

logger = logging.getLogger(__name__)

#: The sync state's last error on a mailbox another deployment took over.
TAKEN_OVER_REASON = "synchronized_by_another_deployment"


async def stop_if_taken_over(
    store: Store, claims: ClaimGuard | None, mailbox_id: str, resource: str
) -> Claim | None:
    """The other deployment's claim if one holds the mailbox (then the mailbox is disabled here)."""
    if claims is None:
        return None
    holder = await claims.held_elsewhere(mailbox_id)
    if holder is None:
        return None
    logger.error(
        "mailbox %s is synchronized by another crmsync deployment now: disabled here",
        short_fingerprint(mailbox_id),
    )
    await store.registry.set_enabled(mailbox_id, False)
    await store.registry.set_state(mailbox_id, MailboxState.DISABLED)
    await store.sync_state.record_error(mailbox_id, resource, TAKEN_OVER_REASON)
    return holder
