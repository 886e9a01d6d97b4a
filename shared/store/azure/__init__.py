"""The store ports on Azure Table Storage (azure.data.tables.aio; Azurite locally): one module per
repository, the shared row helpers in :mod:`~shared.store.azure.common`, opening in
:mod:`~shared.store.azure.service`."""

from shared.store.azure.audit import AzureAuditTrail
from shared.store.azure.links import AzureLinkStore
from shared.store.azure.parked import AzureParkedStore
from shared.store.azure.registry import AzureRegistry
from shared.store.azure.subscriptions import AzureSubscriptionStore
from shared.store.azure.sync_state import AzureSyncStateStore

__all__ = [
    "AzureAuditTrail",
    "AzureLinkStore",
    "AzureParkedStore",
    "AzureRegistry",
    "AzureSubscriptionStore",
    "AzureSyncStateStore",
]
