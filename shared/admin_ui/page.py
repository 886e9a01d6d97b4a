"""Render the status page: one HTML document, every value escaped, CSS and JS inline under a nonce."""

from __future__ import annotations

import datetime as dt
import html
import secrets
import urllib.parse
from collections.abc import Iterable, Sequence

from shared.admin_ui.assets import SCRIPT, STYLE
from shared.admin_ui.data import MailboxView, StatusPageData
from shared.sync.status import MailboxStatus

#: Nothing but this page's own inline CSS and JS, and calls back to the same origin.
CSP = (
    "default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'; "
    "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
STATES = ("active", "degraded", "disabled", "tracking only")


def _e(value: object) -> str:
    return html.escape("-" if value is None else str(value), quote=True)


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "never"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _time(value: dt.datetime | None) -> str:
    if value is None:
        return "never"
    return f'<time datetime="{_e(value.isoformat())}">{_e(_when(value))}</time>'


def _resource(path: str) -> str:
    """A resource as a short label ("contacts", "messages in inbox"), the full path in its title."""
    tail = path.split("/", 2)[-1] if path.startswith("users/") else path
    if tail.startswith("todo/"):
        label = "tasks"
    elif tail.startswith("mailFolders("):
        folder = tail[len("mailFolders(") :].split(")", 1)[0].strip("'")
        label = f"messages in {folder if len(folder) <= 24 else folder[:10] + '...' + folder[-6:]}"
    else:
        label = tail
    return f'<span title="{_e(path)}">{_e(label)}</span>'


def _table(caption: str, headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    """A table with a caption; cells are already-escaped HTML."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in headers)
    return (
        f'<div class="scroll"><table><caption class="muted">{_e(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _button(view: MailboxView, action: str, label: str, confirm: str, *, danger: bool = False) -> str:
    mailbox_id = urllib.parse.quote(view.status.mailbox_id, safe="")
    return (
        f'<button type="button" class="{"danger" if danger else ""}" data-action="{action}" '
        f'data-label="{_e(label)}" data-upn="{_e(view.status.upn)}" '
        f'data-url="/api/admin/mailboxes/{mailbox_id}/{action}" data-confirm="{_e(confirm)}" '
        f'aria-label="{_e(label)} {_e(view.status.upn)}">{_e(label)}</button>'
    )


def _actions(view: MailboxView, release_brake: bool) -> str:
    upn = view.status.upn
    buttons = [
        _button(
            view,
            "resync",
            "Resync",
            f"Resync {upn}? Every resource is read again in full and compared with the link map; "
            "nothing is duplicated, but it costs Graph requests.",
        )
    ]
    if view.status.enabled:
        buttons.append(
            _button(
                view,
                "disable",
                "Disable",
                f"Disable {upn}? Sync stops until it is enabled again; changes meanwhile are caught up then.",
                danger=True,
            )
        )
    else:
        buttons.append(
            _button(view, "enable", "Enable", f"Enable {upn}? A delta run of every resource catches up.")
        )
    if release_brake and view.braked:
        buttons.append(
            _button(
                view,
                "release-brake",
                "Release the brake",
                f"The mass-delete brake stopped a run of {upn}. Releasing it lets the deletes through: "
                "type how many deletes you confirm.",
                danger=True,
            )
        )
    return f'<div class="actions" role="group" aria-label="Actions">{"".join(buttons)}</div>'


def _latency(status: MailboxStatus, direction: str) -> str:
    summary = status.latency.get(direction)
    text = summary.describe() if summary is not None else "no change"
    return f'<span data-field="latency-{direction}">{_e(text)}</span>'


def _mailbox(view: MailboxView, index: int, release_brake: bool) -> str:
    s = view.status
    state_class = "state-" + view.display_state.replace(" ", "-")
    linked = ", ".join(f"{kind.value} {count}" for kind, count in s.links.items())
    facts = [
        ("Mailbox id", _e(s.mailbox_id)),
        ("CRM user", _e(s.crm_user_id)),
        ("Backlog", f'<span data-field="backlog">{s.backlog}</span> resource(s) waiting'),
        ("Last sync", _time(s.last_sync_at)),
        ("Linked", _e(linked)),
        ("Parked", f'<span data-field="parked">{len(s.parked)}</span>'),
        ("Change to CRM, last hour", _latency(s, "to_crm")),
        ("Change to Outlook, last hour", _latency(s, "to_outlook")),
    ]
    resources = _table(
        "Last sync per resource",
        ("Resource", "Last sync", "Waiting", "Baselined", "Last error"),
        (
            (
                _resource(r.resource),
                _time(r.last_sync_at),
                "yes" if r.dirty else "no",
                "yes" if r.baselined else "no",
                f'<span class="error">{_e(r.last_error)}</span>' if r.last_error else "-",
            )
            for r in s.resources
        ),
        "No subscribed resource.",
    )
    subscriptions = _table(
        "Graph subscriptions",
        ("Resource", "Expires", "Subscription"),
        (
            (
                _resource(sub.resource),
                ('<span class="error">expired</span> ' if sub.expired else "") + _time(sub.expiration),
                _e(sub.subscription_id),
            )
            for sub in s.subscriptions
        ),
        "No subscription: the mailbox gets no notifications.",
    )
    parked = _table(
        "Parked items: retrying cannot fix them",
        ("Kind", "Reason", "What to do", "Attempts", "Last failed"),
        (
            (_e(p.kind.value), _e(p.reason_code), _e(p.message), str(p.attempts), _time(p.last_failed_at))
            for p in s.parked
        ),
        "Nothing parked.",
    )
    audit = _table(
        f"The last {len(view.audit)} audit entries (ids hashed; crmsync audit reads them all)",
        ("When", "Actor", "Action", "Outcome", "Kind", "Reason"),
        (
            (
                _time(a.at),
                _e(a.actor),
                _e(a.action.value),
                _e(a.outcome.value),
                _e(a.item_kind.value if a.item_kind else None),
                _e(a.reason_code),
            )
            for a in view.audit
        ),
        "No audit entry yet.",
    )
    notes = [
        (reason, f"CRM -> Outlook stopped for {table}: {reason}")
        for table, reason in s.crm_to_outlook_stopped.items()
    ] + list(s.notes.items())
    notes_html = (
        '<ul class="notes">'
        + "".join(f'<li data-note="{_e(code)}">{_e(text)}</li>' for code, text in notes)
        + "</ul>"
        if notes
        else ""
    )
    heading = f"mailbox-{index}"
    return f"""
<section class="mailbox" aria-labelledby="{heading}" data-mailbox="{_e(s.mailbox_id)}">
  <div class="head"><h2 id="{heading}">{_e(s.upn)}</h2>
    <span class="badge {state_class}" data-field="state">{_e(view.display_state)}</span></div>
  <dl class="facts">{"".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts)}</dl>
  {notes_html}
  <h3>Resources</h3>{resources}
  <h3>Parked items</h3>{parked}
  <h3>Subscriptions</h3>{subscriptions}
  <details><summary>Audit: the last entries</summary>{audit}</details>
  {_actions(view, release_brake)}
</section>"""


def render_status_page(data: StatusPageData, *, actor: str, release_brake: bool = False) -> tuple[str, str]:
    """The page and the nonce its CSP must name (``CSP.format(nonce=...)``).

    ``release_brake``: the app serves ``POST admin/mailboxes/{mailbox}/release-brake``; the button
    shows for a mailbox whose run the brake refused."""
    nonce = secrets.token_urlsafe(16)
    summary = "".join(
        f'<li><strong data-count="{_e(state)}">{data.count(state)}</strong> {_e(state)}</li>'
        for state in STATES
    )
    mailboxes = "".join(_mailbox(view, i, release_brake) for i, view in enumerate(data.mailboxes))
    if not mailboxes:
        mailboxes = "<p>No mailbox is registered. Add one with <code>crmsync mailbox add</code>.</p>"
    return (
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>crmsync status</title><style nonce="{nonce}">{STYLE}</style></head>
<body><a class="skip" href="#mailboxes">Skip to the mailboxes</a>
<header><h1>crmsync status</h1>
<p class="muted">{len(data.mailboxes)} mailbox(es), as of {_time(data.generated_at)};
signed in as {_e(actor)}</p>
<ul class="summary" aria-label="Mailboxes by state">{summary}</ul>
<p id="notice" role="status" aria-live="polite"></p></header>
<main id="mailboxes" tabindex="-1">{mailboxes}</main>
<dialog id="confirm" aria-labelledby="confirm-title"><form method="dialog">
<h2 id="confirm-title">Please confirm</h2><p id="confirm-text"></p>
<div id="confirm-count-row" hidden><label for="confirm-count">Deletes you confirm</label>
<input id="confirm-count" type="number" min="1" inputmode="numeric"></div>
<div class="actions"><button value="cancel" formnovalidate>Cancel</button>
<button id="confirm-ok" class="primary" value="ok">Confirm</button></div></form></dialog>
<script nonce="{nonce}">{SCRIPT}</script></body></html>""",
        nonce,
    )
