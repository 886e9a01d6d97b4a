"""The Dataverse Web API adapter: :class:`DataverseClient` (the one public client) implements the CRM port.

Modules by responsibility: ``client`` (the public class), ``transport`` (token, impersonation, the
per-user cap and the one retry layer), ``wire`` (requests and answers as data), ``records`` (reads,
writes, email lookup), ``batching`` (``$batch``), ``changes`` (change tracking, WhoAmI).
"""

from shared.crm.dataverse.client import DataverseClient
from shared.crm.dataverse.transport import AsyncTokenSource

__all__ = ["AsyncTokenSource", "DataverseClient"]
