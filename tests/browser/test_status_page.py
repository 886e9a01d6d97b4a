"""The status page (/api/admin/ui) in headless Chromium against the sandbox: content, actions with
their confirmation, keyboard use, a phone's width, and nothing loaded from anywhere else.

Screenshots go to tests/artifacts/ (gitignored); ``CRMSYNC_UPDATE_SCREENSHOT=1`` also refreshes
docs/status-page.png, the README's picture."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from playwright.sync_api import Browser, Page, expect

from shared.domain.model import ItemKind
from shared.store.azure.service import open_store
from shared.store.records import ItemRef, MailboxState
from tests.e2e.conftest import E2E, item_path, wait_for

DOCS = Path(__file__).resolve().parents[2] / "docs"
T = TypeVar("T")
REMEDY = "grant the CRM user Write on contact, then wait for the hourly retry"


def off_loop(work: Callable[..., T], *args: Any) -> T:
    """Run ``work`` in another thread: Playwright's sync API keeps an event loop running in this one,
    and the CLI (asyncio.run) cannot start its own inside it."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work, *args).result()


def cli(e2e: E2E, *args: str) -> tuple[int, str]:
    return off_loop(e2e.cli, *args)


def _prepare(e2e: E2E, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Three onboarded mailboxes: one healthy, one degraded with a parked item, one tracking only."""
    healthy = e2e.new_mailbox(contacts=[{"givenName": "Page", "surname": f"Ok-{uuid.uuid4().hex[:6]}"}])
    troubled = e2e.new_mailbox()
    tracking = e2e.new_mailbox()
    reports = {"healthy": e2e.onboard(healthy), "troubled": e2e.onboard(troubled)}
    # A live edit, for the page's change-to-CRM figure.
    (contact,) = e2e.outlook("GET", healthy, "contacts")["value"]
    e2e.outlook("PATCH", healthy, item_path("contacts", contact["id"]), {"givenName": "Paged"})
    settings_file = tmp_path / "tracking-only.json"
    settings_file.write_text(json.dumps({"item_kinds": ["email"], "tracking": "from_crm_records"}))
    user = e2e.new_crm_user(tracking)
    code, out = e2e.cli(
        "mailbox",
        "add",
        tracking.id,
        "--crm-user",
        user.systemuserid,
        "--settings",
        str(settings_file),
        "--json",
    )
    assert code == 0, out
    reports["tracking"] = json.loads(out)

    async def degrade() -> None:
        store = await open_store(connection_string=e2e.sandbox.azurite.connection_string)
        try:
            mailbox_id = reports["troubled"]["mailbox_id"]
            await store.registry.set_state(mailbox_id, MailboxState.DEGRADED)
            await store.parked.park(
                mailbox_id,
                ItemRef(kind=ItemKind.CONTACT, outlook_id=f"AAMk-{uuid.uuid4().hex}"),
                reason_code="privilege_denied",
                message=REMEDY,
            )
        finally:
            await store.close()

    asyncio.run(degrade())
    return reports


def _open(browser: Browser, e2e: E2E, **context: Any) -> tuple[Page, list[str]]:
    page = browser.new_context(**context).new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{e2e.sandbox.functions_url}/api/admin/ui?code={e2e.sandbox.function_key}")
    return page, requested


def _section(page: Page, mailbox_id: str) -> Any:
    return page.locator(f'section[data-mailbox="{mailbox_id}"]')


def _drained(e2e: E2E, *mailboxes: str) -> bool:
    return all(cli(e2e, "status", m, "--json")[1].count('"dirty": true') == 0 for m in mailboxes)


def _audit_actions(e2e: E2E, mailbox_id: str) -> list[str]:
    code, out = cli(e2e, "audit", mailbox_id, "--json")
    assert code == 0, out
    return [record["action"] for record in json.loads(out)]


def test_the_status_page_shows_every_mailbox_and_its_actions_work(
    e2e: E2E, browser: Browser, artifacts: Path, tmp_path: Path
) -> None:
    reports = off_loop(_prepare, e2e, tmp_path)
    healthy, troubled, tracking = (reports[k]["mailbox_id"] for k in ("healthy", "troubled", "tracking"))
    wait_for(
        lambda: (
            all(cli(e2e, "status", m, "--json")[1].count('"dirty": true') == 0 for m in (healthy, tracking))
            or None
        ),
        "the onboarding echoes to drain",
    )
    wait_for(
        lambda: json.loads(cli(e2e, "status", healthy, "--json")[1])[0]["latency"]["to_crm"]["count"] or None,
        "the live edit's latency",
    )
    page, requested = _open(browser, e2e, viewport={"width": 1280, "height": 900})
    posted: list[dict[str, str]] = []
    page.on("request", lambda request: posted.append(request.headers) if request.method == "POST" else None)

    expect(page).to_have_title("crmsync status")
    page.screenshot(path=str(artifacts / "status-page.png"))  # the top of the page, for the README
    expect(_section(page, healthy).locator('[data-field="state"]')).to_have_text("active")
    expect(_section(page, troubled).locator('[data-field="state"]')).to_have_text("degraded")
    expect(_section(page, tracking).locator('[data-field="state"]')).to_have_text("tracking only")
    for report in reports.values():
        section = _section(page, report["mailbox_id"])
        expect(section.locator("h2")).to_have_text(report["upn"])
        for subscription in report["subscriptions"]:
            expect(section.get_by_text(subscription["subscription_id"])).to_be_visible()
    troubled_section = _section(page, troubled)
    expect(troubled_section.get_by_role("cell", name="privilege_denied")).to_be_visible()
    expect(troubled_section.get_by_role("cell", name=REMEDY)).to_be_visible()
    expect(_section(page, healthy).locator('[data-field="backlog"]')).to_have_text("0")
    expect(_section(page, healthy).locator('[data-field="latency-to_crm"]')).to_contain_text(
        "1 change(s), p50 <="
    )
    expect(_section(page, tracking).locator('[data-field="latency-to_crm"]')).to_have_text("no change")
    expect(_section(page, healthy).get_by_text("contact 1", exact=False)).to_be_visible()
    healthy_section = _section(page, healthy)
    healthy_section.locator("summary").click()
    expect(healthy_section.get_by_role("cell", name="registered")).to_be_visible()
    page.screenshot(path=str(artifacts / "status-page-full.png"), full_page=True)

    # Cancel changes nothing: the dialog closes, no resync is enqueued.
    healthy_section.get_by_role("button", name="Resync").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Resync")
    page.screenshot(path=str(artifacts / "status-page-confirm.png"))
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert "resync" not in _audit_actions(e2e, healthy)

    # Disable with the keyboard only: Tab to the button, Enter, Enter on the focused Confirm.
    disable = healthy_section.get_by_role("button", name="Disable")
    for _ in range(200):
        page.keyboard.press("Tab")
        if disable.evaluate("button => button === document.activeElement"):
            break
    else:
        raise AssertionError("the Disable button cannot be reached with Tab")
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-ok")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#notice")).to_contain_text("Disable done")
    expect(_section(page, healthy).locator('[data-field="state"]')).to_have_text("disabled")
    _, out = cli(e2e, "mailbox", "list", "--json")
    assert {m["mailbox_id"]: m["enabled"] for m in json.loads(out)}[healthy] is False

    # Enable and resync with the mouse, each confirmed.
    for action in ("Enable", "Resync"):
        _section(page, healthy).get_by_role("button", name=action).click()
        page.locator("#confirm-ok").click()
        # Enable is done at once; a resync is queued (202) and the page says so.
        expect(page.locator("#notice")).to_contain_text(
            f"{action} {'queued' if action == 'Resync' else 'done'}"
        )
    expect(_section(page, healthy).locator('[data-field="state"]')).to_have_text("active")
    assert _audit_actions(e2e, healthy)[:3] == ["resync", "enabled", "disabled"]
    # Each action says it is a script's call, not a navigation (X-Requested-With), for App Service
    # authentication in front of the app.
    assert len(posted) == 3
    assert all(headers.get("x-requested-with") == "XMLHttpRequest" for headers in posted)
    # An expired sign-in (App Service answers 401 before the function runs): the page says to
    # reload, and nothing was done.
    page.route("**/api/admin/mailboxes/**", lambda route: route.fulfill(status=401, body=""))
    _section(page, healthy).get_by_role("button", name="Disable").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#notice")).to_contain_text("sign-in expired; reload the page")
    page.unroute("**/api/admin/mailboxes/**")
    expect(_section(page, healthy).locator('[data-field="state"]')).to_have_text("active")
    assert _audit_actions(e2e, healthy)[0] == "resync"
    origin = e2e.sandbox.functions_url
    assert requested
    assert all(url.startswith(origin + "/") for url in requested), [u for u in requested if origin not in u]
    if os.environ.get("CRMSYNC_UPDATE_SCREENSHOT") == "1":  # refresh the README's picture on purpose only
        shutil.copyfile(artifacts / "status-page.png", DOCS / "status-page.png")


def test_the_status_page_reads_on_a_phone(e2e: E2E, browser: Browser, artifacts: Path) -> None:
    if not cli(e2e, "mailbox", "list", "--json")[1].strip("[] \n"):
        off_loop(e2e.onboard, e2e.new_mailbox())
    page, _ = _open(
        browser,
        e2e,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )

    expect(page.locator("section.mailbox").first).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone"
    button = page.locator("section.mailbox").first.get_by_role("button", name="Resync")
    box = button.bounding_box()
    assert box is not None
    assert box["height"] >= 44  # a finger-sized target
    assert box["width"] >= 300  # actions take the full width on a phone
    page.screenshot(path=str(artifacts / "status-page-phone.png"), full_page=True)
