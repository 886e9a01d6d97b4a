"""Microsoft's own Python client (PyPI PowerPlatform-Dataverse-Client) against the simulator.

The client refuses ``http://`` (it would send the bearer token in clear), so the simulator is
reached through a local TLS front: a thread that terminates TLS with a certificate from a
throwaway CA (``trustme``) and pipes the bytes to the simulator's HTTP port; the client's
``requests`` transport trusts that CA through ``REQUESTS_CA_BUNDLE``. Its credential is an azure-core
``TokenCredential`` handing out a simulator bearer token (the simulator accepts any token). The
async variant (aiohttp) is given a session trusting the same CA.

Before each record call the client reads the table's definition (``EntityDefinitions?$filter=
LogicalName eq 'contact'``) and, for writes with text values, the table's picklists
(``.../Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$expand=OptionSet``); creates
read the new id from ``OData-EntityId``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import trustme
from azure.core.credentials import AccessToken
from PowerPlatform.Dataverse.aio import AsyncDataverseClient
from PowerPlatform.Dataverse.client import DataverseClient
from PowerPlatform.Dataverse.models.filters import col

from simulators.dataverse.launcher import DataverseSimulator


class _Credential:
    """An azure-core TokenCredential with a fixed simulator token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


class _AsyncCredential:
    """An azure-core AsyncTokenCredential with a fixed simulator token."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> _AsyncCredential:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None


class _TlsFront:
    """TLS on 127.0.0.1:<port>, each connection piped to the simulator's plain HTTP port (requests
    marked ``X-Forwarded-Proto: https``)."""

    def __init__(self, backend: str, context: ssl.SSLContext) -> None:
        parts = urlsplit(backend)
        self.backend = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.context = context
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._pipe, "127.0.0.1", 0, ssl=self.context)
        )
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        server.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        back_reader, back_writer = await asyncio.open_connection(*self.backend)

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            with contextlib.suppress(Exception):
                sink.close()

        async def forward(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            """Requests go on with ``X-Forwarded-Proto: https`` (what a TLS terminator says), so the
            simulator's absolute links (``@odata.nextLink``) send the client back over TLS."""
            with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
                while True:
                    head = await source.readuntil(b"\r\n\r\n")
                    line, _, rest = head.partition(b"\r\n")
                    sink.write(line + b"\r\nX-Forwarded-Proto: https\r\n" + rest)
                    fields = {
                        name.strip().lower(): value.strip()
                        for name, _, value in (f.partition(b":") for f in rest.split(b"\r\n") if f)
                    }
                    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
                        await sink.drain()
                        await copy(source, sink)  # the rest of the connection as it comes
                        return
                    sink.write(await source.readexactly(int(fields.get(b"content-length", b"0"))))
                    await sink.drain()
            with contextlib.suppress(Exception):
                sink.close()

        await asyncio.gather(forward(reader, back_writer), copy(back_reader, writer))

    def close(self) -> None:
        """Cancel the open pipes before the loop stops (else asyncio reports them destroyed pending)."""

        async def cancel_pipes() -> None:
            pipes = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_pipes(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def front(dataverse_sim: DataverseSimulator, authority: trustme.CA) -> Iterator[str]:
    """The simulator behind TLS: its https base URL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    running = _TlsFront(dataverse_sim.root_url, context)
    try:
        yield f"https://localhost:{running.port}"
    finally:
        running.close()


@pytest.fixture
def client(
    front: str, authority: trustme.CA, dataverse_token: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> Iterator[DataverseClient]:
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))  # the client's requests transport
    with DataverseClient(front, _Credential(dataverse_token)) as running:
        yield running


def test_create_get_update_query_delete_contacts(
    client: DataverseClient, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    tag = uuid.uuid4().hex
    contact_id = client.records.create(
        "contact", {"firstname": "Ada", "lastname": tag, "preferredcontactmethodcode": "Email"}
    )
    assert uuid.UUID(contact_id)
    row = client.records.retrieve(
        "contact", contact_id, select=["firstname", "lastname", "preferredcontactmethodcode"]
    )
    assert (row["firstname"], row["lastname"], row["preferredcontactmethodcode"]) == ("Ada", tag, 2)
    client.records.update("contact", contact_id, {"firstname": "Grace"})
    assert dataverse_sim.record("contact", contact_id)["firstname"] == "Grace"  # type: ignore[index]
    found = client.records.list("contact", filter=f"lastname eq '{tag}'", select=["firstname"])
    assert [r["firstname"] for r in found] == ["Grace"]
    fetched = client.query.fetchxml(
        f'<fetch><entity name="contact"><attribute name="firstname"/><filter>'
        f'<condition attribute="lastname" operator="eq" value="{tag}"/></filter></entity></fetch>'
    ).execute()
    assert [r["firstname"] for r in fetched] == ["Grace"]
    client.records.delete("contact", contact_id)
    assert dataverse_sim.record("contact", contact_id) is None
    paths = [entry["path"] for entry in dataverse_sim.requests(dataverse_token)]
    assert "EntityDefinitions" in paths
    assert any("PicklistAttributeMetadata" in path for path in paths)


def test_the_client_pages_through_next_links_over_tls(client: DataverseClient) -> None:
    """The client follows ``@odata.nextLink`` verbatim ("Page results using OData"): behind TLS the
    links must be https, or the second page goes to the TLS port in clear and the connection drops."""
    tag = uuid.uuid4().hex
    client.records.create("contact", [{"lastname": tag, "firstname": f"F{i}"} for i in range(5)])
    pages = list(
        client.records.list_pages("contact", filter=f"lastname eq '{tag}'", select=["firstname"], page_size=2)
    )
    assert [len(page) for page in pages] == [2, 2, 1]
    assert sorted(row["firstname"] for page in pages for row in page) == [f"F{i}" for i in range(5)]


def test_the_clients_in_filter_is_the_in_query_function(client: DataverseClient) -> None:
    """``col(x).in_(...)`` is sent as ``Microsoft.Dynamics.CRM.In(PropertyName=..,PropertyValues=[..])``."""
    tag = uuid.uuid4().hex
    client.records.create("contact", [{"lastname": tag, "firstname": name} for name in ("Ada", "Bo", "Cy")])
    found = client.records.list(
        "contact", filter=(col("lastname") == tag) & col("firstname").in_(["Ada", "Cy"]), select=["firstname"]
    )
    assert sorted(row["firstname"] for row in found) == ["Ada", "Cy"]


def test_a_failed_change_set_comes_back_as_the_clients_failed_response(
    client: DataverseClient, dataverse_sim: DataverseSimulator
) -> None:
    """The client reads a batch stopped by a failed change set (400 with a multipart body) as that
    change set's failed response; nothing of the change set is written."""
    tag = uuid.uuid4().hex
    batch = client.batch.new()
    with batch.changeset() as change_set:
        change_set.records.create("contact", {"lastname": tag})
        change_set.records.create("contact", {"lastname": tag, "firstname": "x" * 51})
    result = batch.execute()
    assert [response.status_code for response in result.responses] == [400]
    assert len(client.records.list("contact", filter=f"lastname eq '{tag}'", select=["lastname"])) == 0


async def test_the_async_client_reads_the_new_id_from_odata_entityid(
    front: str, authority: trustme.CA, dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    """The async variant copies response headers into a plain (case-sensitive) dict and looks up
    ``OData-EntityId``: the simulator must send it in that casing."""
    context = ssl.create_default_context()
    authority.configure_trust(context)
    client = AsyncDataverseClient(front, _AsyncCredential(dataverse_token))
    # The client has no public way to pass an SSL context; it uses this session when one is set.
    client._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
    async with client:
        tag = uuid.uuid4().hex
        contact_id = await client.records.create("contact", {"lastname": tag})
        assert dataverse_sim.record("contact", contact_id)["lastname"] == tag  # type: ignore[index]
        await client.records.delete("contact", contact_id)
    assert dataverse_sim.record("contact", contact_id) is None


def test_a_list_delete_is_a_bulk_delete_job_the_client_can_follow(
    client: DataverseClient, dataverse_sim: DataverseSimulator
) -> None:
    """The client's list create is CreateMultiple and its list delete a BulkDelete job (it returns
    the JobId, the system job's asyncoperationid); the job deletes exactly the listed rows."""
    tag = uuid.uuid4().hex
    ids = client.records.create("contact", [{"lastname": f"{tag}-{i}"} for i in range(3)])
    [kept] = client.records.create("contact", [{"lastname": f"{tag}-kept"}])
    job_id = client.records.delete("contact", ids)
    assert job_id is not None
    assert uuid.UUID(job_id)
    deadline = time.monotonic() + 10
    while (job := client.records.retrieve("asyncoperation", job_id, select=["statecode", "statuscode"]))[
        "statecode"
    ] != 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (job["statecode"], job["statuscode"]) == (3, 30)
    assert [dataverse_sim.record("contact", i) for i in ids] == [None, None, None]
    assert dataverse_sim.record("contact", kept) is not None
