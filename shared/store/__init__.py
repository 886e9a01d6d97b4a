"""Azure Table Storage: registry, links, sync state and leases, subscriptions, parked items, audit."""
