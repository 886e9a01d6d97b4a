"""A local Microsoft Graph v1.0 simulator for crmsync's tests (never deployed).

Run ``python -m simulators.graph --host 127.0.0.1 --port N``; the Graph base URL is
``http://HOST:N/v1.0`` and the control API lives under ``/_sim`` (see README.md here).
It imports nothing from ``shared/``: it plays Microsoft's part, as Microsoft documents it.
"""

from simulators.graph.app import Simulator, create_app

__all__ = ["Simulator", "create_app"]
