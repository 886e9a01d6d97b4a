"""The tracking policy: is this message tracked, and regarding what? Decided from the envelope only.

Dynamics' rules, in the order crmsync applies them (the first that speaks decides):

1. **Category** (manual tracking, "Track Outlook email", learn.microsoft.com/dynamics365/outlook-app/
   user/track-outlook-email): the mailbox's tracked category tracks the message; removing it untracks
   a message that the category tracked.
2. **Tracked folder**: a message in a mapped folder (or a subfolder) is tracked regarding the
   folder's record (:mod:`shared.sync.tracking.folders`). A message that *left* a tracked folder stays
   tracked with its regarding cleared.
3. **Earlier verdicts stand**: a message a rule or correlation tracked stays tracked, so a CRM
   contact deleted later does not untrack last month's mail.
4. **Sent items** are tracked by the rules below only with ``track_sent_items``.
5. **Correlation**: a reply or forward of a tracked message (same ``conversationId``, or the same
   tracking token in the subject when ``tracking_token_prefix`` is set) is tracked regarding what the
   thread is regarding ("Use correlation to track email conversations", learn.microsoft.com/
   power-platform/admin/email-message-filtering-correlation). ``In-Reply-To`` is not used: see
   :mod:`shared.sync.tracking.envelope`.
6. **Automatic rule** (personal options, Email tab: "Set an option to automatically track incoming
   Outlook email", MicrosoftDocs dynamics-365-customer-engagement ce/outlook-addin/user-guide/
   set-option-automatically-track-incoming-outlook-email.md): none | all email | email in response to
   CRM email (= correlated, rule 5) | email from CRM leads, contacts and accounts | email from records
   that are email enabled. "From" means the sender of received mail and the recipients of sent mail.

CRM lookups run as the mailbox's CRM user (impersonated), one ``$batch`` per address, cached for the
run. The policy never sees a body: :class:`~shared.sync.tracking.envelope.Envelope` has none.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from shared.crm.port import EMAIL_RESOLUTION_ORDER, CrmPort, RecordRef
from shared.domain.mailbox_settings import CrmRecordRef, MailboxSettings
from shared.domain.model import TrackingRule
from shared.sync.concurrency import Memo
from shared.sync.tracking.envelope import Envelope
from shared.sync.tracking.folders import FolderTree
from shared.sync.tracking.index import (
    ThreadKey,
    TrackedMessage,
    TrackedThread,
    TrackedVia,
    TrackingIndex,
)

#: The tables "leads, contacts and accounts" means.
CRM_RECORD_TABLES = ("lead", "contact", "account")
#: Email-enabled tables crmsync can search by address (Dataverse's resolution order).
EMAIL_ENABLED_TABLES = EMAIL_RESOLUTION_ORDER


class Reason(enum.StrEnum):
    """Why the policy decided as it did (logged and audited; carries no personal data)."""

    CATEGORY = "category"
    CATEGORY_REMOVED = "category_removed"
    FOLDER = "tracked_folder"
    LEFT_FOLDER = "left_tracked_folder"
    STILL_TRACKED = "still_tracked"
    SENT_NOT_TRACKED = "sent_items_not_tracked"
    CORRELATED = "correlated"
    RULE_ALL = "rule_all"
    RULE_FROM_CRM_RECORD = "rule_from_crm_record"
    RULE_FROM_EMAIL_ENABLED = "rule_from_email_enabled"
    NO_RULE = "no_rule_matched"


@dataclass(frozen=True, slots=True)
class TrackingDecision:
    """The verdict on one message: tracked or not, the regarding record, why, and how to remember it."""

    tracked: bool
    regarding: CrmRecordRef | None
    reason: Reason
    via: TrackedVia | None = None
    token: str | None = None


class SenderLookup:
    """Which CRM records an address belongs to, per run and CRM user (one ``$batch`` per address)."""

    def __init__(self, crm: CrmPort, caller: str) -> None:
        self._crm = crm
        self._caller = caller
        self._cache: Memo[str, list[RecordRef]] = Memo()  # shared by a page's concurrent decisions

    async def records(self, address: str) -> list[RecordRef]:
        return await self._cache.get(
            address,
            lambda: self._crm.find_by_email(address, tables=EMAIL_ENABLED_TABLES, caller=self._caller),
        )

    def remember(self, address: str, ref: RecordRef) -> None:
        """A record created for ``address`` during the run (the next lookup must see it)."""
        self._cache.put(address, [*(self._cache.peek(address) or []), ref])

    async def any_in(self, addresses: Sequence[str], tables: Sequence[str]) -> bool:
        for address in addresses:
            if any(ref.table in tables for ref in await self.records(address)):
                return True
        return False


class TrackingPolicy:
    """Decides for one mailbox and one run (caches: the folder tree, CRM address lookups)."""

    def __init__(
        self,
        *,
        mailbox_id: str,
        settings: MailboxSettings,
        index: TrackingIndex,
        folders: FolderTree,
        lookup: SenderLookup,
    ) -> None:
        self._mailbox = mailbox_id
        self._settings = settings
        self._index = index
        self._folders = folders
        self._lookup = lookup
        prefix = settings.tracking_token_prefix
        self._token = re.compile(re.escape(prefix) + r"\d{4,}") if prefix else None

    def token_of(self, subject: str | None) -> str | None:
        """The tracking token in a subject (e.g. ``CRM:0001234``), when tokens are configured."""
        if self._token is None or not subject:
            return None
        found = self._token.search(subject)
        return found.group(0) if found else None

    def _has_category(self, envelope: Envelope) -> bool:
        wanted = self._settings.tracked_category.casefold()
        return any(category.casefold() == wanted for category in envelope.categories)

    async def decide(self, envelope: Envelope, *, earlier: TrackedMessage | None) -> TrackingDecision:
        """The verdict for one message (see the module docstring for the order of the rules).

        ``earlier``: the message's row in the tracking index (the caller reads it once and keeps it).
        """
        settings = self._settings
        token = self.token_of(envelope.subject)
        folder_regarding = await self._folders.regarding(envelope.folder_id, settings.tracked_folders)
        if self._has_category(envelope):
            regarding = folder_regarding or (earlier.regarding if earlier else None)
            return TrackingDecision(True, regarding, Reason.CATEGORY, TrackedVia.CATEGORY, token)
        if folder_regarding is not None:
            return TrackingDecision(True, folder_regarding, Reason.FOLDER, TrackedVia.FOLDER, token)
        if earlier is not None:
            return self._after(earlier, token)
        if envelope.is_outgoing and not settings.track_sent_items:
            return TrackingDecision(False, None, Reason.SENT_NOT_TRACKED)
        thread = await self._thread(envelope, token)
        if thread is not None:
            return TrackingDecision(True, thread.regarding, Reason.CORRELATED, TrackedVia.CORRELATED, token)
        return await self._rule(envelope, token)

    def _after(self, earlier: TrackedMessage, token: str | None) -> TrackingDecision:
        """A message tracked before, and no longer by its category or a tracked folder."""
        if earlier.via is TrackedVia.CATEGORY:
            return TrackingDecision(False, None, Reason.CATEGORY_REMOVED)
        if earlier.via in (TrackedVia.FOLDER, TrackedVia.KEPT):
            return TrackingDecision(True, None, Reason.LEFT_FOLDER, TrackedVia.KEPT, token)
        return TrackingDecision(True, earlier.regarding, Reason.STILL_TRACKED, earlier.via, token)

    async def _thread(self, envelope: Envelope, token: str | None) -> TrackedThread | None:
        settings = self._settings
        if not (settings.track_correlated or settings.tracking is TrackingRule.RESPONSES_TO_CRM):
            return None
        for key, value in ((ThreadKey.CONVERSATION, envelope.conversation_id), (ThreadKey.TOKEN, token)):
            found = await self._index.get_thread(self._mailbox, key, value) if value else None
            if found is not None:
                return found
        return None

    async def _rule(self, envelope: Envelope, token: str | None) -> TrackingDecision:
        rule = self._settings.tracking
        if rule is TrackingRule.ALL:
            return TrackingDecision(True, None, Reason.RULE_ALL, TrackedVia.RULE, token)
        tables = {
            TrackingRule.FROM_CRM_RECORDS: (CRM_RECORD_TABLES, Reason.RULE_FROM_CRM_RECORD),
            TrackingRule.FROM_EMAIL_ENABLED: (EMAIL_ENABLED_TABLES, Reason.RULE_FROM_EMAIL_ENABLED),
        }.get(rule)
        if tables is not None and await self._lookup.any_in(envelope.counterparts(), tables[0]):
            return TrackingDecision(True, None, tables[1], TrackedVia.RULE, token)
        return TrackingDecision(False, None, Reason.NO_RULE)


_AUTOMATIC = {
    TrackingRule.ALL: "all email",
    TrackingRule.RESPONSES_TO_CRM: "email in response to CRM email",
    TrackingRule.FROM_CRM_RECORDS: "email from CRM leads, contacts and accounts",
    TrackingRule.FROM_EMAIL_ENABLED: "email from records that are email enabled",
}


def rules_in_force(settings: MailboxSettings) -> list[str]:
    """The mailbox's tracking rules in words, in the order the policy applies them (what explains
    a message that no rule tracked)."""
    rules = [f"the category '{settings.tracked_category}'"]
    if settings.tracked_folders:
        rules.append(f"{len(settings.tracked_folders)} tracked folder(s)")
    if settings.track_correlated:
        rules.append("replies and forwards of tracked email (correlation)")
    if settings.tracking in _AUTOMATIC:
        sent = "" if settings.track_sent_items else ", received mail only"
        rules.append(f"automatic tracking of {_AUTOMATIC[settings.tracking]}{sent}")
    return rules
