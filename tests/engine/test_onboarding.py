"""Onboarding a mailbox end to end: checks, subscriptions, the initial baseline into the CRM."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from shared.domain.model import ItemKind
from shared.outlook.errors import GraphError
from shared.store.ports import Store
from shared.sync.job import parse_resource
from shared.sync.onboarding import OnboardingProgress, OnboardingRefused
from tests.engine.conftest import CrmUserFactory, Engine, EngineServices
from tests.fixtures.graph_sim import GraphSim

TRACKED = "Tracked to Dynamics 365"


PARTY_COLUMNS = "$select=_partyid_value,participationtypemask,addressused"


def _when(days: int, hour: int) -> dict[str, str]:
    day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)
    return {"dateTime": f"{day.isoformat()}T{hour:02d}:00:00", "timeZone": "UTC"}


async def test_onboarding_syncs_seeded_items_into_the_crm(service: EngineServices, engine: Engine) -> None:
    store, graph_sim, dataverse_sim = engine.store, engine.graph_sim, engine.dataverse
    user = engine.make_crm_user()
    mailbox = graph_sim.add_user(user.object_id)
    guest = f"guest-{uuid.uuid4().hex[:8]}@fabrikam.example"
    [guest_contact] = dataverse_sim.seed("contact", [{"lastname": "Guest", "emailaddress1": guest}])
    long_subject = "Quarterly review " + "x" * 240
    seeded = graph_sim.seed(
        mailbox,
        contacts=[{"givenName": "Ada", "surname": "Lovelace", "companyName": "Analytical Engines"}],
        events=[
            {
                "subject": long_subject,
                "start": _when(3, 10),
                "end": _when(3, 11),
                "attendees": [
                    {"emailAddress": {"address": guest}, "type": "required"},
                    {"emailAddress": {"address": "stranger@elsewhere.example"}, "type": "optional"},
                ],
            }
        ],
        todo={"defaultList": [{"title": "Call back", "status": "notStarted"}]},
        messages={
            "inbox": [
                {
                    "subject": "Offer",
                    "categories": [TRACKED],
                    "body": {"contentType": "text", "content": "the offer"},
                    "internetMessageId": "<offer-1@fabrikam.example>",
                },
                {"subject": "Private", "internetMessageId": "<private-1@fabrikam.example>"},
            ]
        },
    )
    steps: list[OnboardingProgress] = []

    report = await service.onboard(mailbox, user.systemuserid, progress=steps.append)

    assert report.mailbox_id == mailbox
    assert len(report.subscriptions) == 4
    assert report.items_seen == 5
    assert report.items_synced == 4  # the untracked message is not synced
    assert report.parked == 0
    assert any(step.step == "initial sync" and step.items_seen for step in steps)
    # Graph holds the subscriptions; the store only the clientState hash.
    live = {sub["id"] for sub in graph_sim.subscriptions(mailbox)}
    assert live == {sub.subscription_id for sub in report.subscriptions}
    stored = [record async for record in store.subscriptions.list_for_mailbox(mailbox)]
    assert all(len(record.client_state_hash) == 64 for record in stored)
    # Each item is linked to its CRM record, which holds the item's content.
    contact_link = await store.links.get_by_outlook(mailbox, ItemKind.CONTACT, seeded["contacts"][0])
    assert contact_link is not None
    contact = dataverse_sim.record("contact", contact_link.crm_id)
    assert contact is not None
    assert (contact["firstname"], contact["lastname"]) == ("Ada", "Lovelace")
    assert contact["_ownerid_value"] == user.systemuserid
    event_link = await store.links.get_by_outlook(mailbox, ItemKind.APPOINTMENT, seeded["events"][0])
    assert event_link is not None
    appointment = dataverse_sim.record("appointment", event_link.crm_id)
    assert appointment is not None
    assert len(appointment["subject"]) == 200  # fitted to the column, not failed
    assert sum(run.fitted for run in report.baseline) == 1
    assert (appointment["statecode"], appointment["statuscode"]) == (3, 5)  # Scheduled / Busy, set by update
    assert appointment["subject"].startswith("Quarterly review x")
    parties = {
        (party["participationtypemask"], party["_partyid_value"], party["addressused"])
        for party in engine.query(
            f"appointments({event_link.crm_id})/appointment_activity_parties?{PARTY_COLUMNS}"
        )
    }
    assert (5, guest_contact, guest) in parties  # resolved to the CRM contact with that address
    assert (6, None, "stranger@elsewhere.example") in parties  # unresolved: the address alone
    task_link = await store.links.get_by_outlook(mailbox, ItemKind.TASK, seeded["todo"]["defaultList"][0])
    assert task_link is not None
    assert dataverse_sim.record("task", task_link.crm_id)["subject"] == "Call back"  # type: ignore[index]
    tracked_link = await store.links.get_by_outlook(mailbox, ItemKind.EMAIL, seeded["messages"]["inbox"][0])
    assert tracked_link is not None
    email = dataverse_sim.record("email", tracked_link.crm_id)
    assert email is not None
    assert (email["subject"], email["description"]) == ("Offer", "the offer")
    assert await store.links.get_by_outlook(mailbox, ItemKind.EMAIL, seeded["messages"]["inbox"][1]) is None
    # Status shows it all.
    [status] = await service.status(mailbox)
    assert status.links[ItemKind.CONTACT] == 1
    assert status.links[ItemKind.EMAIL] == 1
    assert len(status.subscriptions) == 4
    assert all(resource.baselined for resource in status.resources)
    assert status.parked == ()


async def test_onboarding_refuses_a_user_without_a_create_privilege_and_changes_nothing(
    service: EngineServices, store: Store, graph_sim: GraphSim, make_crm_user: CrmUserFactory
) -> None:
    user = make_crm_user(tables=("email", "appointment", "task"))  # no contact privileges
    mailbox = graph_sim.add_user(user.object_id)

    with pytest.raises(OnboardingRefused, match="cannot create contact records"):
        await service.onboard(mailbox, user.systemuserid)

    assert [m async for m in store.registry.list_mailboxes()] == []
    assert graph_sim.subscriptions(mailbox) == []


async def test_onboarding_refuses_an_unknown_crm_user(service: EngineServices, graph_sim: GraphSim) -> None:
    with pytest.raises(OnboardingRefused, match="no CRM user"):
        await service.onboard(graph_sim.add_user(), str(uuid.uuid4()))


async def test_an_initial_sync_throttled_by_graph_waits_and_resumes(
    service: EngineServices, engine: Engine
) -> None:
    user = engine.make_crm_user()
    mailbox = engine.graph_sim.add_user(user.object_id)
    tracked = [{"subject": f"Paced {n}", "categories": ["Tracked to Dynamics 365"]} for n in range(3)]
    engine.graph_sim.seed(
        mailbox, contacts=[{"surname": f"Paced {n}"} for n in range(3)], messages={"inbox": tracked}
    )
    # Outlook's mailbox budget is spent: the tracked bodies' batch is answered 429 with a Retry-After
    # longer than the batch layer waits for, so the run fails with GraphThrottled and onboarding paces.
    engine.graph_sim.fault(
        "throttle", user=mailbox, path_contains=f"users/{mailbox}/messages/", retry_after=11, count=1
    )
    steps: list[OnboardingProgress] = []

    report = await service.onboard(mailbox, user.systemuserid, progress=steps.append)

    assert "waiting for Graph's throttling" in {step.step for step in steps}
    assert await engine.store.links.count(mailbox, ItemKind.CONTACT) == 3
    assert len(report.subscriptions) == 4


async def test_a_run_takes_the_mailboxs_other_dirty_resources_under_its_lease(
    service: EngineServices, engine: Engine
) -> None:
    user = engine.make_crm_user()
    mailbox = engine.graph_sim.add_user(user.object_id)
    report = await service.onboard(mailbox, user.systemuserid)
    resources = {parse_resource(mailbox, s.resource).kind: s.resource for s in report.subscriptions}
    engine.graph_sim.seed(
        mailbox, contacts=[{"surname": "Together"}], todo={"defaultList": [{"title": "Too"}]}
    )
    for kind in (ItemKind.CONTACT, ItemKind.TASK):  # both notified, as the webhook marks them
        await engine.store.sync_state.mark_dirty(mailbox, resources[kind])

    await engine.job().run(mailbox, resources[ItemKind.CONTACT])  # the contacts job only

    assert await engine.store.links.count(mailbox, ItemKind.TASK) == 1  # the task came along
    assert not (await engine.store.sync_state.get_state(mailbox, resources[ItemKind.TASK])).dirty


async def test_a_mailbox_is_refused_under_another_persons_crm_user(
    service: EngineServices, engine: Engine, store: Store
) -> None:
    """Dynamics pairs a mailbox with its owner's CRM user: Alice's mailbox under Bob's identity
    would write her mail as Bob. Refused before anything is registered."""
    bob = engine.make_crm_user()
    alice_mailbox = engine.graph_sim.add_user()

    with pytest.raises(OnboardingRefused, match="not the mailbox owner's"):
        await service.onboard(alice_mailbox, bob.systemuserid)
    assert [m async for m in store.registry.list_mailboxes()] == []


async def test_a_failed_initial_sync_rolls_onboarding_back_and_a_retry_duplicates_nothing(
    service: EngineServices, engine: Engine, store: Store
) -> None:
    """All or nothing: the mailbox is not left registered half-synced; adding it again links what
    the failed attempt already wrote instead of writing it twice."""
    user = engine.make_crm_user()
    mailbox = engine.graph_sim.add_user(user.object_id)
    engine.graph_sim.seed(
        mailbox,
        contacts=[{"surname": f"Rollback {n}"} for n in range(3)],
        todo={"defaultList": [{"title": "Later"}]},
    )
    # Graph fails the To Do delta, read last: the contacts were written before the failure.
    engine.graph_sim.fault("status", user=mailbox, status=500, path_contains="tasks/delta")

    with pytest.raises(GraphError):
        await service.onboard(mailbox, user.systemuserid)

    assert [m async for m in store.registry.list_mailboxes()] == []
    assert engine.graph_sim.subscriptions(mailbox) == []
    engine.graph_sim.clear_faults(mailbox)
    report = await service.onboard(mailbox, user.systemuserid)
    assert report.items_seen == 4
    owned = engine.query(f"contacts?$select=contactid&$filter=_ownerid_value eq {user.systemuserid}")
    assert len(owned) == 3
    assert await store.links.count(mailbox, ItemKind.CONTACT) == 3
