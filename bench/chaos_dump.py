"""What a chaos run leaves for a post-mortem (``--dump DIR``): every Dataverse and Graph request of the run
(crmsync's and the driver's, in order), then at the end every Azurite table's rows, both sides'
items of every mailbox with their ids, and the driver's items. The sandbox is gone after the run;
these files are what tells why an item was lost, duplicated or diverged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from azure.data.tables import TableServiceClient


def append_requests(directory: Path, service: str, entries: list[dict[str, Any]]) -> None:
    """A simulator's request log, kept before the driver clears it."""
    with (directory / f"{service}-requests.jsonl").open("a") as out:
        for entry in entries:
            out.write(json.dumps(entry, default=str) + "\n")


def write_tables(directory: Path, connection_string: str) -> None:
    """Every row of every table (links, syncstate, audit, ...), one JSON file per table."""
    with TableServiceClient.from_connection_string(connection_string) as service:
        for table in service.list_tables():
            client = service.get_table_client(table.name)
            rows = [dict(row) for row in client.list_entities()]
            (directory / f"table-{table.name}.json").write_text(json.dumps(rows, default=str, indent=1))


def write_json(directory: Path, name: str, document: Any) -> None:
    (directory / name).write_text(json.dumps(document, default=str, indent=1))
