"""Random create / edit / delete on both sides, syncs (some interrupted), and convergence checks.

vdirsyncer's approach (tests/unit/sync/test_sync.py): the planner is pure, so a Hypothesis state
machine drives it with an in-memory applier and asserts after every sync that the two sides agree,
nothing is duplicated, and a further sync has nothing left to do. One machine per item kind with
its own edits and its own notion of "agree" (tasks map lossily: a Canceled CRM task is completed in
To Do).
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from shared.domain.model import Contact, Email, EmailAddress, Importance, ItemKind, Task, TaskStatus
from shared.sync.fieldmaps import CONTACT_MAP, TASK_MAP, CrmValue, crm_record_id
from shared.sync.fieldmaps.base import PRIORITY_CODES, canonical_crm_value
from shared.sync.fieldmaps.task import STATE_OF_STATUS
from shared.sync.merge import Side
from shared.sync.plan import Action, DeletePolicy, Skip, SyncPolicy
from tests.sync.world import USER, Neutral, World

_texts = st.one_of(st.none(), st.text(alphabet="abcxyz ", min_size=1, max_size=5).map(str.strip).filter(bool))
_emails = st.one_of(
    st.none(), st.text(alphabet="abc", min_size=1, max_size=3).map(lambda local: f"{local}@x.io")
)

# An edit is (neutral field, CRM column, value on the Outlook side, values on the CRM side).
Edit = tuple[dict[str, Any], dict[str, CrmValue]]


def _text_edit(attribute: str, column: str) -> st.SearchStrategy[Edit]:
    return _texts.map(lambda value: ({attribute: value}, {column: value}))


def _work(actions: list[Action]) -> list[Action]:
    """The actions that change something (a Skip is a decision not to)."""
    return [action for action in actions if not isinstance(action, Skip)]


class _SyncMachine(RuleBasedStateMachine):
    """Rules shared by every kind; subclasses give the edits and say when an item and record agree."""

    kind: ClassVar[ItemKind]
    edits: ClassVar[st.SearchStrategy[Edit]]
    crm_defaults: ClassVar[dict[str, CrmValue]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.world = World(self.kind)
        self.mailbox = self.world.mailbox()

    def blank(self) -> Neutral:
        raise AssertionError("subclasses build their blank item")

    def assert_agree(self, item: Neutral, record: dict[str, CrmValue]) -> None:
        raise AssertionError("subclasses compare an item with its record")

    @initialize(tie_break=st.sampled_from(Side), delete_policy=st.sampled_from(DeletePolicy))
    def choose_policy(self, tie_break: Side, delete_policy: DeletePolicy) -> None:
        self.world.policy = SyncPolicy(tie_break=tie_break, delete_policy=delete_policy)

    # -- Outlook side --------------------------------------------------------------------------

    @rule(data=st.data())
    def create_in_outlook(self, data: st.DataObject) -> None:
        item = self.blank()
        for outlook_change, _ in data.draw(st.lists(self.edits, max_size=3)):
            item = item.model_copy(update=outlook_change)
        self.world.outlook_create(self.mailbox, item)

    @precondition(lambda self: self.mailbox.items)
    @rule(pick=st.integers(min_value=0), data=st.data())
    def edit_in_outlook(self, pick: int, data: st.DataObject) -> None:
        item_id = sorted(self.mailbox.items)[pick % len(self.mailbox.items)]
        self.world.outlook_edit(self.mailbox, item_id, **data.draw(self.edits)[0])

    @precondition(lambda self: self.mailbox.items)
    @rule(pick=st.integers(min_value=0))
    def delete_in_outlook(self, pick: int) -> None:
        del self.mailbox.items[sorted(self.mailbox.items)[pick % len(self.mailbox.items)]]

    # -- CRM side ------------------------------------------------------------------------------

    @rule(data=st.data(), owned=st.booleans())
    def create_in_crm(self, data: st.DataObject, owned: bool) -> None:
        values = dict(self.crm_defaults)
        for _, crm_change in data.draw(st.lists(self.edits, max_size=3)):
            values |= crm_change
        self.world.crm_create(values, owner=USER if owned else "someone-else")

    @precondition(lambda self: self.world.records)
    @rule(pick=st.integers(min_value=0), data=st.data())
    def edit_in_crm(self, pick: int, data: st.DataObject) -> None:
        self.world.crm_edit(self._record(pick), **data.draw(self.edits)[1])

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
        assert _work(self.world.sync(self.mailbox)) == [], "a second sync still had work to do"
        links = self.mailbox.links
        tracked = {item_id for item_id, entry in self.mailbox.items.items() if entry.tracked}
        assert set(links) == tracked, "every tracked Outlook item is linked, and only those"
        crm_ids = [link.crm_id for link in links.values()]
        assert len(set(crm_ids)) == len(crm_ids), "two Outlook items share a CRM record"
        assert set(crm_ids) == set(self.world.records), "every CRM record is linked once: no duplicates"
        for item_id, link in links.items():
            self.assert_agree(self.mailbox.items[item_id].item, self.world.records[link.crm_id].values)


class ContactSync(_SyncMachine):
    """Contacts: every edited field maps losslessly, so item and record must be equal."""

    kind = ItemKind.CONTACT
    edits = st.one_of(
        _text_edit("given_name", "firstname"),
        _text_edit("surname", "lastname"),
        _text_edit("job_title", "jobtitle"),
        _text_edit("business_phone", "telephone1"),
        _text_edit("notes", "description"),
        _emails.map(
            lambda value: (
                {"email_addresses": (EmailAddress(address=value),) if value else ()},
                {"emailaddress1": value},
            )
        ),
    )

    def blank(self) -> Neutral:
        return Contact()

    def assert_agree(self, item: Neutral, record: dict[str, CrmValue]) -> None:
        assert isinstance(item, Contact)
        stored = {column: canonical_crm_value(record.get(column)) for column in CONTACT_MAP.columns}
        assert CONTACT_MAP.project(item).values == stored, "a contact differs from its CRM record"


# CRM status reasons with their state; To Do shows Canceled (6) as completed.
_CRM_STATUSES = sorted(STATE_OF_STATUS)
_SHOWN_AS = {2: TaskStatus.NOT_STARTED, 3: TaskStatus.IN_PROGRESS, 4: TaskStatus.WAITING_ON_OTHERS}
_SHOWN_AS |= {5: TaskStatus.COMPLETED, 6: TaskStatus.COMPLETED, 7: TaskStatus.DEFERRED}


class TaskSync(_SyncMachine):
    """Tasks: status, state and percentage move as one unit and map lossily; they must still agree."""

    kind = ItemKind.TASK
    crm_defaults: ClassVar[dict[str, CrmValue]] = {"statuscode": 2, "statecode": 0, "prioritycode": 1}
    edits = st.one_of(
        _text_edit("subject", "subject"),
        _text_edit("body", "description"),
        st.sampled_from(Importance).map(
            lambda value: ({"importance": value}, {"prioritycode": PRIORITY_CODES[value]})
        ),
        st.tuples(st.sampled_from(TaskStatus), st.sampled_from(_CRM_STATUSES), st.integers(0, 100)).map(
            lambda edit: (
                {"status": edit[0]},
                {"statuscode": edit[1], "statecode": STATE_OF_STATUS[edit[1]], "percentcomplete": edit[2]},
            )
        ),
    )

    def blank(self) -> Neutral:
        return Task()

    def assert_agree(self, item: Neutral, record: dict[str, CrmValue]) -> None:
        assert isinstance(item, Task)
        projected = TASK_MAP.project(item).values
        for column in ("subject", "description", "prioritycode"):
            assert projected[column] == record.get(column), f"{column} differs"
        status = record["statuscode"]
        assert isinstance(status, int)
        assert record["statecode"] == STATE_OF_STATUS[status], "a status reason outside its state"
        assert _SHOWN_AS[status] is item.status, "To Do does not show the CRM status"


_SETTINGS = settings(
    max_examples=100, stateful_step_count=12, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


_MESSAGE_IDS = [f"<m{n}@contoso.example>" for n in range(4)]


class SharedEmailSync(RuleBasedStateMachine):
    """Copies of the same messages in two mailboxes, tracked, deleted, untracked and synced in any
    order (some syncs interrupted): never more than one CRM email per internetMessageId."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World(ItemKind.EMAIL)
        self.mailboxes = [self.world.mailbox("mbx-a", "user-a"), self.world.mailbox("mbx-b", "user-b")]

    @initialize(delete_policy=st.sampled_from(DeletePolicy))
    def choose_policy(self, delete_policy: DeletePolicy) -> None:
        self.world.policy = SyncPolicy(delete_policy=delete_policy)

    @rule(box=st.integers(0, 1), message=st.sampled_from(_MESSAGE_IDS), body_read=st.booleans())
    def deliver(self, box: int, message: str, body_read: bool) -> None:
        email = Email(
            subject=f"About {message}",
            body="text" if body_read else None,
            sender=EmailAddress(address="seller@contoso.example"),
            to=(EmailAddress(address="a@fabrikam.example"), EmailAddress(address="b@fabrikam.example")),
            internet_message_id=message,
        )
        self.world.outlook_create(self.mailboxes[box], email)

    @rule(box=st.integers(0, 1), pick=st.integers(min_value=0), untrack=st.booleans())
    def remove(self, box: int, pick: int, untrack: bool) -> None:
        mailbox = self.mailboxes[box]
        if not mailbox.items:
            return
        item_id = sorted(mailbox.items)[pick % len(mailbox.items)]
        if untrack:
            mailbox.items[item_id].tracked = False
        else:
            del mailbox.items[item_id]

    @rule(box=st.integers(0, 1), crash=st.booleans())
    def sync(self, box: int, crash: bool) -> None:
        self.world.sync(self.mailboxes[box], crash_before_links=crash)
        self.assert_one_record_per_message()

    def teardown(self) -> None:
        for _ in range(2):  # a mailbox's unlink can follow the other's delete
            for mailbox in self.mailboxes:
                self.world.sync(mailbox)
        for mailbox in self.mailboxes:
            assert _work(self.world.sync(mailbox)) == [], "a further sync still had work to do"
            linked = {self.world.records[link.crm_id].values["messageid"] for link in mailbox.links.values()}
            for entry in mailbox.items.values():
                if entry.tracked:  # each tracked copy's message is in the CRM and linked in this mailbox
                    assert entry.item.model_dump()["internet_message_id"] in linked
        self.assert_one_record_per_message()

    def assert_one_record_per_message(self) -> None:
        expected = {
            message: crm_record_id(
                ItemKind.EMAIL, "message:" + message.strip("<>") + "|seller@contoso.example"
            )
            for message in _MESSAGE_IDS
        }
        assert set(self.world.records) <= set(expected.values()), "a CRM email outside the deterministic ids"
        for record_id, record in self.world.records.items():
            assert expected[str(record.values["messageid"])] == record_id


SharedEmailSync.TestCase.settings = _SETTINGS
TestSharedEmailSync = SharedEmailSync.TestCase
ContactSync.TestCase.settings = _SETTINGS
TaskSync.TestCase.settings = _SETTINGS
TestContactSync = ContactSync.TestCase
TestTaskSync = TaskSync.TestCase
