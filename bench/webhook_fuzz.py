"""Fuzz crmsync's three webhooks in-process, on real Azurite, as the Functions host calls them.

    python -m bench.webhook_fuzz [--payloads 10000] [--seed 0]

Sends ``--payloads`` generated requests to each webhook (Graph's ``notifications`` and
``lifecycle``, and the Dataverse webhook ``crm_webhook``, below),
drawn by Hypothesis from the documented shapes ("Receive change notifications through webhooks",
the ``changeNotification`` resource: subscriptionId and tenantId Guid, clientState at most 255
characters, changeType created/updated/deleted, lifecycleEvent reauthorizationRequired/
subscriptionRemoved/missed) and from raw garbage:

- ``genuine``: valid notifications of subscriptions crmsync holds, with their clientState (202);
- ``unknown``: valid notifications of random subscription ids, up to 1,000 in one POST (202);
- ``forged``: a victim subscription with a wrong, missing or borrowed clientState, or another
  tenant, alone or next to genuine notifications (403);
- ``malformed``: a victim's genuine notification (its real clientState) with one field broken:
  missing, wrong type, a subscriptionId or tenantId that is not a Guid (too long, non-ASCII, key-
  forbidden characters), an unknown changeType, a clientState over 255 characters; or a broken
  envelope: no ``value``, not a list, empty, over 1,000 items (400);
- ``garbage``: random bytes, non-UTF-8, deep nesting, huge arrays, JSON of the wrong shape (400),
  or over the size cap, declared or sent (413); a Content-Length that is not a number (400);
- ``validation``: any ``validationToken``: echoed (200) only if it is 1-1,024 printable ASCII
  characters, else 400 and not reflected;
- ``replay``: a request sent earlier, sent again (the same answer as the first time).

The Dataverse webhook gets RemoteExecutionContexts as "Use WebHooks to create external handlers for
server events" shows them (MessageName, PrimaryEntityName, PrimaryEntityId, InputParameters with
the Target entity or reference, an Assign's Assignee, column values carrying the canary) with
WebhookKey authentication (``?code=``): ``genuine`` (202), ``forged`` (a missing, wrong, truncated
or extended key, naming a victim record: 403), ``malformed`` (the right key, one member broken or
missing, a Target, attribute or owner reference of the wrong shape: 400), ``garbage`` and
``oversize`` as above (with the right key), and ``replay``.

Checked for every request: never a 5xx (storage is up), the answer within 3 s, the expected
status, and nothing of the request in the answer but an echoed validation token (generated strings
carry a canary that must never come back). Checked at the end: no job, no dirty mark and no
lifecycle work for any victim subscription, and no CRM work for any victim record (only forged or
malformed requests name them). It prints
counts per kind and status, latency percentiles and every violation (benchmarks print, they do not
fail; the Hypothesis test in tests/functions/test_webhook_fuzz.py runs a short derandomized variant
that asserts).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import shared.runtime
from bench._common import percentile, print_results
from function_app import app
from shared.config import get_settings
from shared.runtime import Runtime, get_runtime
from shared.store.crm_jobs import CrmWork, CrmWorkSource, crm_queue_name
from shared.store.records import SubscriptionRecord, hash_client_state
from shared.sync import crm_intake
from shared.sync.lifecycle import lifecycle_queue_name
from simulators.azurite import Azurite

TENANT = "00000000-0000-4000-8000-000000000001"
CANARY = "CANARY"
ANSWER_SECONDS = 3.0
CHANGE_TYPES = ("created", "updated", "deleted")
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
_SANE_TOKEN = re.compile(r"[\x20-\x7e]{1,1024}")
Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


@dataclass(frozen=True)
class Sub:
    subscription_id: str
    client_state: str
    mailbox_id: str
    resource: str


@dataclass(frozen=True)
class Target:
    """The subscriptions the fuzzer knows: genuine ones it notifies, victims only ever forged."""

    genuine: tuple[Sub, ...]
    victims: tuple[Sub, ...]
    max_bytes: int
    crm_key: str | None = None  # the Dataverse webhook's key (CRMSYNC_CRM_WEBHOOK_KEY)
    crm_victims: tuple[str, ...] = ()  # record ids only forged or malformed contexts name


@dataclass(frozen=True)
class Case:
    kind: str
    body: bytes
    expected: frozenset[int]
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    echo: str | None = None  # the validation token that must come back verbatim


async def make_target(runtime: Runtime, *, genuine: int = 4, victims: int = 4) -> Target:
    store = await runtime.store()
    await runtime.jobs()
    await runtime.lifecycle_jobs()

    async def one(role: str, index: int) -> Sub:
        mailbox = f"fuzz-{role}-{index}-{uuid.uuid4().hex[:6]}"
        sub = Sub(str(uuid.uuid4()), uuid.uuid4().hex, mailbox, f"users/{mailbox}/contacts")
        await store.subscriptions.put(
            SubscriptionRecord(
                subscription_id=sub.subscription_id,
                mailbox_id=mailbox,
                resource=sub.resource,
                client_state_hash=hash_client_state(sub.client_state),
                expiration=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
            )
        )
        return sub

    await runtime.crm_work()
    key = runtime.settings.crm_webhook_key
    return Target(
        tuple([await one("genuine", i) for i in range(genuine)]),
        tuple([await one("victim", i) for i in range(victims)]),
        runtime.settings.max_notification_bytes,
        key.get_secret_value() if key is not None else None,
        tuple(str(uuid.uuid4()) for _ in range(victims)),
    )


# --- strategies -------------------------------------------------------------------------------

_canary_text = st.text(max_size=12).map(lambda t: CANARY + t)
_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _canary_text
_garbage = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_not_a_string = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.lists(_leaf, max_size=3)
    | st.dictionaries(st.text(max_size=4), _leaf, max_size=3)
)
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_not_a_guid = (
    _canary_text
    | st.builds(lambda g, n: g + "0" * n, st.uuids().map(str), st.integers(1, 700))
    | st.builds(lambda g: g[:-1] + "/", st.uuids().map(str))
    | st.builds(lambda g: "\u00e9" + g[1:], st.uuids().map(str))
    | st.text(min_size=1, max_size=40).filter(lambda t: not _GUID.fullmatch(t))
    | _not_a_string
)


def _item(
    sub_id: str,
    state: str | None,
    *,
    lifecycle: bool,
    tenant: str = TENANT,
    event: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "subscriptionId": sub_id,
        "subscriptionExpirationDateTime": "2026-12-31T00:00:00.0000000Z",
        "tenantId": tenant,
    }
    if state is not None:
        item["clientState"] = state
    if lifecycle:
        item["lifecycleEvent"] = event or "missed"
    else:
        item |= {
            "changeType": event or "updated",
            "resource": "Users/x/Contacts/AAMk" + CANARY,
            "resourceData": {"@odata.type": "#Microsoft.Graph.Contact", "id": "AAMk" + CANARY},
        }
    return item | (extra or {})


def _body(items: Any) -> bytes:
    return json.dumps({"value": items}).encode()


def cases(target: Target, *, lifecycle: bool) -> st.SearchStrategy[Case]:
    """Every kind of request (see the module docstring) for one webhook."""
    events = st.sampled_from(LIFECYCLE_EVENTS if lifecycle else CHANGE_TYPES)
    genuine = st.sampled_from(target.genuine)
    victim = st.sampled_from(target.victims)
    extra = st.dictionaries(
        st.sampled_from(["@odata.type", "encryptedContent", "x" + CANARY]), _garbage, max_size=2
    )

    def valid(sub: Sub, event: str, more: dict[str, Any] | None = None) -> dict[str, Any]:
        return _item(sub.subscription_id, sub.client_state, lifecycle=lifecycle, event=event, extra=more)

    genuine_items = st.lists(st.builds(valid, genuine, events, extra), min_size=1, max_size=5)
    unknown_ids = st.builds(
        lambda seed, n, distinct: [
            str(uuid.UUID(int=(seed + (i if distinct else 0)) % 2**128)) for i in range(n)
        ],
        st.integers(0, 2**128),
        st.sampled_from([1, 3, 50, 1000]),
        st.booleans(),
    )
    unknown = st.builds(
        lambda ids, state, event: _body([_item(i, state, lifecycle=lifecycle, event=event) for i in ids]),
        unknown_ids,
        st.none() | _canary_text.map(lambda t: t[:255]),
        events,
    )

    def forged_item(
        *, sub: Sub, how: str, other: Sub, text: str | None, tenant: str, event: str
    ) -> dict[str, Any]:
        state = {
            "wrong": (text or CANARY)[:255],
            "missing": None,
            "borrowed": other.client_state,
            "tenant": sub.client_state,
        }[how]
        return _item(
            sub.subscription_id,
            state,
            lifecycle=lifecycle,
            event=event,
            tenant=tenant if how == "tenant" else TENANT,
        )

    forged_item_st = st.builds(
        forged_item,
        sub=victim,
        how=st.sampled_from(["wrong", "missing", "borrowed", "tenant"]),
        other=genuine,
        text=_canary_text | st.none(),
        tenant=st.uuids().map(str).filter(lambda t: t != TENANT),
        event=events,
    )
    forged = st.builds(
        lambda f, g, pos: _body([*g[:pos], f, *g[pos:]]),
        forged_item_st,
        st.lists(st.builds(valid, genuine, events, extra), max_size=3),
        st.integers(0, 3),
    )

    required = [
        "subscriptionId",
        "subscriptionExpirationDateTime",
        "tenantId",
        "lifecycleEvent" if lifecycle else "changeType",
    ]
    if not lifecycle:
        required.append("resource")
    broken_fields: dict[str, st.SearchStrategy[Any]] = {
        "subscriptionId": _not_a_guid,
        "tenantId": _not_a_guid,
        "subscriptionExpirationDateTime": st.none() | st.lists(_leaf, max_size=2) | _canary_text,
        "changeType": _garbage.filter(lambda v: v not in CHANGE_TYPES),
        "lifecycleEvent": _garbage.filter(lambda v: v not in LIFECYCLE_EVENTS),
        "resource": _not_a_string | st.just("") | st.integers(2049, 5000).map(lambda n: CANARY + "r" * n),
        "clientState": st.integers(256, 600).map(lambda n: CANARY + "s" * n)
        | st.integers()
        | st.lists(_leaf, max_size=2),
    }
    broken_value = {
        name: values
        for name, values in broken_fields.items()
        if name not in (("changeType", "resource") if lifecycle else ("lifecycleEvent",))
    }

    def broken(
        *, sub: Sub, name: str, value: Any, drop: bool, event: str, pos: int, good: list[dict[str, Any]]
    ) -> bytes:
        item = valid(sub, event, {})
        if drop and name in required:
            del item[name]
        else:
            item[name] = value
        return _body([*good[:pos], item, *good[pos:]])

    malformed_item = st.sampled_from(sorted(broken_value)).flatmap(
        lambda name: st.builds(
            broken,
            sub=victim,
            name=st.just(name),
            value=broken_value[name],
            drop=st.sampled_from([False, False, True]),
            event=events,
            pos=st.integers(0, 2),
            good=st.lists(st.builds(valid, genuine, events), max_size=2),
        )
    )
    envelope = st.one_of(
        st.builds(lambda v: json.dumps({"items": v}).encode(), _garbage),
        st.builds(
            lambda v: json.dumps({"value": v}).encode(),
            _leaf | st.dictionaries(st.text(max_size=5), _leaf, max_size=3),
        ),
        st.just(b'{"value": []}'),
        st.builds(lambda sub, event: _body([valid(sub, event, {})] * 1001), victim, events),
        st.builds(lambda v: json.dumps(v).encode(), st.lists(_garbage, max_size=3) | _leaf),
        st.builds(
            lambda sub, event: _body(
                [_item(sub.subscription_id, sub.client_state, lifecycle=not lifecycle, event="")]
            ),
            victim,
            events,
        ),
    )
    garbage = st.one_of(
        st.binary(max_size=3000),
        st.binary(max_size=200).map(lambda b: b"\xff\xfe" + b),
        st.builds(lambda sub: b"\xef\xbb\xbf" + _body([valid(sub, "", {})])[:-3] + b"\xc3\x28]}", victim),
        st.integers(1, 200_000).map(lambda n: b'{"value": ' + b"[" * n + b"]" * n + b"}"),
        st.integers(1, 150_000).map(lambda n: b'{"value": [' + b"1," * n + b"1]}"),
        st.builds(
            lambda sub: _body([valid(sub, "", {})]).replace(b'"tenantId"', b'"tenantId": "\\ud800", "x"'),
            victim,
        ),
        st.text(max_size=300).map(lambda t: (CANARY + t).encode("utf-8", "surrogatepass")),
    )
    too_big = st.builds(lambda n: b"[" + b" " * (target.max_bytes + n) + b"]", st.integers(1, 1000))

    def validation(token: str) -> Case:
        sane = bool(_SANE_TOKEN.fullmatch(token))
        return Case(
            "validation",
            b"",
            frozenset({200} if sane else {400}),
            params={"validationToken": token},
            echo=token if sane else None,
        )

    return st.one_of(
        st.builds(lambda b: Case("genuine", _body(b), frozenset({202})), genuine_items),
        st.builds(lambda b: Case("unknown", b, frozenset({202})), unknown),
        *[st.builds(lambda b: Case("forged", b, frozenset({403})), forged)] * 2,
        *[st.builds(lambda b: Case("malformed", b, frozenset({400})), malformed_item)] * 3,
        st.builds(lambda b: Case("malformed", b, frozenset({400})), envelope),
        st.builds(lambda b: Case("garbage", b, frozenset({400, 413})), garbage),
        st.builds(lambda b: Case("oversize", b, frozenset({413})), too_big),
        st.builds(
            lambda n, b: Case(
                "oversize", b, frozenset({413}), headers={"Content-Length": str(target.max_bytes + n)}
            ),
            st.integers(1, 10**12),
            st.builds(lambda sub: _body([valid(sub, "", {})]), victim),
        ),
        st.builds(
            lambda v, b: Case("garbage", b, frozenset({400}), headers={"Content-Length": v}),
            st.text(min_size=1, max_size=8).filter(
                lambda t: not t.strip().isdigit() or not t.strip().isascii()
            ),
            st.builds(lambda sub: _body([valid(sub, "", {})]), victim),
        ),
        st.builds(
            validation,
            st.text(max_size=40)
            | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=1100),
        ),
        st.just(Case("replay", b"", frozenset())),
    )


# --- the Dataverse webhook ---------------------------------------------------------------------

_XRM = "http://schemas.microsoft.com/xrm/2011/Contracts"


def _reference(record_id: Any, table: str) -> dict[str, Any]:
    return {"__type": f"EntityReference:{_XRM}", "Id": record_id, "LogicalName": table, "Name": None}


def _crm_context(
    message: str, table: str, record_id: Any, *, owner: str | None, columns: dict[str, Any]
) -> dict[str, Any]:
    """A RemoteExecutionContext as Dataverse posts it for an asynchronous step on ``message``."""
    if message in {"Create", "Update"}:
        attributes = [{"key": k, "value": v} for k, v in columns.items()]
        if owner is not None:
            attributes.append({"key": "ownerid", "value": _reference(owner, "systemuser")})
        entity = {"__type": f"Entity:{_XRM}", "Attributes": attributes, "FormattedValues": []}
        parameters = [{"key": "Target", "value": entity | {"Id": record_id, "LogicalName": table}}]
    elif message == "Assign":
        parameters = [
            {"key": "Target", "value": _reference(record_id, table)},
            {"key": "Assignee", "value": _reference(owner or str(uuid.uuid4()), "systemuser")},
        ]
    elif message == "Delete":
        parameters = [{"key": "Target", "value": _reference(record_id, table)}]
    else:  # SetState, SetStateDynamicEntity
        parameters = [
            {"key": "EntityMoniker", "value": _reference(record_id, table)},
            {"key": "State", "value": {"__type": f"OptionSetValue:{_XRM}", "Value": 1}},
        ]
    return {
        "BusinessUnitId": str(uuid.uuid4()),
        "CorrelationId": str(uuid.uuid4()),
        "Depth": 1,
        "InitiatingUserId": str(uuid.uuid4()),
        "InputParameters": parameters,
        "IsExecutingOffline": False,
        "IsInTransaction": False,
        "MessageName": message,
        "Mode": 1,
        "OperationCreatedOn": "/Date(1796000000000)/",
        "OrganizationName": "contoso",
        "OutputParameters": [],
        "PostEntityImages": [],
        "PreEntityImages": [],
        "PrimaryEntityId": record_id,
        "PrimaryEntityName": table,
        "SecondaryEntityName": "none",
        "Stage": 40,
        "UserId": str(uuid.uuid4()),
    }


def crm_cases(target: Target) -> st.SearchStrategy[Case]:
    """Every kind of request (see the module docstring) for the Dataverse webhook."""
    assert target.crm_key is not None, "set CRMSYNC_CRM_WEBHOOK_KEY for the Dataverse webhook"
    key = target.crm_key
    messages = st.sampled_from(sorted(crm_intake.MESSAGES))
    tables = st.sampled_from(sorted(crm_intake.TABLES))
    victim = st.sampled_from(target.crm_victims)
    owners = st.none() | st.uuids().map(str)
    columns = st.dictionaries(
        st.sampled_from(["lastname", "emailaddress1", "subject", "description"]), _canary_text, max_size=3
    )

    def context(message: str, table: str, record_id: Any, owner: str | None, cols: dict[str, Any]) -> bytes:
        return json.dumps(_crm_context(message, table, record_id, owner=owner, columns=cols)).encode()

    def keyed(kind: str, body: bytes, expected: set[int], headers: dict[str, str] | None = None) -> Case:
        return Case(kind, body, frozenset(expected), params={"code": key}, headers=headers or {})

    genuine = st.builds(
        lambda m, t, o, c: keyed("genuine", context(m, t, str(uuid.uuid4()), o, c), {202}),
        messages,
        tables,
        owners,
        columns,
    )
    wrong_keys = st.one_of(
        st.none(),
        st.just(""),
        st.just(key[:-1]),
        st.just(key + "x"),
        st.just(key[:-1] + ("y" if key[-1] != "y" else "z")),
        _canary_text,
        st.text(min_size=1, max_size=80).filter(lambda t: t != key),
    )
    forged = st.builds(
        lambda code, m, t, r, o, c, junk: Case(
            "forged",
            junk if junk is not None else context(m, t, r, o, c),
            frozenset({403}),
            params={} if code is None else {"code": code},
        ),
        wrong_keys,
        messages,
        tables,
        victim,
        owners,
        columns,
        st.none() | st.binary(max_size=200),
    )

    def broken(message: str, table: str, record_id: str, how: str, value: Any) -> bytes:
        ctx = _crm_context(message, table, record_id, owner=str(uuid.uuid4()), columns={})
        if value is _DROP:
            del ctx[how]
        elif how in {"MessageName", "PrimaryEntityName", "PrimaryEntityId", "InputParameters"}:
            ctx[how] = value
        elif how == "Target":
            ctx["InputParameters"][0]["value"] = value
        elif how == "Attributes":
            ctx["InputParameters"][0]["value"]["Attributes"] = value
        elif how == "owner":
            attributes = ctx["InputParameters"][0]["value"]["Attributes"]
            attributes[-1]["value"] = value
        elif how == "Assignee":
            ctx["InputParameters"][1]["value"] = value
        return json.dumps(ctx).encode()

    not_a_reference = _not_a_string.filter(lambda v: not isinstance(v, dict)) | st.builds(
        lambda g: {"Id": g, "LogicalName": "systemuser"}, _not_a_guid
    )
    member = st.sampled_from(["MessageName", "PrimaryEntityName", "PrimaryEntityId", "InputParameters"])
    broken_members: dict[str, st.SearchStrategy[Any]] = {
        "MessageName": _garbage.filter(lambda v: not isinstance(v, str) or v not in crm_intake.MESSAGES)
        | st.just(_DROP),
        "PrimaryEntityName": _garbage.filter(lambda v: not isinstance(v, str) or v not in crm_intake.TABLES)
        | st.just(_DROP),
        "PrimaryEntityId": _not_a_guid | st.just(_DROP),
        # not a list, or parameters that are not objects (left out, it is an empty list: valid)
        "InputParameters": _leaf
        | st.dictionaries(st.text(max_size=4), _leaf, max_size=2)
        | st.lists(_leaf, min_size=1, max_size=3),
    }
    malformed_member = member.flatmap(
        lambda how: st.builds(broken, messages, tables, victim, st.just(how), broken_members[how])
    )
    malformed_target = st.one_of(
        st.builds(
            broken,
            st.sampled_from(["Create", "Update"]),
            tables,
            victim,
            st.just("Target"),
            _not_a_string.filter(lambda v: not isinstance(v, dict)),
        ),
        st.builds(
            broken,
            st.sampled_from(["Create", "Update"]),
            tables,
            victim,
            st.just("Attributes"),
            _leaf.filter(lambda v: v is not None)
            | st.lists(_leaf.filter(lambda v: v is not None), min_size=1),
        ),
        st.builds(
            broken, st.sampled_from(["Create", "Update"]), tables, victim, st.just("owner"), not_a_reference
        ),
        st.builds(broken, st.just("Assign"), tables, victim, st.just("Assignee"), not_a_reference),
    )
    garbage = st.one_of(
        st.binary(max_size=3000),
        st.binary(max_size=200).map(lambda b: b"\xff\xfe" + b),
        st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(1, 200_000).map(lambda n: b'{"InputParameters": ' + b"[" * n + b"]" * n + b"}"),
        st.integers(1, 30_000).map(lambda n: b'{"InputParameters": [' + b"1," * n + b"1]}"),
        st.builds(lambda v: json.dumps(v).encode(), _garbage),
        st.text(max_size=300).map(lambda t: (CANARY + t).encode("utf-8", "surrogatepass")),
    )
    limit = crm_intake.MAX_BODY_BYTES
    return st.one_of(
        *[genuine] * 2,
        *[forged] * 2,
        *[st.builds(lambda b: keyed("malformed", b, {400}), malformed_member)] * 2,
        *[st.builds(lambda b: keyed("malformed", b, {400}), malformed_target)] * 2,
        st.builds(lambda b: keyed("garbage", b, {400, 413}), garbage),
        st.builds(lambda n: keyed("oversize", b"[" + b" " * (limit + n) + b"]", {413}), st.integers(1, 1000)),
        st.builds(
            lambda n, r: keyed(
                "oversize",
                context("Update", "contact", r, None, {}),
                {413},
                {"Content-Length": str(limit + n)},
            ),
            st.integers(1, 10**12),
            victim,
        ),
        st.builds(
            lambda v, r: keyed(
                "garbage", context("Update", "contact", r, None, {}), {400}, {"Content-Length": v}
            ),
            st.text(min_size=1, max_size=8).filter(
                lambda t: not t.strip().isdigit() or not t.strip().isascii()
            ),
            victim,
        ),
        st.just(Case("replay", b"", frozenset())),
    )


_DROP = object()  # a member left out of the context


# --- sending and checking --------------------------------------------------------------------


@dataclass
class Fuzzer:
    """Sends cases to one webhook, checks each answer, and keeps the numbers."""

    webhook: str
    handler: Handler
    target: Target
    latencies_ms: list[float] = field(default_factory=list)
    counts: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)
    sent: collections.deque[Case] = field(default_factory=lambda: collections.deque(maxlen=200))

    async def send(self, case: Case, replay_index: int = 0) -> list[str]:
        if case.kind == "replay":
            if not self.sent:
                return []
            original = self.sent[replay_index % len(self.sent)]
            case = Case(
                "replay", original.body, original.expected, original.params, original.headers, original.echo
            )
        elif len(case.body) < 100_000:
            self.sent.append(case)
        request = func.HttpRequest(
            method="POST",
            url=f"http://localhost/api/{self.webhook}",
            body=case.body,
            params=case.params,
            headers=case.headers,
        )
        started = time.perf_counter()
        response = await self.handler(request)
        elapsed = time.perf_counter() - started
        self.latencies_ms.append(elapsed * 1000)
        self.counts[(case.kind, response.status_code)] += 1
        problems = self.check(case, response, elapsed)
        self.violations.extend(problems)
        return problems

    def check(self, case: Case, response: func.HttpResponse, elapsed: float) -> list[str]:
        problems = []
        status, answer = response.status_code, response.get_body()
        what = f"{self.webhook} {case.kind} ({len(case.body)} bytes)"
        if status >= 500:
            problems.append(f"{what}: {status} with storage up")
        elif status not in case.expected:
            problems.append(f"{what}: answered {status}, expected {sorted(case.expected)}: {answer[:200]!r}")
        if elapsed > ANSWER_SECONDS:
            problems.append(f"{what}: answered after {elapsed:.2f} s")
        if case.echo is not None:
            if answer != case.echo.encode():
                problems.append(f"{what}: the validation token was not echoed verbatim")
        elif CANARY.encode() in answer:
            problems.append(f"{what}: the answer reflects the request")
        if response.headers.get("X-Content-Type-Options") != "nosniff":
            problems.append(f"{what}: no X-Content-Type-Options: nosniff")
        return problems


async def _messages(runtime: Runtime, queue_name: str) -> list[dict[str, Any]]:
    """Every message of a queue (received and hidden for an hour: the run is over by then)."""
    connection = runtime.settings.storage_connection_string
    assert connection
    async with QueueClient.from_connection_string(
        connection, queue_name, message_decode_policy=TextBase64DecodePolicy()
    ) as queue:
        found: list[dict[str, Any]] = []
        while batch := [
            m
            async for m in queue.receive_messages(
                messages_per_page=32, max_messages=32, visibility_timeout=3600
            )
        ]:
            found.extend(json.loads(m.content) for m in batch)
        return found


@dataclass(frozen=True)
class Audit:
    problems: list[str]
    jobs: int  # sync jobs queued (all for genuine subscriptions: the positive control)
    lifecycle_work: int
    crm_work: int  # change reads queued (by genuine contexts: one per table and burst)


async def audit(runtime: Runtime, target: Target) -> Audit:
    """No job, no dirty mark and no lifecycle work for a victim: only forged or malformed requests
    name them. (Genuine subscriptions get theirs: the positive control, counted.)"""
    store = await runtime.store()
    victims = {v.mailbox_id for v in target.victims}
    victim_ids = {v.subscription_id for v in target.victims}
    problems = [
        f"victim {v.mailbox_id} is marked dirty"
        for v in target.victims
        if (await store.sync_state.get_state(v.mailbox_id, v.resource)).dirty
    ]
    jobs = await _messages(runtime, runtime.settings.job_queue)
    lifecycle = await _messages(runtime, lifecycle_queue_name(runtime.settings.job_queue))
    problems += [f"a job for victim {j['mailbox_id']}" for j in jobs if j["mailbox_id"] in victims]
    problems += [
        f"lifecycle work for victim {m['subscription_id']}"
        for m in lifecycle
        if m["subscription_id"] in victim_ids
    ]
    crm_queue = crm_queue_name(runtime.settings.job_queue)
    crm_work = [CrmWork.model_validate(m) for m in await _messages(runtime, crm_queue)]
    # The webhook only marks a table's change read due: a queued message naming a record (a
    # victim's or anyone's) would be the webhook routing what a caller claimed.
    problems += [
        f"CRM work naming records or not a change read ({work.source})"
        for work in crm_work
        if work.changed or work.deleted or work.source is not CrmWorkSource.CHANGES_DUE
    ]
    return Audit(problems, len(jobs), len(lifecycle), len(crm_work))


WEBHOOKS = ("notifications", "lifecycle", "crm_webhook")  # the functions' names in function_app


def strategy_for(webhook: str, target: Target) -> st.SearchStrategy[Case]:
    """The generated requests for one of :data:`WEBHOOKS`."""
    if webhook == "crm_webhook":
        return crm_cases(target)
    return cases(target, lifecycle=webhook == "lifecycle")


def fuzz_sync(loop: asyncio.AbstractEventLoop, fuzzer: Fuzzer, *, payloads: int, random_seed: int) -> None:
    """Drive ``payloads`` Hypothesis examples through ``fuzzer`` on ``loop`` (violations collected)."""

    @seed(random_seed)
    @settings(
        max_examples=payloads,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy_for(fuzzer.webhook, fuzzer.target), replay=st.integers(0, 10**6))
    def run(case: Case, replay: int) -> None:
        loop.run_until_complete(fuzzer.send(case, replay))

    run()


def _rows(fuzzer: Fuzzer) -> list[tuple[str, str, str]]:
    rows = [
        (f"{fuzzer.webhook}: {kind} -> {status}", str(n), "")
        for (kind, status), n in sorted(fuzzer.counts.items())
    ]
    total = sum(fuzzer.counts.values())
    rows.append((f"{fuzzer.webhook}: requests", str(total), ">= payloads"))
    for label, share in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
        rows.append(
            (
                f"{fuzzer.webhook}: latency {label}",
                f"{percentile(fuzzer.latencies_ms, share):.1f} ms",
                "< 3000 ms" if label == "max" else "",
            )
        )
    rows.append((f"{fuzzer.webhook}: violations", str(len(fuzzer.violations)), "0"))
    return rows


async def hung_storage(
    handlers: dict[str, Handler], requests: int
) -> tuple[collections.Counter[int], list[float]]:
    """Valid notifications of unknown subscriptions (and valid Dataverse contexts) while storage
    accepts connections and never answers: each must be a 503 within 3 s (the sender retries)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}/devstoreaccount1"
    os.environ["AzureWebJobsStorage"] = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"TableEndpoint={endpoint};QueueEndpoint={endpoint};"
    )
    get_settings.cache_clear()
    shared.runtime._runtime = None
    runtime = get_runtime()
    statuses: collections.Counter[int] = collections.Counter()
    latencies: list[float] = []
    try:
        key = runtime.settings.crm_webhook_key
        for index in range(requests):
            webhook = WEBHOOKS[index % len(WEBHOOKS)]
            if webhook == "crm_webhook":
                context = _crm_context("Update", "contact", str(uuid.uuid4()), owner=None, columns={})
                body = json.dumps(context).encode()
                params = {"code": key.get_secret_value()} if key is not None else {}
            else:
                body = _body([_item(str(uuid.uuid4()), "s", lifecycle=webhook == "lifecycle")])
                params = {}
            started = time.perf_counter()
            response = await handlers[webhook](
                func.HttpRequest(method="POST", url=f"/api/{webhook}", body=body, params=params)
            )
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[response.status_code] += 1
    finally:
        await runtime.close()
        listener.close()
        for connection in held:
            connection.close()
    return statuses, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, default=10_000, help="generated requests per webhook")
    parser.add_argument(
        "--seed", type=int, default=0, help="Hypothesis seed (the same seed, the same requests)"
    )
    parser.add_argument("--hung", type=int, default=20, help="requests while storage hangs (503 expected)")
    args = parser.parse_args()
    logging.getLogger("shared").setLevel(logging.ERROR)  # one warning per forged request otherwise
    logging.getLogger("functions").setLevel(logging.ERROR)
    handlers = {str(f.get_function_name()): f.get_user_function() for f in app.get_functions()}
    loop = asyncio.new_event_loop()
    with Azurite() as azurite:
        url = "http://127.0.0.1:9"
        os.environ.update(
            {
                "AzureWebJobsStorage": azurite.connection_string,
                "CRMSYNC_TENANT_ID": TENANT,
                "CRMSYNC_CLIENT_ID": "00000000-0000-4000-8000-000000000002",
                "CRMSYNC_CREDENTIAL_KIND": "sandbox",
                "CRMSYNC_GRAPH_URL": url + "/v1.0",
                "CRMSYNC_DATAVERSE_URL": url,
                "CRMSYNC_NOTIFICATION_URL": url + "/api/notifications",
                "CRMSYNC_LIFECYCLE_URL": url + "/api/lifecycle",
                "CRMSYNC_CRM_WEBHOOK_KEY": secrets.token_urlsafe(32),
            }
        )
        runtime = get_runtime()
        try:
            target = loop.run_until_complete(make_target(runtime))
            fuzzers = []
            started = time.perf_counter()
            for webhook in WEBHOOKS:
                fuzzer = Fuzzer(webhook, handlers[webhook], target)
                fuzz_sync(loop, fuzzer, payloads=args.payloads, random_seed=args.seed)
                fuzzers.append(fuzzer)
            wall = time.perf_counter() - started
            checked = loop.run_until_complete(audit(runtime, target))
        finally:
            loop.run_until_complete(runtime.close())
        hung, hung_ms = loop.run_until_complete(hung_storage(handlers, args.hung))
        loop.close()
    rows = [row for fuzzer in fuzzers for row in _rows(fuzzer)]
    rows += [
        ("audit: jobs, dirty marks, lifecycle or CRM work for victims", str(len(checked.problems)), "0"),
        (
            "audit: sync jobs / lifecycle work / CRM work queued for genuine requests",
            f"{checked.jobs} / {checked.lifecycle_work} / {checked.crm_work}",
            "> 0",
        ),
        (
            "storage hung: answers",
            ", ".join(f"{n} x {status}" for status, n in sorted(hung.items())),
            "all 503",
        ),
        ("storage hung: latency max", f"{max(hung_ms, default=float('nan')):.0f} ms", "< 3000 ms"),
        ("wall time (fuzzing)", f"{wall:.0f} s", ""),
    ]
    print_results("webhook fuzzing (in-process, Azurite)", rows)
    for problem in [p for f in fuzzers for p in f.violations][:50] + checked.problems[:50]:
        print("VIOLATION:", problem)


if __name__ == "__main__":
    main()
