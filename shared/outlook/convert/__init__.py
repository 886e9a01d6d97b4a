"""Conversion between msgraph-sdk models and crmsync's neutral model (``shared.domain.model``), one
module per item kind (``contacts``, ``events``, ``tasks``, ``messages``) on shared ``times`` (zones)
and ``common`` (Graph JSON, addresses, the item envelope, the stamped CRM id)."""
