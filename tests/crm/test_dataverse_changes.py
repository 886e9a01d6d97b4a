"""Change tracking against the simulator: powerapps-docs "Use change tracking to synchronize data with
external systems" (Prefer: odata.track-changes, @odata.deltaLink, $deletedEntity, expired tokens)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from shared.crm.dataverse import DataverseClient
from shared.crm.dataverse.wire import lookup_ref
from shared.crm.errors import ChangeTokenExpired
from shared.crm.port import ChangePage, Upsert
from simulators.dataverse.launcher import DataverseSimulator
from tests.crm.conftest import SCOPE, FixedTokenCredential


async def _full_read(crm: DataverseClient, link: str | None = None) -> tuple[list[ChangePage], str]:
    """Follow next links until the delta link, as the CRM -> Outlook timer does."""
    pages: list[ChangePage] = []
    while True:
        page = await crm.read_changes(
            "lead", select=["lastname", "_parentaccountid_value"], link=link, caller=None
        )
        pages.append(page)
        if page.delta_link:
            return pages, page.delta_link
        assert page.next_link
        link = page.next_link


def _ids(rows: tuple[Mapping[str, Any], ...]) -> set[uuid.UUID]:
    return {uuid.UUID(row["leadid"]) for row in rows}


async def test_initial_sync_pages_then_delta_reports_changes_and_deletes(
    dataverse_sim: DataverseSimulator, credential: FixedTokenCredential, dataverse_token: str
) -> None:
    async with DataverseClient(
        dataverse_sim.api_url, credential, application_writes=True, scope=SCOPE, change_page_size=2
    ) as crm:
        seeded = [await crm.create("lead", {"lastname": f"Lead {n}"}, caller=None) for n in range(3)]
        pages, delta = await _full_read(crm)
        assert len(pages) >= 2  # 3+ rows at 2 per page
        initial = {row_id for page in pages for row_id in _ids(page.changed)}
        assert {ref.id for ref in seeded} <= initial
        assert all(page.deleted == () for page in pages)
        reads = [r for r in dataverse_sim.requests(dataverse_token) if r["method"] == "GET"]
        assert len(reads) == len(pages)
        assert all("odata.track-changes" in r["headers"]["prefer"] for r in reads)

        account = await crm.create("account", {"name": "Parent"}, caller=None)
        added = await crm.create("lead", {"lastname": "Added", "parentaccountid": account}, caller=None)
        await crm.get("lead", seeded[0].id, caller=None)  # a read is not a change
        await crm.delete("lead", seeded[1].id, caller=None)
        await crm.upsert(Upsert("lead", {"lastname": "Renamed"}, id=seeded[2].id), caller=None)
        changes, next_delta = await _full_read(crm, delta)
        changed = {row_id for page in changes for row_id in _ids(page.changed)}
        deleted = {row_id for page in changes for row_id in page.deleted}
        assert changed == {added.id, seeded[2].id}
        assert deleted == {seeded[1].id}
        renamed = [row for page in changes for row in page.changed if row["leadid"] == str(seeded[2].id)]
        assert renamed[0]["lastname"] == "Renamed"
        [added_row] = [row for page in changes for row in page.changed if row["leadid"] == str(added.id)]
        assert lookup_ref(added_row, "parentaccountid") == account

        quiet, _ = await _full_read(crm, next_delta)
        assert [(page.changed, page.deleted) for page in quiet] == [((), ())]


async def test_expired_token_means_full_resync(
    crm: DataverseClient, dataverse_sim: DataverseSimulator
) -> None:
    """An expired change token (ExpiredVersionStamp 0x80044352) raises ChangeTokenExpired; starting
    again without a link works."""
    lead = await crm.create("lead", {"lastname": "Before expiry"}, caller=None)
    _, delta = await _full_read(crm)
    dataverse_sim.expire_change_tokens("lead")
    with pytest.raises(ChangeTokenExpired) as raised:
        await crm.read_changes("lead", select=["lastname"], link=delta, caller=None)
    assert raised.value.code == "0x80044352"
    assert not raised.value.retryable
    pages, _ = await _full_read(crm)
    assert lead.id in {row_id for page in pages for row_id in _ids(page.changed)}


async def test_links_to_other_hosts_are_refused(
    crm: DataverseClient, dataverse_sim: DataverseSimulator
) -> None:
    """The bearer token only ever goes to the configured Web API."""
    foreign = "https://attacker.example/api/data/v9.2/leads?$deltatoken=1"
    with pytest.raises(ValueError, match="does not belong"):
        await crm.read_changes("lead", select=["lastname"], link=foreign, caller=None)
    sibling_path = dataverse_sim.root_url + "/other/leads?$deltatoken=1"
    with pytest.raises(ValueError, match="does not belong"):
        await crm.read_changes("lead", select=["lastname"], link=sibling_path, caller=None)
