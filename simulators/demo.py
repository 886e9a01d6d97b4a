"""`make demo`: start the local sandbox, show what is there, and stop.

Grows with the connector: today it starts Azurite and reports the storage
endpoints the rest of the sandbox will use.
"""

from __future__ import annotations

import json

from simulators.azurite import Azurite


def main() -> int:
    with Azurite() as storage:
        print(json.dumps({"storage": {"table": storage.table_port, "queue": storage.queue_port}}))
        print("sandbox: Azurite is up (tables, queues, blobs, in memory); stopping again.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
