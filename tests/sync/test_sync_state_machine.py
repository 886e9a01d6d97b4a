"""Random create / edit / delete on both sides, syncs (some interrupted), and convergence checks.

vdirsyncer's approach (tests/unit/sync/test_sync.py): the planner is pure, so a Hypothesis state
machine drives it with an in-memory applier and asserts after every sync that the two sides agree,
nothing is duplicated, and a further sync has nothing left to do.
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from shared.sync.fieldmaps import CONTACT_MAP
from shared.sync.fieldmaps.base import canonical_crm_value
from shared.sync.merge import Side
from shared.sync.model import Contact, EmailAddress, ItemKind
from shared.sync.planner import DeletePolicy, SyncPolicy
from tests.sync.world import USER, World

# neutral attribute -> CRM column, for the fields the machine edits (lossless both ways)
_FIELDS = {
    "given_name": "firstname",
    "surname": "lastname",
    "job_title": "jobtitle",
    "business_phone": "telephone1",
    "notes": "description",
    "email": "emailaddress1",
}
_texts = st.one_of(st.none(), st.text(alphabet="abcxyz ", min_size=1, max_size=5).map(str.strip).filter(bool))
_emails = st.one_of(
    st.none(), st.text(alphabet="abc", min_size=1, max_size=3).map(lambda local: f"{local}@x.io")
)


def _value_for(attribute: str) -> st.SearchStrategy[str | None]:
    return _emails if attribute == "email" else _texts


_edits = st.sampled_from(sorted(_FIELDS)).flatmap(
    lambda attribute: st.tuples(st.just(attribute), _value_for(attribute))
)


def _outlook_update(attribute: str, value: str | None) -> dict[str, object]:
    if attribute == "email":
        return {"email_addresses": (EmailAddress(address=value),) if value else ()}
    return {attribute: value}


class ContactSync(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World(ItemKind.CONTACT)
        self.mailbox = self.world.mailbox()

    @initialize(tie_break=st.sampled_from(Side), delete_policy=st.sampled_from(DeletePolicy))
    def choose_policy(self, tie_break: Side, delete_policy: DeletePolicy) -> None:
        self.world.policy = SyncPolicy(tie_break=tie_break, delete_policy=delete_policy)

    # -- Outlook side --------------------------------------------------------------------------

    @rule(edits=st.lists(_edits, max_size=3))
    def create_in_outlook(self, edits: list[tuple[str, str | None]]) -> None:
        contact = Contact()
        for attribute, value in edits:
            contact = contact.model_copy(update=_outlook_update(attribute, value))
        self.world.outlook_create(self.mailbox, contact)

    @precondition(lambda self: self.mailbox.items)
    @rule(pick=st.integers(min_value=0), edit=_edits)
    def edit_in_outlook(self, pick: int, edit: tuple[str, str | None]) -> None:
        item_id = sorted(self.mailbox.items)[pick % len(self.mailbox.items)]
        self.world.outlook_edit(self.mailbox, item_id, **_outlook_update(*edit))

    @precondition(lambda self: self.mailbox.items)
    @rule(pick=st.integers(min_value=0))
    def delete_in_outlook(self, pick: int) -> None:
        del self.mailbox.items[sorted(self.mailbox.items)[pick % len(self.mailbox.items)]]

    # -- CRM side ------------------------------------------------------------------------------

    @rule(edits=st.lists(_edits, max_size=3), owned=st.booleans())
    def create_in_crm(self, edits: list[tuple[str, str | None]], owned: bool) -> None:
        self.world.crm_create({_FIELDS[a]: v for a, v in edits}, owner=USER if owned else "someone-else")

    @precondition(lambda self: self.world.records)
    @rule(pick=st.integers(min_value=0), edit=_edits)
    def edit_in_crm(self, pick: int, edit: tuple[str, str | None]) -> None:
        attribute, value = edit
        self.world.crm_edit(self._record(pick), **{_FIELDS[attribute]: value})

    @precondition(lambda self: self.world.records)
    @rule(pick=st.integers(min_value=0))
    def delete_in_crm(self, pick: int) -> None:
        del self.world.records[self._record(pick)]

    def _record(self, pick: int) -> uuid.UUID:
        return sorted(self.world.records)[pick % len(self.world.records)]

    # -- syncs ---------------------------------------------------------------------------------

    @rule()
    def sync(self) -> None:
        self.world.sync(self.mailbox)
        self.assert_converged()

    @rule()
    def sync_interrupted_before_link_writes(self) -> None:
        self.world.sync(self.mailbox, crash_before_links=True)

    def teardown(self) -> None:
        self.world.sync(self.mailbox)
        self.assert_converged()

    def assert_converged(self) -> None:
        assert self.world.sync(self.mailbox) == [], "a second sync still had work to do"
        links = self.mailbox.links
        tracked = {item_id for item_id, entry in self.mailbox.items.items() if entry.tracked}
        assert set(links) == tracked, "every tracked Outlook item is linked, and only those"
        crm_ids = [link.crm_id for link in links.values()]
        assert len(set(crm_ids)) == len(crm_ids), "two Outlook items share a CRM record"
        assert set(crm_ids) == set(self.world.records), "every CRM record is linked once: no duplicates"
        for item_id, link in links.items():
            contact = self.mailbox.items[item_id].item
            assert isinstance(contact, Contact)
            projected = CONTACT_MAP.project(contact).values
            record = self.world.records[link.crm_id].values
            stored = {column: canonical_crm_value(record.get(column)) for column in CONTACT_MAP.columns}
            assert projected == stored, f"{item_id} differs from its CRM record"


ContactSync.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestContactSync = ContactSync.TestCase
