"""Test-wide set-up. Fixtures live in tests/fixtures/ as plugins, one module per real service.

Hypothesis runs derandomized (a fixed sequence of examples per test), so `make test` is
deterministic: a red run is reproducible, and green means the same examples passed.
Set HYPOTHESIS_PROFILE=explore locally to search with fresh random examples.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.graph_sim",
    "tests.fixtures.dataverse_sim",
    "tests.fixtures.app",
]
