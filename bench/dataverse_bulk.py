"""1,000 contacts per request through the Dataverse simulator: $batch versus the bulk messages.

    .venv/bin/python -m bench.dataverse_bulk [--records 1000] [--rounds 5]

Compares, per round of ``--records`` new contacts (and again as upserts of the same ids):
a ``$batch`` change set of POSTs, a ``$batch`` change set of PATCH upserts, ``CreateMultiple`` and
``UpsertMultiple`` ("Use bulk operation messages"; "Optimize performance for bulk operations").
Loopback, one simulator subprocess; numbers, not pass/fail. The simulator runs every record through
the same write path either way, so the gap is the request framing (multipart parsing and one
response part per record versus one JSON body) - in Dataverse itself the bulk messages also save
the per-record pipeline overhead, which no simulator can show. Then what crmsync's own client
sends for new contacts, both ways: its ``$batch`` of upserts, and the UpsertMultiple it uses now
followed by the read of the records' versions (the 204 carries none), with the client's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Callable

import httpx
from azure.core.credentials import AccessToken

from bench.dataverse_simulator import _percentile
from shared.crm.dataverse import DataverseClient, batching
from shared.crm.port import Operation, Upsert
from simulators.dataverse.launcher import DataverseSimulator

CONTACT = "Microsoft.Dynamics.CRM.contact"


def _payload(index: int, tag: str) -> dict[str, str]:
    return {"lastname": f"Bulk {tag} {index}", "emailaddress1": f"bulk{index}@example.com"}


def _batch(api_url: str, method: str, ids: list[str], tag: str) -> tuple[str, str]:
    boundary, change_set = f"batch_{uuid.uuid4().hex}", f"changeset_{uuid.uuid4().hex}"
    parts = []
    for index, record_id in enumerate(ids):
        url = f"{api_url}/contacts({record_id})" if method == "PATCH" else f"{api_url}/contacts"
        body = _payload(index, tag) if method == "PATCH" else {"contactid": record_id, **_payload(index, tag)}
        parts.append(
            f"--{change_set}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: {index + 1}\r\n\r\n{method} {url} HTTP/1.1\r\n"
            f"Content-Type: application/json\r\n\r\n{json.dumps(body)}\r\n"
        )
    text = (
        f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={change_set}\r\n\r\n"
        f"{''.join(parts)}--{change_set}--\r\n--{boundary}--\r\n"
    )
    return f"multipart/mixed; boundary={boundary}", text


def _measure(rounds: int, action: Callable[[], None]) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def _report(name: str, samples: list[float], records: int) -> float:
    median = statistics.median(samples)
    rate = records / median
    print(
        f"{name:<40} {rate:9.0f} records/s (at the median request)   p50 {median * 1000:7.1f} ms"
        f"   max {_percentile(samples, 1.0) * 1000:7.1f} ms"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    records, rounds = args.records, args.rounds
    with (
        DataverseSimulator() as simulator,
        httpx.Client(headers=simulator.headers(simulator.new_token()), timeout=300) as client,
    ):
        api = simulator.api_url
        created: list[list[str]] = []
        warm = [{"@odata.type": CONTACT, "lastname": "warm-up"}]
        client.post(
            f"{api}/contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": warm}
        ).raise_for_status()

        def batch(method: str) -> Callable[[], None]:
            def run() -> None:
                ids = created.pop() if method == "PATCH" else [str(uuid.uuid4()) for _ in range(records)]
                content_type, body = _batch(api, method, ids, uuid.uuid4().hex[:6])
                response = client.post(f"{api}/$batch", content=body, headers={"Content-Type": content_type})
                response.raise_for_status()
                assert response.text.count("HTTP/1.1 204") == records, response.text[:500]
                if method == "POST":
                    created.insert(0, ids)

            return run

        def create_multiple() -> None:
            ids = [str(uuid.uuid4()) for _ in range(records)]
            tag = uuid.uuid4().hex[:6]
            targets = [
                {"@odata.type": CONTACT, "contactid": i, **_payload(n, tag)} for n, i in enumerate(ids)
            ]
            response = client.post(
                f"{api}/contacts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": targets}
            )
            response.raise_for_status()
            assert len(response.json()["Ids"]) == records
            created.insert(0, ids)

        def upsert_multiple() -> None:
            ids = created.pop()
            tag = uuid.uuid4().hex[:6]
            targets = [
                {"@odata.type": CONTACT, "@odata.id": f"contacts({i})", **_payload(n, tag)}
                for n, i in enumerate(ids)
            ]
            response = client.post(
                f"{api}/contacts/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": targets}
            )
            response.raise_for_status()

        print(f"{records} contacts per request, {rounds} requests each (loopback, one simulator process)")
        batch_create = _report("$batch change set of POST (create)", _measure(rounds, batch("POST")), records)
        bulk_create = _report("CreateMultiple", _measure(rounds, create_multiple), records)
        batch_upsert = _report(
            "$batch change set of PATCH (upsert)", _measure(rounds, batch("PATCH")), records
        )
        bulk_upsert = _report("UpsertMultiple", _measure(rounds, upsert_multiple), records)
        print(f"CreateMultiple / $batch create: {bulk_create / batch_create:.2f}x")
        print(f"UpsertMultiple / $batch upsert: {bulk_upsert / batch_upsert:.2f}x")
        asyncio.run(_through_the_client(simulator, records, rounds))


async def _through_the_client(simulator: DataverseSimulator, records: int, rounds: int) -> None:
    """What crmsync itself sends for ``records`` new contacts: its ``$batch`` (PATCH upserts answered
    with their ids and versions, decoded) against UpsertMultiple plus the versions' read-back, with
    the client's own CPU time (the simulator runs in its own process)."""
    credential = _Token(simulator.new_token())
    async with DataverseClient(simulator.api_url, credential, scope="bench", application_writes=True) as crm:

        def contacts() -> list[Operation]:
            tag = uuid.uuid4().hex[:6]
            return [Upsert("contact", _payload(n, tag), id=uuid.uuid4()) for n in range(records)]

        async def one(bulk: bool) -> tuple[float, float]:
            ops = contacts()
            wall, cpu = time.perf_counter(), time.process_time()
            if bulk:
                results = await crm.apply_batch(ops, caller=None)
            else:
                results = await batching.apply_batch(crm._transport, ops, atomic=False, caller=None)
            assert all(r.ok and r.etag for r in results)
            return time.perf_counter() - wall, time.process_time() - cpu

        print(f"crmsync's client, {records} new contacts per call, {rounds} calls each:")
        rates = {}
        for name, bulk in (("$batch of PATCH upserts", False), ("UpsertMultiple + versions read", True)):
            samples = [await one(bulk) for _ in range(rounds)]
            wall = statistics.median(s[0] for s in samples)
            cpu = statistics.median(s[1] for s in samples)
            rates[bulk] = records / wall
            print(f"  {name:<32} {rates[bulk]:9.0f} records/s   client CPU {cpu * 1000:6.1f} ms per call")
        print(f"  UpsertMultiple + read / $batch: {rates[True] / rates[False]:.2f}x")


class _Token:
    def __init__(self, token: str) -> None:
        self.token = token

    async def get_token(self, *scopes: str) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


if __name__ == "__main__":
    main()
