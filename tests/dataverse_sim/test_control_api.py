"""The simulator's own control API (simulators/dataverse/README.md), on the private simulator."""

from __future__ import annotations

import uuid

import httpx
import pytest

from simulators.dataverse.launcher import DataverseSimulator


def test_reset_returns_to_the_start_state(
    private_sim: DataverseSimulator, private_api: httpx.Client, private_token: str
) -> None:
    """POST /_sim/reset forgets rows, users, keys and faults; the application user remains."""
    api, token = private_api, private_token
    [contact_id] = private_sim.seed("contact", [{"lastname": "Gone"}])
    user = private_sim.add_user(roles=[])
    private_sim.fault("outage")
    private_sim.reset()
    assert api.get(f"contacts({contact_id})").status_code == 404
    assert api.get(f"systemusers({user['systemuserid']})").status_code == 404
    assert api.get("WhoAmI").json()["UserId"] == private_sim.app_user_id
    assert private_sim.requests(token=token)[-1]["path"] == "WhoAmI"


def test_seed_is_all_or_nothing_and_ignores_limits(private_sim: DataverseSimulator) -> None:
    """POST /_sim/seed writes every row or none, as the system, whatever the limits."""
    tag = uuid.uuid4().hex
    private_sim.set_limits(requests=1)
    with pytest.raises(httpx.HTTPStatusError):
        private_sim.seed("contact", [{"lastname": tag}, {"lastname": tag, "firstname": "x" * 51}])
    ids = private_sim.seed("contact", [{"lastname": tag}, {"lastname": tag}])
    assert len(ids) == 2
    assert all(private_sim.record("contact", i) is not None for i in ids)
    assert private_sim.record("contact", str(uuid.uuid4())) is None
    private_sim.clear_limits()


def test_request_log_counts_batch_operations(
    private_sim: DataverseSimulator, private_api: httpx.Client, private_token: str
) -> None:
    """The request log records how many operations a $batch carried, and which."""
    api, token = private_api, private_token
    boundary = f"batch_{uuid.uuid4().hex}"
    part = (
        f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        f"GET {private_sim.api_url}/WhoAmI HTTP/1.1\r\n\r\n"
    )
    response = api.post(
        "$batch",
        content=part * 3 + f"--{boundary}--\r\n",
        headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
    )
    assert response.text.count("HTTP/1.1 200") == 3
    [entry] = private_sim.requests(token=token)
    assert (entry["path"], entry["batch_operations"], entry["status"]) == ("$batch", 3, 200)
    assert entry["batch_parts"] == ["GET WhoAmI"] * 3


def test_key_is_refused_while_rows_share_its_values(private_sim: DataverseSimulator) -> None:
    """Define alternate keys: a key cannot be created while existing rows share its values."""
    title = f"title-{uuid.uuid4().hex}"
    private_sim.seed("contact", [{"lastname": "A", "jobtitle": title}, {"lastname": "B", "jobtitle": title}])
    with pytest.raises(httpx.HTTPStatusError):
        private_sim.define_key("contact", "jobtitle_key", ["jobtitle"])
