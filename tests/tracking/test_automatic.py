"""Automatic tracking rules, sent items, and the privacy rule (no body read for untracked mail)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.domain.mailbox_settings import MailboxSettings
from shared.domain.model import TrackingRule
from tests.tracking.conftest import World, message, unique_address

SENDERS = ("contact", "lead", "account", "colleague", "stranger")
EXPECTED = {
    TrackingRule.NONE: set(),
    TrackingRule.ALL: set(SENDERS),
    TrackingRule.FROM_CRM_RECORDS: {"contact", "lead", "account"},
    TrackingRule.FROM_EMAIL_ENABLED: {"contact", "lead", "account", "colleague"},
}


def crm_senders(world: World) -> dict[str, str]:
    """One address per kind of sender, each (but the stranger) a CRM record of that kind."""
    addresses = {kind: unique_address(kind) for kind in SENDERS}
    world.dataverse.seed("contact", [{"lastname": "Buyer", "emailaddress1": addresses["contact"]}])
    world.dataverse.seed("lead", [{"lastname": "Prospect", "emailaddress1": addresses["lead"]}])
    world.dataverse.seed("account", [{"name": "Fabrikam", "emailaddress1": addresses["account"]}])
    world.dataverse.add_user(internalemailaddress=addresses["colleague"])
    return addresses


@pytest.mark.parametrize("rule", list(EXPECTED))
async def test_each_automatic_rule_tracks_the_mail_dynamics_would(world: World, rule: TrackingRule) -> None:
    addresses = crm_senders(world)
    mailbox = await world.mailbox(MailboxSettings(tracking=rule))
    mails = {kind: message(address, f"from the {kind}") for kind, address in addresses.items()}
    world.graph_sim.seed(mailbox.mailbox_id, messages={"inbox": list(mails.values())})

    await world.sync(mailbox)

    tracked = {kind for kind, mail in mails.items() if world.tracked(mail["internetMessageId"])}
    assert tracked == EXPECTED[rule]


@pytest.mark.parametrize("track_sent_items", [False, True])
async def test_sent_items_are_tracked_by_a_rule_only_when_the_mailbox_says_so(
    world: World, track_sent_items: bool
) -> None:
    settings = MailboxSettings(tracking=TrackingRule.ALL, track_sent_items=track_sent_items)
    mailbox = await world.mailbox(settings)
    sent = message(
        mailbox.upn, "Our offer", toRecipients=[{"emailAddress": {"address": unique_address("c")}}]
    )
    world.graph_sim.seed(mailbox.mailbox_id, messages={"sentitems": [sent]})

    await world.sync(mailbox, "sentitems")

    assert world.tracked(sent["internetMessageId"]) is track_sent_items


async def test_no_body_or_attachment_is_read_for_mail_that_is_not_tracked(world: World) -> None:
    addresses = crm_senders(world)
    mailbox = await world.mailbox(MailboxSettings(tracking=TrackingRule.FROM_CRM_RECORDS))
    mails = [message(addresses["contact"], "Order"), message(addresses["stranger"], "Private matter")]
    ids = world.graph_sim.seed(mailbox.mailbox_id, messages={"inbox": mails})["messages"]["inbox"]
    for message_id in ids:
        world.attach(mailbox, message_id, "notes.txt", b"attached words")
    world.graph_sim.clear_requests(mailbox.mailbox_id)

    await world.sync(mailbox)

    requests = world.graph_sim.requests(mailbox.mailbox_id)
    tracked_id, private_id = ids
    assert world.tracked(mails[0]["internetMessageId"])
    assert not world.tracked(mails[1]["internetMessageId"])
    assert not [request for request in requests if private_id in request["path"]]
    delta = [request for request in requests if request["path"].endswith("/messages/delta")]
    assert delta
    message_reads = [
        request
        for request in requests
        if request["method"] == "GET" and "/messages" in request["path"] and tracked_id not in request["path"]
    ]
    assert not [request for request in message_reads if _could_return_a_body(request)]
    tracked_reads = [request for request in requests if tracked_id in request["path"]]
    assert any(request["select"] == ["body"] for request in tracked_reads)
    assert any(request["path"].endswith("/attachments") for request in tracked_reads)


_BODY_PROPERTIES = frozenset({"body", "bodyPreview", "uniqueBody"})


def _could_return_a_body(request: dict[str, Any]) -> bool:
    """A message read that could carry a body: without ``$select`` Graph returns every property
    (body, bodyPreview, uniqueBody included), so a read must select and name none of them, and
    expand no attachments. A delta round's later requests carry only their token: the first
    request's options travel in it, and that request is checked."""
    query = request["query"]
    if "$skiptoken" in query or "$deltatoken" in query:
        return False
    selected = request["select"]
    return (
        selected is None
        or bool(_BODY_PROPERTIES & set(selected))
        or "attachments" in query.get("$expand", "")
    )
