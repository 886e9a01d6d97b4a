"""A local Dataverse Web API (v9.2) simulator: in-memory tables, security, batches, change tracking.

Run it with ``python -m simulators.dataverse --host 127.0.0.1 --port N``; the Web API base is
``http://HOST:N/api/data/v9.2`` and the control API lives under ``/_sim`` (README.md).
"""
