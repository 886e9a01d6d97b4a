"""CRM -> Outlook routing by a user's own Outlook filter: a record the filter selects reaches the
mailbox although its user neither owns nor attends it (routing asks Dataverse, as the user, which of
the changed ids the filter takes), and leaves it when it no longer matches."""

from __future__ import annotations

import uuid

from tests.e2e.conftest import E2E, wait_for
from tests.e2e.test_crm_to_outlook import as_user, connected, find, onboarded

__all__ = ["connected"]  # the module fixture: the webhook registered and the baseline taken


def test_a_filter_taking_records_of_other_owners_routes_them_to_the_mailbox(connected: E2E) -> None:
    e2e = connected
    mailbox, user = onboarded(e2e)
    city = f"city-{uuid.uuid4().hex[:8]}"
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
                f"<condition attribute='address1_city' operator='eq' value='{city}'/>"
                "<condition attribute='statecode' operator='eq' value='0'/>"
                "</filter></entity></fetch>"
            ),
        },
    )
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
