"""Delta query rounds: opaque skip/delta tokens, pages, @removed, replays and expiry.

learn.microsoft.com/graph/delta-query-overview: a round is one or more GETs following
``@odata.nextLink`` (``$skiptoken``) until a page carries ``@odata.deltaLink`` (``$deltatoken``);
links are used verbatim, query options given on the first call are encoded in the token, deleted
items come back as ``{"id", "@removed": {"reason": "deleted"}}``, and an expired or unknown
token is answered ``410 Gone`` (the client must start a full sync).

Each delta token keeps a snapshot of what the client has been told (id -> changeKey), so the
next round reports exactly the items that changed, appeared or left the scope since, which is
also what makes calendarView items that leave the window come back as @removed. Old tokens
stay valid, so replaying a delta link is harmless (it re-reports changes).

learn.microsoft.com/graph/api/message-delta: the custom query option ``changeType`` (created,
updated or deleted), given on the initial request, limits the later rounds to that kind of change;
the initial round is the full synchronization the page describes and lists every item.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from simulators.graph.core import GraphError, Json, bad_request, url_token
from simulators.graph.http import Ctx, json_response


@dataclass(frozen=True)
class Entry:
    """One item as the scope holds it now: key (immutable id), change key, the id the client
    sees, and how to render it (only changed items are rendered)."""

    key: str
    change_key: str
    visible_id: str
    render: Callable[[], Json]


@dataclass
class DeltaState:
    user: str
    scope: str
    options: dict[str, str]
    snapshot: dict[str, tuple[str, str]]  # key -> (changeKey, id the client saw)


@dataclass
class Round:
    """A running round; pages render when served, so a first sync of a big folder stays cheap."""

    user: str
    pages: list[list[Callable[[], Json]]]
    delta_token: str


def _removed(odata_type: str, item_id: str) -> Json:
    return {"@odata.type": odata_type, "id": item_id, "@removed": {"reason": "deleted"}}


def sync_state_not_found(ctx: Ctx) -> GraphError:
    """delta-query-overview, "Synchronization reset": 410 with a Location header holding the request
    URL without its state token (the initial query), so the client starts a full synchronization."""
    initial = {k: v for k, v in ctx.query.items() if k not in ("$deltatoken", "$skiptoken")}
    return GraphError(
        410,
        "syncStateNotFound",
        "The sync state generation is invalid or has expired.",
        location=ctx.link(ctx.segments, initial),
    )


# Delta pages hold at most 200 items whatever odata.maxpagesize asks for ("contact: delta API what
# limit can we use for odata.maxpagesize", learn.microsoft.com/en-us/answers/a/2052165: "200 for
# objects, such as users and contacts ... Even if a higher value is specified, the API will cap the
# page size"); the simulator applies the same cap to message, calendarView and To Do task delta.
MAX_DELTA_PAGE = 200

MAX_TOKENS = 100_000  # oldest tokens are forgotten beyond this (Graph's tokens expire too)


def _remember(table: dict[str, Any], key: str, value: Any) -> None:
    table[key] = value
    while len(table) > MAX_TOKENS:
        del table[next(iter(table))]


class DeltaTokens:
    def __init__(self) -> None:
        self.states: dict[str, DeltaState] = {}
        self.pages: dict[str, tuple[Round, int]] = {}

    def expire(self, user: str) -> int:
        """Forget every token of a mailbox: its next delta call gets 410 (control API fault)."""
        stale = [t for t, s in self.states.items() if s.user == user]
        for token in stale:
            del self.states[token]
        for token in [t for t, (r, _) in self.pages.items() if r.user == user]:
            del self.pages[token]
        return len(stale)

    def respond(
        self,
        ctx: Ctx,
        *,
        scope: str,
        odata_type: str,
        collect: Callable[[dict[str, str]], list[Entry]],
        default_page: int,
        context: str,
        tracked_options: tuple[str, ...] = ("$select",),
    ) -> Response:
        """Serve one delta GET: a page of a running round, or a new round from a token or from scratch."""
        user = ctx.mailbox.id
        skip = ctx.query.get("$skiptoken")
        if skip is not None:
            found = self.pages.get(skip)
            if found is None or found[0].user != user:
                raise sync_state_not_found(ctx)
            return self._page(ctx, found[0], found[1], context)
        token = ctx.query.get("$deltatoken")
        if token is not None:
            state = self.states.get(token)
            if state is None or state.user != user or state.scope != scope:
                raise sync_state_not_found(ctx)
            options, previous = state.options, state.snapshot
        else:
            options = {k: ctx.query[k] for k in tracked_options if k in ctx.query}
            previous = None
        wanted = options.get("changeType")
        if wanted not in (None, "created", "updated", "deleted"):
            raise bad_request(f"Invalid changeType '{wanted}'.", "BadRequest")
        entries = collect(options)
        changes: list[Callable[[], Json]] = []
        snapshot: dict[str, tuple[str, str]] = {}
        for entry in entries:
            snapshot[entry.key] = (entry.change_key, entry.visible_id)
            if previous is None:
                changes.append(entry.render)
                continue
            before = previous.get(entry.key)
            change = "created" if before is None else "updated" if before[0] != entry.change_key else None
            if change is not None and wanted in (None, change):
                changes.append(entry.render)
        for key, (_, seen_id) in (previous or {}).items():
            if key not in snapshot and wanted in (None, "deleted"):
                changes.append(functools.partial(_removed, odata_type, seen_id))
        size = ctx.page_size(default_page, cap=MAX_DELTA_PAGE)
        pages = [changes[i : i + size] for i in range(0, len(changes), size)] or [[]]
        next_token = url_token()
        _remember(self.states, next_token, DeltaState(user, scope, options, snapshot))
        return self._page(ctx, Round(user, pages, next_token), 0, context)

    def _page(self, ctx: Ctx, round_: Round, index: int, context: str) -> Response:
        body: Json = {
            "@odata.context": ctx.context(context),
            "value": [render() for render in round_.pages[index]],
        }
        if index + 1 < len(round_.pages):
            skip = url_token()
            _remember(self.pages, skip, (round_, index + 1))
            body["@odata.nextLink"] = ctx.link(ctx.segments, {"$skiptoken": skip})
        else:
            body["@odata.deltaLink"] = ctx.link(ctx.segments, {"$deltatoken": round_.delta_token})
        return json_response(ctx, body)
