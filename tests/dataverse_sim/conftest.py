"""Clients on the shared session simulator, and a private simulator for tests that change global state.

Alternate keys, field security profiles (which secure a column for everyone) and reset() affect
every client of a simulator, so those tests run on ``private_sim`` and never disturb other suites.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from simulators.dataverse.launcher import DataverseSimulator
from tests.dataverse_sim.webhook_receiver import Receiver, Registration


def _client(simulator: DataverseSimulator, token: str) -> httpx.Client:
    return httpx.Client(base_url=simulator.api_url + "/", headers=simulator.headers(token), timeout=30)


@pytest.fixture
def api(dataverse_sim: DataverseSimulator, dataverse_token: str) -> Iterator[httpx.Client]:
    """The shared simulator's Web API with this test's own token."""
    with _client(dataverse_sim, dataverse_token) as client:
        yield client


@pytest.fixture(scope="session")
def private_sim() -> Iterator[DataverseSimulator]:
    """A simulator only tests/dataverse_sim uses (started with `python -m simulators.dataverse`)."""
    with DataverseSimulator() as running:
        yield running


@pytest.fixture
def private_token(private_sim: DataverseSimulator) -> str:
    return private_sim.new_token()


@pytest.fixture
def private_api(private_sim: DataverseSimulator, private_token: str) -> Iterator[httpx.Client]:
    """The private simulator's Web API with this test's own token."""
    with _client(private_sim, private_token) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local HTTP server receiving webhook posts."""
    running = Receiver()
    yield running
    running.close()


@pytest.fixture
def hook(private_api: httpx.Client, receiver: Receiver) -> Iterator[Registration]:
    """A webhook service endpoint (WebhookKey) on the private simulator, removed with its steps after."""
    registration = Registration(private_api, receiver.url, "key-" + uuid.uuid4().hex)
    yield registration
    registration.remove()
