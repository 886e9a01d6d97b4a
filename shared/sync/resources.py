"""Subscription resource strings <-> what they mean: the item kind and where it lives.

Inverse of :func:`shared.outlook.subscriptions.resource_path` for one mailbox; a job naming any
other resource (another mailbox's, or one crmsync does not sync) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.domain.model import ItemKind

_RESOURCE = re.compile(
    r"^users/(?P<mailbox>[^/]+)/(?:"
    r"mailFolders\('(?P<folder>[^']+)'\)/messages"
    r"|(?P<plain>contacts|events)"
    r"|todo/lists/(?P<task_list>.+)/tasks)$"
)


class InvalidResource(ValueError):
    """A sync job names a resource crmsync does not sync (or another mailbox's)."""


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """What a subscription resource string means: the item kind and where it lives."""

    kind: ItemKind
    mail_folder: str | None = None
    task_list_id: str | None = None


def parse_resource(mailbox_id: str, resource: str) -> ResourceRef:
    """Inverse of :func:`~shared.outlook.subscriptions.resource_path` for one mailbox."""
    match = _RESOURCE.match(resource)
    if match is None or match["mailbox"] != mailbox_id:
        raise InvalidResource("not a resource of this mailbox that crmsync syncs")
    if match["folder"]:
        return ResourceRef(ItemKind.EMAIL, mail_folder=match["folder"])
    if match["task_list"]:
        return ResourceRef(ItemKind.TASK, task_list_id=match["task_list"])
    return ResourceRef(ItemKind.CONTACT if match["plain"] == "contacts" else ItemKind.APPOINTMENT)
