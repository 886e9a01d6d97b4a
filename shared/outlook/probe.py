"""The sweep's safety read: which of a mailbox's resources have changes a lost notification hid.

Every resource's stored delta link is asked for one item, all of a mailbox's in one JSON ``$batch``
(one HTTP request; Graph still counts each request in it against the mailbox's budget,
learn.microsoft.com/graph/json-batching and /graph/throttling-limits). A delta link answers only
what changed since it was issued (learn.microsoft.com/graph/delta-query-overview), so an answer with
no item and no ``@odata.nextLink`` means nothing was missed; anything else (an item, a next page, an
expired token's 410, an error) means a run must read the resource. The answers' new links are not
kept: the probe changes no state, and the run reads from the stored link as it would have.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation

from shared.outlook.batch import BatchAnswer, GraphBatch

log = logging.getLogger(__name__)

#: The smallest page that still says whether anything changed.
_ONE_ITEM = "odata.maxpagesize=1"


def _quiet(answer: BatchAnswer) -> bool:
    body = answer.body if isinstance(answer.body, dict) else {}
    return answer.ok and not body.get("value") and "@odata.nextLink" not in body


class DeltaProbe:
    """One ``$batch`` of delta reads per mailbox (see the module docstring)."""

    def __init__(self, batch: GraphBatch) -> None:
        self._batch = batch

    async def changed(self, delta_links: Mapping[str, str]) -> set[str]:
        """The keys (resources) whose delta link has changes waiting, or could not say."""
        requests = {}
        for resource, link in delta_links.items():
            info = RequestInformation(Method.GET)
            info.url = link
            info.headers.try_add("Prefer", _ONE_ITEM)
            requests[resource] = info
        if not requests:
            return set()
        try:
            answers = await self._batch.send(requests)
        except Exception as exc:
            log.warning("safety read failed (%s); the resources get a run instead", type(exc).__name__)
            return set(requests)
        return {resource for resource, answer in answers.items() if not _quiet(answer)}
