"""Access tokens and the application permissions each Graph endpoint needs.

An app-only token carries its application permissions in the ``roles`` claim (learn.microsoft.com/
entra/identity-platform/access-token-claims-reference: "roles ... the set of permissions exposed by your
application that the requesting application or user has been given permission to call"; "Delegated
permissions are in the scp claim, application permissions in the roles claim",
learn.microsoft.com/graph/resolve-auth-errors). Graph answers a call the token's roles do not cover
with 403 (learn.microsoft.com/graph/resolve-auth-errors: "403 Forbidden error: Have you chosen the right
set of permissions?"): Outlook resources (mail, calendar, contacts, To Do, categories) with
``ErrorAccessDenied`` "Access is denied. Check credentials and try again.", the directory (/users)
with ``Authorization_RequestDenied`` "Insufficient privileges to complete the operation.", and a
subscription with ``ExtensionError`` naming the forbidden operation.

Which roles each endpoint accepts is its page's permissions table, "Application" row (least privileged
first, then higher privileged):

- user-get, user-list: User.Read.All, User.ReadWrite.All, Directory.Read.All, Directory.ReadWrite.All
  (learn.microsoft.com/graph/migrate-azure-ad-graph-permissions-differences: "on Microsoft Graph,
  reading users in app-only scenarios requires only the User.Read.All permission"). User.ReadBasic.All
  is not listed for applications, and app-only GET /users with it alone is refused with
  Authorization_RequestDenied (learn.microsoft.com/en-us/answers/questions/6019739), so not here either.
- user-list-mailfolders, mailfolder-get, user-list-messages, message-get, message-delta,
  message-list-attachments, attachment-get: Mail.Read, Mail.ReadWrite. (Mail.ReadBasic(.All) reads
  messages without their body; the simulator does not model that reduced view and refuses it.)
  user-post-messages, message-update, message-delete, message-move, mailfolder-post-childfolders,
  message-post-attachments, attachment-delete: Mail.ReadWrite.
- user-list-contacts, contact-get, contact-delta, user-list-contactfolders: Contacts.Read,
  Contacts.ReadWrite; user-post-contacts, contact-update, contact-delete: Contacts.ReadWrite.
- user-list-events, event-get, user-list-calendarview, event-delta, event-list-instances:
  Calendars.Read, Calendars.ReadWrite (Calendars.ReadBasic hides bodies and attendees: not modelled,
  refused); user-post-events, event-update, event-delete: Calendars.ReadWrite.
- todo-list-lists, todotasklist-list-tasks, todotask-get, todotask-delta, todotask-list-linkedresources,
  linkedresource-get: Tasks.Read.All, Tasks.ReadWrite.All; todotasklist-post-tasks, todotask-update,
  todotask-delete, todo-post-lists: Tasks.ReadWrite.All; todotask-post-linkedresources: "Application:
  Not supported" (an app creates linkedResources in the task's own POST).
- outlookuser-list-mastercategories, outlookcategory-get: MailboxSettings.Read,
  MailboxSettings.ReadWrite; outlookuser-post-mastercategories, outlookcategory-update/-delete:
  MailboxSettings.ReadWrite.
- subscription-post-subscriptions (and get, update, delete, reauthorize): the read permission of the
  resource: Mail.Read (messages), Contacts.Read, Calendars.Read, Tasks.Read.All, or their ReadWrite.

A token the simulator did not issue (``POST /_sim/tokens``) stands for a person's own client
(Outlook, or a test acting as the user) and is not limited by roles.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass

from simulators.graph.core import GraphError, Json, bad_request
from simulators.graph.store import Kind

_SIGNING_KEY = secrets.token_bytes(32)

MAIL_READ = frozenset({"Mail.Read", "Mail.ReadWrite"})
MAIL_WRITE = frozenset({"Mail.ReadWrite"})
CONTACTS_READ = frozenset({"Contacts.Read", "Contacts.ReadWrite"})
CONTACTS_WRITE = frozenset({"Contacts.ReadWrite"})
CALENDARS_READ = frozenset({"Calendars.Read", "Calendars.ReadWrite"})
CALENDARS_WRITE = frozenset({"Calendars.ReadWrite"})
TASKS_READ = frozenset({"Tasks.Read.All", "Tasks.ReadWrite.All"})
TASKS_WRITE = frozenset({"Tasks.ReadWrite.All"})
SETTINGS_READ = frozenset({"MailboxSettings.Read", "MailboxSettings.ReadWrite"})
SETTINGS_WRITE = frozenset({"MailboxSettings.ReadWrite"})
DIRECTORY_READ = frozenset(
    {"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
)
NOT_SUPPORTED: frozenset[str] = frozenset()

SUBSCRIPTION_ROLES = {
    Kind.MESSAGE: MAIL_READ,
    Kind.CONTACT: CONTACTS_READ,
    Kind.EVENT: CALENDARS_READ,
    Kind.TASK: TASKS_READ,
}


@dataclass(frozen=True)
class Claims:
    """What an issued app-only token says about its caller."""

    app_id: str
    roles: frozenset[str]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Tokens:
    """The simulated tenant's issued app-only tokens (the part of Entra ID the simulator plays)."""

    def __init__(self) -> None:
        self.issued: dict[str, Claims] = {}

    def issue(self, body: Json, tenant_id: str) -> Json:
        """``POST /_sim/tokens {"roles": [...], "appId"?, "token"?}``: a JWT-shaped token whose payload
        carries ``roles``, ``appid``, ``tid`` and ``idtyp: app``, or the given ``token`` string (for a
        client that sends a fixed placeholder) bound to those claims."""
        roles = body.get("roles")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise bad_request("roles must be a list of permission names.", "BadRequest")
        app_id = str(body.get("appId") or uuid.uuid4())
        token = body.get("token")
        if token is None:
            header = _b64(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
            claims = {"aud": "https://graph.microsoft.com", "appid": app_id, "idtyp": "app",
                      "roles": roles, "tid": tenant_id, "oid": str(uuid.uuid4())}  # fmt: skip
            payload = _b64(json.dumps(claims).encode())
            signature = _b64(hmac.new(_SIGNING_KEY, f"{header}.{payload}".encode(), hashlib.sha256).digest())
            token = f"{header}.{payload}.{signature}"
        if not isinstance(token, str) or not token.strip():
            raise bad_request("token must be a non-empty string.", "BadRequest")
        self.issued[token] = Claims(app_id, frozenset(roles))
        return {"token": token, "appId": app_id, "roles": sorted(roles)}

    def claims(self, token: str) -> Claims | None:
        return self.issued.get(token)


def route_roles(method: str, pattern: str) -> tuple[frozenset[str], str] | None:
    """The application roles (any one suffices) a route needs and the area answering a refusal
    ("directory" or "outlook"); None for routes checked elsewhere (subscriptions) or not at all."""
    read = method == "GET"
    if pattern in ("users", "users/{user}"):
        return DIRECTORY_READ, "directory"
    if not pattern.startswith("users/{user}/"):
        return None
    rest = pattern.removeprefix("users/{user}/")
    if rest.startswith(("messages", "mailFolders")):
        return (MAIL_READ if read else MAIL_WRITE), "outlook"
    if rest.startswith(("contacts", "contactFolders")):
        return (CONTACTS_READ if read else CONTACTS_WRITE), "outlook"
    if rest.startswith(("events", "calendarView")):
        return (CALENDARS_READ if read else CALENDARS_WRITE), "outlook"
    if rest.startswith("todo"):
        if rest.endswith("/linkedResources") and method == "POST":
            return NOT_SUPPORTED, "outlook"
        return (TASKS_READ if read else TASKS_WRITE), "outlook"
    if rest.startswith("outlook/masterCategories"):
        return (SETTINGS_READ if read else SETTINGS_WRITE), "outlook"
    return None


def require(claims: Claims | None, accepted: frozenset[str], area: str, operation: str = "") -> None:
    """403 unless the token is unrestricted or carries one of ``accepted``."""
    if claims is None or claims.roles & accepted:
        return
    if area == "directory":
        raise GraphError(
            403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
        )
    if area == "subscription":
        raise GraphError(
            403,
            "ExtensionError",
            f"Operation: {operation}; Exception: [Status Code: Forbidden; Reason: Access is denied. "
            "Check credentials and try again.]",
        )
    raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
