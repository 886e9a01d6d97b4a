"""CRM -> Outlook routing by a user's own Outlook filter: a record the filter selects reaches the
mailbox although its user neither owns nor attends it (routing asks Dataverse, as the user, which of
the changed ids the filter takes), and leaves it when it no longer matches."""

from __future__ import annotations

import uuid

from tests.e2e.conftest import E2E, CrmUser, wait_for
from tests.e2e.test_crm_to_outlook import as_user, connected, find, onboarded

__all__ = ["connected"]  # the module fixture: the webhook registered and the baseline taken


def city_filter(e2e: E2E, user: CrmUser, city: str, *, column: str = "address1_city") -> None:
    """The user's own Outlook filter: every active contact in ``city``, whoever owns it."""
    as_user(
        e2e,
        user,
        "POST",
        "userqueries",
        {
            "name": f"Everyone's contacts in {city}",
            "returnedtypecode": "contact",
            "querytype": 256,
            "fetchxml": (
                "<fetch><entity name='contact'><filter>"
                f"<condition attribute='{column}' operator='eq' value='{city}'/>"
                "<condition attribute='statecode' operator='eq' value='0'/>"
                "</filter></entity></fetch>"
            ),
        },
    )


def test_a_filter_taking_records_of_other_owners_routes_them_to_the_mailbox(connected: E2E) -> None:
    e2e = connected
    mailbox, user = onboarded(e2e)
    city = f"city-{uuid.uuid4().hex[:8]}"
    city_filter(e2e, user, city)
    e2e.restart_runner()  # routing caches users' filters per worker and TTL: a fresh worker reads it
    colleague = e2e.new_crm_user()  # owns both contacts; the mailbox's user is no party to them
    elsewhere = f"elsewhere-{uuid.uuid4().hex[:8]}"
    as_user(e2e, colleague, "POST", "contacts", {"lastname": elsewhere, "address1_city": "Elsewhere"})
    local = f"local-{uuid.uuid4().hex[:8]}"
    contact = as_user(e2e, colleague, "POST", "contacts", {"lastname": local, "address1_city": city})
    wait_for(
        lambda: find(e2e, mailbox, "contacts", "surname", local), "the colleague's contact in the filter"
    )
    assert find(e2e, mailbox, "contacts", "surname", elsewhere) == []
    # Moved away: routed by its link, it leaves the filter and the untouched copy is removed.
    as_user(e2e, colleague, "PATCH", f"contacts({contact['contactid']})", {"address1_city": "Elsewhere"})
    wait_for(lambda: not find(e2e, mailbox, "contacts", "surname", local) or None, "the contact leaving")


def test_a_filter_dataverse_refuses_does_not_stop_routing_for_other_mailboxes(connected: E2E) -> None:
    """One user's filter names a column the organization no longer has (Dataverse refuses it): that
    mailbox is skipped, and the change still reaches the mailbox whose filter takes it."""
    e2e = connected
    broken_mailbox, broken = onboarded(e2e)
    mailbox, user = onboarded(e2e)
    city = f"city-{uuid.uuid4().hex[:8]}"
    city_filter(e2e, broken, city, column="new_removedcolumn")
    city_filter(e2e, user, city)
    e2e.restart_runner()
    colleague = e2e.new_crm_user()
    local = f"local-{uuid.uuid4().hex[:8]}"
    as_user(e2e, colleague, "POST", "contacts", {"lastname": local, "address1_city": city})
    wait_for(lambda: find(e2e, mailbox, "contacts", "surname", local), "the contact in the good filter")
    assert find(e2e, broken_mailbox, "contacts", "surname", local) == []
