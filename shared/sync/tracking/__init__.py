"""Email tracking (issue 6): which Outlook mail reaches the CRM, regarding what, with which files.

See ``README.md`` in this package for users and administrators, and :mod:`.tracker` for how the
Outlook -> CRM job calls it.
"""

from shared.sync.tracking.attachments import CopiedAttachments, SkippedAttachment, copy_attachments
from shared.sync.tracking.envelope import Envelope
from shared.sync.tracking.folders import FolderTree, folders_to_watch
from shared.sync.tracking.index import (
    TrackedMessage,
    TrackedThread,
    TrackedVia,
    TrackingIndex,
    open_tracking_index,
)
from shared.sync.tracking.policy import Reason, SenderLookup, TrackingDecision, TrackingPolicy
from shared.sync.tracking.tracker import Tracker, TrackingMailbox, TrackingService

__all__ = [
    "CopiedAttachments",
    "Envelope",
    "FolderTree",
    "Reason",
    "SenderLookup",
    "SkippedAttachment",
    "TrackedMessage",
    "TrackedThread",
    "TrackedVia",
    "Tracker",
    "TrackingDecision",
    "TrackingIndex",
    "TrackingMailbox",
    "TrackingPolicy",
    "TrackingService",
    "copy_attachments",
    "folders_to_watch",
    "open_tracking_index",
]
