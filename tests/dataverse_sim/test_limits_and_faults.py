"""Service protection limits ("Service protection API limits"), fault injection and the request log."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx

from simulators.dataverse.launcher import DataverseSimulator


def test_number_of_requests_limit_is_429_with_retry_after(
    dataverse_sim: DataverseSimulator, api: httpx.Client, dataverse_token: str
) -> None:
    """More requests than allowed in the window -> 429, 0x80072322, Retry-After in seconds; responses carry
    x-ms-ratelimit-burst-remaining-xrm-requests."""
    dataverse_sim.set_limits(token=dataverse_token, requests=3, window_seconds=120)
    answers = [api.get("WhoAmI") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] for a in answers] == ["2", "1", "0"]
    throttled = api.get("WhoAmI")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "0x80072322"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 120
    other_client = api.get("WhoAmI", headers={"Authorization": f"Bearer {dataverse_sim.new_token()}"})
    assert other_client.status_code == 200


def test_execution_time_limit_is_429(
    dataverse_sim: DataverseSimulator, api: httpx.Client, dataverse_token: str
) -> None:
    """Combined execution time over the limit -> 429, 0x80072321."""
    dataverse_sim.set_limits(token=dataverse_token, execution_ms=20, window_seconds=120)
    dataverse_sim.fault("latency", token=dataverse_token, count=1, latency_ms=40)
    assert api.get("WhoAmI").status_code == 200
    throttled = api.get("WhoAmI")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "0x80072321"
    assert int(throttled.headers["Retry-After"]) >= 1


async def test_concurrent_requests_limit_is_429(
    dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    """More concurrent requests than allowed -> 429, 0x80072326."""
    dataverse_sim.set_limits(token=dataverse_token, concurrent=2)
    dataverse_sim.fault("latency", token=dataverse_token, latency_ms=300)
    async with httpx.AsyncClient(headers=dataverse_sim.headers(dataverse_token), timeout=30) as client:
        responses = await asyncio.gather(*(client.get(f"{dataverse_sim.api_url}/WhoAmI") for _ in range(4)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 429, 429]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {"0x80072326"}


def test_throttle_storm_and_status_faults(
    dataverse_sim: DataverseSimulator, api: httpx.Client, dataverse_token: str
) -> None:
    """Fault injection: a 429 storm with a given Retry-After for N requests, then a 503, then service."""
    dataverse_sim.fault("throttle", token=dataverse_token, count=2, retry_after=7)
    dataverse_sim.fault("status", token=dataverse_token, count=1, status=503)
    first, second = api.get("WhoAmI"), api.get("WhoAmI")
    assert (first.status_code, first.headers["Retry-After"], first.json()["error"]["code"]) == (
        429,
        "7",
        "0x80072322",
    )
    assert second.status_code == 429
    third = api.get("WhoAmI")
    assert third.status_code == 503
    assert api.get("WhoAmI").status_code == 200


def test_outage_for_one_client_until_cleared(
    dataverse_sim: DataverseSimulator, api: httpx.Client, dataverse_token: str
) -> None:
    """Fault injection: a full outage answers 503 to everything until the faults are cleared."""
    dataverse_sim.fault("outage", token=dataverse_token)
    assert [api.get("WhoAmI").status_code, api.post("contacts", json={"lastname": "x"}).status_code] == [
        503,
        503,
    ]
    dataverse_sim.clear_faults()
    assert api.get("WhoAmI").status_code == 200


def test_request_log_records_headers_of_interest(
    dataverse_sim: DataverseSimulator, api: httpx.Client, dataverse_token: str
) -> None:
    """The request log keeps method, path, query, CallerObjectId/Prefer/If-Match and status, per client."""
    caller = dataverse_sim.add_user(roles=[])
    api.get("contacts?$top=1", headers={"Prefer": "odata.maxpagesize=1"})
    api.get("WhoAmI", headers={"CallerObjectId": caller["azureactivedirectoryobjectid"], "If-Match": "*"})
    entries = dataverse_sim.requests(token=dataverse_token)
    assert [(e["method"], e["path"], e["status"]) for e in entries] == [
        ("GET", "contacts", 200),
        ("GET", "WhoAmI", 200),
    ]
    assert entries[0]["query"] == "$top=1"
    assert entries[0]["headers"]["prefer"] == "odata.maxpagesize=1"
    assert entries[1]["headers"]["callerobjectid"] == caller["azureactivedirectoryobjectid"]
    assert entries[1]["headers"]["if-match"] == "*"
    assert "authorization" not in entries[0]["headers"]


def test_fault_aimed_at_a_path_hits_the_batch_part(
    dataverse_sim: DataverseSimulator, api: httpx.Client, dataverse_token: str
) -> None:
    """Fault injection with path_contains answers the matching request inside a $batch, once."""
    marker = uuid.uuid4().hex
    dataverse_sim.fault("status", token=dataverse_token, count=1, status=500, path_contains="leads")
    boundary = f"batch_{marker}"
    body = "".join(
        f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        f"POST {dataverse_sim.api_url}/{table} HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
        f'{{"lastname": "{marker}"}}\r\n'
        for table in ("contacts", "leads", "leads")
    )
    response = api.post(
        "$batch",
        content=body + f"--{boundary}--\r\n",
        headers={
            "Content-Type": f"multipart/mixed; boundary={boundary}",
            "Prefer": "odata.continue-on-error",
        },
    )
    assert re.findall(r"^HTTP/1\.1 (\d{3})", response.text, flags=re.MULTILINE) == ["204", "500", "204"]


async def test_a_hang_answers_nobody_until_the_client_gives_up_or_the_faults_are_cleared(
    dataverse_sim: DataverseSimulator, dataverse_token: str
) -> None:
    """README, faults: ``hang`` holds the request before anything is done. A client that stops waiting
    gets no write (logged 499); clearing the faults lets a held request go on and be answered."""
    tag = f"hang{uuid.uuid4().hex[:8]}"
    fault = dataverse_sim.fault("hang", token=dataverse_token, body_contains=tag)

    async def held_count(expected: int) -> None:
        for _ in range(100):
            if dataverse_sim.fault_state(fault)["holding"] == expected:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"never {expected} held")

    def client(timeout: float) -> httpx.AsyncClient:
        headers = dataverse_sim.headers(dataverse_token)
        return httpx.AsyncClient(base_url=dataverse_sim.api_url + "/", headers=headers, timeout=timeout)

    async def named(client: httpx.AsyncClient) -> int:
        found = await client.get("contacts", params={"$filter": f"lastname eq '{tag}'"})
        return len(found.json()["value"])

    async with client(0.5) as impatient, client(10) as patient:
        try:
            await impatient.post("contacts", json={"lastname": tag})
            raise AssertionError("a hung request was answered")
        except httpx.ReadTimeout:
            pass
        await held_count(0)  # the hold saw the connection close
        assert dataverse_sim.requests(token=dataverse_token)[-1]["status"] == 499
        assert await named(patient) == 0
        assert (await patient.get("WhoAmI")).status_code == 200  # only requests whose body holds the tag hang

        held = asyncio.create_task(patient.post("contacts", json={"lastname": tag}))
        await held_count(1)
        dataverse_sim.clear_faults()
        assert (await held).status_code == 204
        assert await named(patient) == 1
