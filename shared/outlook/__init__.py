"""Microsoft Graph side: client factory, subscriptions, notifications, delta readers, writers.

- ``client``: :func:`build_graph_client` (msgraph-sdk + msgraph-core middleware, immutable ids on
  every request, the one retry layer);
- ``credentials``: :class:`StaticTokenCredential` (sandbox) and :func:`credential_from_settings`;
- ``notifications``: webhook payload parsing (:func:`parse_notifications`,
  :func:`parse_lifecycle_notifications`, :func:`validation_token`), pure and fast;
- ``subscriptions``: :class:`SubscriptionManager` (create / renew / reauthorize / delete / recreate);
- ``delta``: :class:`DeltaReader`, one async generator of :class:`DeltaPage` per resource;
- ``writers``: :class:`OutlookWriter` (contacts, events, To Do tasks, categories, the CRM id stamp);
- ``mailbox``: :class:`OutlookMailbox` (user, folders, one message, move, attachments, calendar view);
- ``convert``: Graph models <-> ``shared.domain.model``; ``errors``: typed errors with Graph's code.
"""
