"""Microsoft Graph side: client factory, subscriptions, notifications, delta readers, writers."""
