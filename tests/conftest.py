"""Test-wide fixtures live in tests/fixtures/ as plugins, one module per real service."""

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.graph_sim",
    "tests.fixtures.dataverse_sim",
    "tests.fixtures.app",
]
