"""The neutral domain: item kinds, the Outlook/CRM-neutral item model and a mailbox's settings.

Every other package of ``shared`` imports this one; it imports none of them.
"""
