"""Start Azurite (the Azure Storage emulator, from node_modules) on free loopback ports.

Azurite is the real local Table/Queue/Blob service Azure developers use; crmsync
never mocks storage. The account name and key below are Azurite's documented,
public development credentials (learn.microsoft.com: "Use the Azurite emulator
for local Azure Storage development", section "Well-known storage account and
key"), not secrets.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from simulators.ports import free_port, stop_process, wait_for_port

DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"
#: Preloaded into Azurite: point lookups by (PartitionKey, RowKey) at any partition size, as in Azure.
POINT_LOOKUPS = Path(__file__).resolve().parent / "azurite_point_lookups.js"


@dataclass
class Azurite:
    """A running Azurite; ``stop()`` (or the context manager) ends it. In memory, unless
    ``location`` names a folder: then its data outlives a stop, and ``start()`` again (same ports)
    is storage coming back after an outage."""

    host: str = "127.0.0.1"
    blob_port: int = field(default_factory=free_port)
    queue_port: int = field(default_factory=free_port)
    table_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    location: Path | None = None

    @property
    def connection_string(self) -> str:
        base = f"http://{self.host}"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/{DEV_ACCOUNT};"
            f"QueueEndpoint={base}:{self.queue_port}/{DEV_ACCOUNT};"
            f"TableEndpoint={base}:{self.table_port}/{DEV_ACCOUNT};"
        )

    def start(self) -> Azurite:
        if not AZURITE_BIN.exists():
            raise FileNotFoundError(f"{AZURITE_BIN} is missing: run `make setup` (npm ci) first")
        self.process = subprocess.Popen(  # noqa: S603 - fixed local binary, no shell
            [
                str(AZURITE_BIN),
                *(["--location", str(self.location)] if self.location else ["--inMemoryPersistence"]),
                "--silent",
                "--skipApiVersionCheck",
                "--disableProductStyleUrl",
                "--blobHost",
                self.host,
                "--blobPort",
                str(self.blob_port),
                "--queueHost",
                self.host,
                "--queuePort",
                str(self.queue_port),
                "--tableHost",
                self.host,
                "--tablePort",
                str(self.table_port),
                # Azurite closes idle connections after 5 s; Azure Storage keeps them for minutes. A
                # client whose event loop was busy past 5 s could reuse a socket Azurite had just
                # closed ("Server disconnected" on every pooled connection it retried on).
                *(f"--{service}KeepAliveTimeout=300" for service in ("blob", "queue", "table")),
                # CRMSYNC_AZURITE_DEBUG=<file>: Azurite's own request log, to see why it refused one
                *(
                    ["--debug", os.environ["CRMSYNC_AZURITE_DEBUG"]]
                    if os.environ.get("CRMSYNC_AZURITE_DEBUG")
                    else []
                ),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "AZURITE_ACCOUNTS": "", "NODE_OPTIONS": node_options()},
        )
        for port in (self.blob_port, self.queue_port, self.table_port):
            wait_for_port(self.host, port)
        return self

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def node_options() -> str:
    """The inherited NODE_OPTIONS plus the point-lookup preload (quoted: Node splits them at spaces)."""
    preload = f'--require "{POINT_LOOKUPS}"'
    inherited = os.environ.get("NODE_OPTIONS", "")
    return f"{inherited} {preload}".strip()
