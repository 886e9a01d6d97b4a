"""An httpx client on the simulator's Web API, authenticated with this test's own token."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from simulators.dataverse.launcher import DataverseSimulator


@pytest.fixture
def api(dataverse_sim: DataverseSimulator, dataverse_token: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=dataverse_sim.api_url + "/", headers=dataverse_sim.headers(dataverse_token), timeout=30
    ) as client:
        yield client
