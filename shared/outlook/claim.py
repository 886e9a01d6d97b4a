"""The mailbox's synchronizing-deployment claim: which crmsync deployment syncs this mailbox.

The mailbox lease lives in one deployment's storage, so it cannot stop a second deployment
(staging next to production, another Dataverse organization) from syncing the same mailbox. The
claim lives on the mailbox itself, where every deployment with the app's Mail.ReadWrite permission
sees it: a single-value extended property on the root of the mailbox's folders (``msgfolderroot``),
written and read with the folder (learn.microsoft.com/graph/api/
singlevaluelegacyextendedproperty-post-singlevalueextendedproperties and
singlevaluelegacyextendedproperty-get list mailFolder among the resources that carry them). Like
Server-Side Synchronization's rule that a mailbox syncs with one organization at a time, onboarding
elsewhere is refused naming the holder, until that deployment removes the mailbox or an
administrator takes it over explicitly.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.mail_folder import MailFolder
from msgraph.generated.models.single_value_legacy_extended_property import (
    SingleValueLegacyExtendedProperty,
)
from msgraph.generated.users.item.mail_folders.item.mail_folder_item_request_builder import (
    MailFolderItemRequestBuilder,
)
from msgraph.graph_service_client import GraphServiceClient

from shared.outlook.errors import graph_errors

CLAIM_PROPERTY_ID = "String {5c7d3a0e-2b8f-4e61-9a4d-c3f1e2b7a915} Name crmsync.deployment"
_ROOT = "msgfolderroot"
_TTL = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Claim:
    """``deployment``: the holder's storage account and table prefix; ``organization``: its
    Dataverse URL; ``since``: when it claimed the mailbox."""

    deployment: str
    organization: str
    since: dt.datetime

    def describe(self) -> str:
        return (
            f"crmsync deployment '{self.deployment}' (Dataverse {self.organization}, "
            f"since {self.since:%Y-%m-%d %H:%M} UTC)"
        )


class MailboxClaims:
    """Reads and writes the claim on a mailbox's ``msgfolderroot``."""

    def __init__(self, client: GraphServiceClient) -> None:
        self._client = client

    def _root(self, mailbox: str) -> MailFolderItemRequestBuilder:
        return self._client.users.by_user_id(mailbox).mail_folders.by_mail_folder_id(_ROOT)

    async def read(self, mailbox: str) -> Claim | None:
        """The mailbox's claim; None if no deployment holds it (never claimed, or released)."""
        query = MailFolderItemRequestBuilder.MailFolderItemRequestBuilderGetQueryParameters(
            select=["id"], expand=[f"singleValueExtendedProperties($filter=id eq '{CLAIM_PROPERTY_ID}')"]
        )
        with graph_errors():
            folder = await self._root(mailbox).get(RequestConfiguration(query_parameters=query))
        for prop in (folder.single_value_extended_properties if folder else None) or []:
            if (prop.id or "").casefold() == CLAIM_PROPERTY_ID.casefold() and prop.value:
                try:
                    raw = json.loads(prop.value)
                    return Claim(
                        str(raw["deployment"]),
                        str(raw["organization"]),
                        dt.datetime.fromisoformat(raw["since"]),
                    )
                except (ValueError, KeyError, TypeError):
                    return None  # not a claim crmsync wrote: nobody holds it
        return None

    async def write(self, mailbox: str, claim: Claim | None) -> None:
        """Claim the mailbox (``None``: release it; Graph cannot delete one extended property, so an
        empty value means released)."""
        value = (
            ""
            if claim is None
            else json.dumps(
                {
                    "deployment": claim.deployment,
                    "organization": claim.organization,
                    "since": claim.since.isoformat(),
                }
            )
        )
        body = MailFolder(
            single_value_extended_properties=[
                SingleValueLegacyExtendedProperty(id=CLAIM_PROPERTY_ID, value=value)
            ]
        )
        with graph_errors():
            await self._root(mailbox).patch(body)


class ClaimGuard:
    """This deployment's view of the claims: who holds a mailbox, cached for ``ttl`` per worker so
    a sync run costs Graph one more request at most every ``ttl`` per mailbox. After a take-over
    elsewhere, this deployment's next run past the cache stops syncing the mailbox."""

    def __init__(
        self, claims: MailboxClaims, *, deployment: str, organization: str, ttl: dt.timedelta = _TTL
    ) -> None:
        self.claims = claims
        self.deployment = deployment
        self.organization = organization
        self._ttl = ttl
        self._seen: dict[str, tuple[dt.datetime, Claim | None]] = {}

    def ours(self, now: dt.datetime) -> Claim:
        return Claim(self.deployment, self.organization, now)

    def forget(self, mailbox: str) -> None:
        self._seen.pop(mailbox, None)

    async def held_elsewhere(self, mailbox: str) -> Claim | None:
        """The claim of another deployment on ``mailbox``, if one holds it."""
        now = dt.datetime.now(dt.UTC)
        seen = self._seen.get(mailbox)
        if seen is None or now - seen[0] >= self._ttl:
            seen = (now, await self.claims.read(mailbox))
            self._seen[mailbox] = seen
        claim = seen[1]
        return claim if claim is not None and claim.deployment != self.deployment else None
