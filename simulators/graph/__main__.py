"""``python -m simulators.graph --host 127.0.0.1 --port N``: serve the simulator with uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

from simulators.graph.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description="Local Microsoft Graph v1.0 simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4010)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
