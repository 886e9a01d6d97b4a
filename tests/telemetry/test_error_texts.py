"""Graph's and Dataverse's error texts reach exceptions (and so the host's logs) without addresses.

Both services quote what they could not find or accept: Graph's "Resource '<upn>' does not exist"
for an unknown user, a Dataverse message naming a duplicate key's value. The typed errors keep
the service's code and wording with the address replaced by its short fingerprint, and the
SDK's own error (whose text holds the address) is not chained into the traceback.
"""

from __future__ import annotations

import traceback
import uuid

import pytest
from msgraph.graph_service_client import GraphServiceClient

from shared.crm.dataverse import DataverseClient
from shared.crm.errors import DUPLICATE_RECORD, CrmError, DuplicateRecord
from shared.outlook.errors import MailboxNotFound
from shared.outlook.mailbox import OutlookMailbox
from shared.store.fingerprint import short_fingerprint
from simulators.dataverse.launcher import DataverseSimulator


def _logged(exc: BaseException) -> str:
    """What a host log line with the traceback shows (chained causes and contexts included)."""
    return "".join(traceback.format_exception(exc))


async def test_graph_unknown_upn_is_fingerprinted_in_the_error(graph: GraphServiceClient) -> None:
    upn = f"Nobody.{uuid.uuid4().hex[:8]}@Contoso.example"

    with pytest.raises(MailboxNotFound) as caught:
        await OutlookMailbox(graph).user(upn)

    logged = _logged(caught.value)
    assert upn.lower() not in logged.lower()
    assert upn.split("@", maxsplit=1)[0].lower() not in logged.lower()
    assert short_fingerprint(upn.lower()) in str(caught.value)  # the same stand-in as the store's
    assert caught.value.status == 404
    assert caught.value.code == "Request_ResourceNotFound"
    assert "does not exist" in str(caught.value)  # Graph's wording is kept


async def test_dataverse_error_text_is_fingerprinted_in_the_error(
    crm: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    address = f"carol.{uuid.uuid4().hex[:8]}@fabrikam.example"
    dataverse_sim.fault(
        "status",
        token=dataverse_token,
        count=1,
        status=400,
        code=DUPLICATE_RECORD,
        message=f"A record with matching key values already exists: emailaddress1 = {address}.",
        path_contains="contacts",
    )
    with pytest.raises(CrmError) as caught:
        await crm.get("contact", uuid.uuid4(), caller=None)

    logged = _logged(caught.value)
    assert isinstance(caught.value, DuplicateRecord)
    assert address not in logged
    assert address.split("@", maxsplit=1)[0] not in logged
    assert short_fingerprint(address) in caught.value.message
    assert caught.value.code == DUPLICATE_RECORD
    assert caught.value.status == 400
    assert "matching key values already exists" in str(caught.value)
