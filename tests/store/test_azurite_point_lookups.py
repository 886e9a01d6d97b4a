"""Azurite finds an entity by its key at any partition size (simulators/azurite_point_lookups.js), and
finds the same entity it found before: lookups stay strict about both keys."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from simulators.azurite import ROOT, node_options

# A LokiJS collection as Azurite's table store makes one, a partition of 2,000 rows, and the number of
# comparisons a point lookup costs beyond the binary index (LokiOps.$eq counts the rows it scans).
_COUNT_SCANNED_ROWS = """
const Loki = require(require.resolve("lokijs", {paths: [process.argv[1]]}));
const rows = new Loki("t").addCollection("t", {indices: ["PartitionKey", "RowKey"]});
for (let n = 0; n < 2000; n++) rows.insert({PartitionKey: "mailbox", RowKey: `o|contact|${n}`, n});
rows.insert({PartitionKey: "other", RowKey: "o|contact|7", n: -7});
let scanned = 0;
const eq = Loki.LokiOps.$eq;
Loki.LokiOps.$eq = (a, b) => { scanned++; return eq(a, b); };
const found = rows.findOne({PartitionKey: "mailbox", RowKey: "o|contact|1999"});
const other = rows.findOne({PartitionKey: "other", RowKey: "o|contact|7"});
const missing = rows.findOne({PartitionKey: "other", RowKey: "o|contact|8"});
console.log(JSON.stringify({scanned, found: found.n, other: other.n, missing}));
"""


def test_a_point_lookup_does_not_scan_the_partition() -> None:
    """Without the preload LokiJS narrows by PartitionKey only and compares all 2,000 RowKeys."""
    result = subprocess.run(  # noqa: S603 - our own script, no shell
        ["node", "-e", _COUNT_SCANNED_ROWS, str(ROOT / "node_modules" / "azurite")],  # noqa: S607 - Azurite's node
        env={**os.environ, "NODE_OPTIONS": node_options()},
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    )
    answer = json.loads(result.stdout)
    assert answer == {"scanned": answer["scanned"], "found": 1999, "other": -7, "missing": None}
    assert answer["scanned"] <= 6  # three lookups, each comparing the rows of its RowKey (2002 without)


@pytest.fixture
async def table(storage_connection_string: str, table_prefix: str) -> AsyncIterator[TableClient]:
    async with TableServiceClient.from_connection_string(storage_connection_string) as service:
        client = await service.create_table(f"{table_prefix}keys")
        yield client
        await service.delete_table(client.table_name)


# Keys LokiJS's binary index sorts as equal numbers ("1", "01", "1.0") must stay different entities.
_PARTITIONS = ("1", "01", "mailbox")
_ROWS = ("1", "01", "1.0", "1e0", "o|contact|a")


async def test_every_entity_is_found_by_its_own_keys(table: TableClient) -> None:
    for partition in _PARTITIONS:
        for row in _ROWS:
            await table.create_entity({"PartitionKey": partition, "RowKey": row, "at": f"{partition}/{row}"})
    for partition in _PARTITIONS:
        for row in _ROWS:
            assert (await table.get_entity(partition, row))["at"] == f"{partition}/{row}"
            with pytest.raises(ResourceExistsError):
                await table.create_entity({"PartitionKey": partition, "RowKey": row})
    await table.upsert_entity({"PartitionKey": "01", "RowKey": "1.0", "at": "new"}, mode=UpdateMode.REPLACE)
    await table.delete_entity("1", "01")
    with pytest.raises(ResourceNotFoundError):
        await table.get_entity("1", "01")
    assert (await table.get_entity("01", "1.0"))["at"] == "new"
    left = {
        (entity["PartitionKey"], entity["RowKey"]): entity["at"] async for entity in table.list_entities()
    }
    expected = {(p, r): f"{p}/{r}" for p in _PARTITIONS for r in _ROWS if (p, r) != ("1", "01")}
    assert left == expected | {("01", "1.0"): "new"}
