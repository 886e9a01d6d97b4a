"""The status page's CSS and JavaScript, inlined into the page (no file, no CDN, no font)."""

from __future__ import annotations

STYLE = """
:root { color-scheme: light dark; --fg: #1b1b1b; --bg: #f6f7f9; --card: #fff; --line: #d5d9e0;
  --muted: #59616d; --ok: #0b6a0b; --warn: #8a5300; --bad: #a4262c; --off: #5c5c5c; --accent: #0f5fc0; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #eceef2; --bg: #16181c; --card: #1f2227; --line: #3a3f47; --muted: #aab1bc;
    --ok: #6ccb6c; --warn: #f0b45a; --bad: #ff8a8f; --off: #b5b5b5; --accent: #7db4ff; } }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
a { color: var(--accent); }
.skip { position: absolute; left: -999px; }
.skip:focus { left: 1rem; top: 1rem; background: var(--card); padding: .5rem; z-index: 2; }
header, main { max-width: 72rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
h2 { font-size: 1.15rem; margin: 0; overflow-wrap: anywhere; }
h3 { font-size: 1rem; margin: 1rem 0 .35rem; }
.muted { color: var(--muted); font-size: .9rem; }
.summary { display: flex; flex-wrap: wrap; gap: .5rem; margin: .75rem 0 0; padding: 0; list-style: none; }
.summary li { background: var(--card); border: 1px solid var(--line); border-radius: .5rem;
  padding: .35rem .75rem; }
.mailbox { background: var(--card); border: 1px solid var(--line); border-radius: .75rem;
  padding: 1rem; margin: 1rem 0; }
.mailbox > .head { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem 1rem; }
.badge { display: inline-block; border-radius: 1rem; padding: .1rem .65rem; font-weight: 600;
  font-size: .85rem; border: 2px solid currentColor; }
.state-active { color: var(--ok); } .state-degraded { color: var(--bad); }
.state-disabled { color: var(--off); } .state-tracking-only { color: var(--accent); }
dl.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(11rem, 1fr)); gap: .5rem 1rem;
  margin: .75rem 0; }
dl.facts div { min-width: 0; } dt { font-size: .8rem; color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
ul.notes { margin: .5rem 0; padding: .5rem .75rem .5rem 1.75rem; border-left: 4px solid var(--accent);
  background: var(--bg); }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
time, th { white-space: nowrap; }
td { overflow-wrap: anywhere; }
.error { color: var(--bad); font-weight: 600; }
.actions { display: flex; flex-wrap: wrap; gap: .5rem; margin-top: .75rem; }
button { font: inherit; padding: .5rem 1rem; min-height: 2.75rem; border-radius: .5rem; cursor: pointer;
  border: 1px solid var(--line); background: var(--bg); color: var(--fg); }
button.danger { border-color: var(--bad); color: var(--bad); }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
dialog { border: 1px solid var(--line); border-radius: .75rem; background: var(--card); color: var(--fg);
  max-width: min(32rem, calc(100vw - 2rem)); }
dialog::backdrop { background: rgb(0 0 0 / 45%); }
dialog label { display: block; margin: .75rem 0 .25rem; }
dialog input { font: inherit; padding: .4rem; width: 100%; }
#notice { margin: .75rem 0 0; padding: .5rem .75rem; border-radius: .5rem; background: var(--card);
  border: 1px solid var(--line); }
#notice:empty { display: none; }
details summary { cursor: pointer; padding: .25rem 0; }
@media (max-width: 40rem) {
  header, main { padding: .75rem; }
  .mailbox { padding: .75rem; }
  .actions button { flex: 1 1 100%; }
}
"""

SCRIPT = """
(() => {
  const key = new URLSearchParams(location.search).get("code");
  const dialog = document.getElementById("confirm");
  const text = document.getElementById("confirm-text");
  const countRow = document.getElementById("confirm-count-row");
  const count = document.getElementById("confirm-count");
  const notice = document.getElementById("notice");
  let pending = null;
  const saved = sessionStorage.getItem("crmsync-notice");
  if (saved) { notice.textContent = saved; sessionStorage.removeItem("crmsync-notice"); }
  document.querySelectorAll("button[data-action]").forEach((button) => {
    button.addEventListener("click", () => {
      pending = button;
      text.textContent = button.dataset.confirm;
      const needsCount = button.dataset.action === "release-brake";
      countRow.hidden = !needsCount;
      count.required = needsCount;
      count.value = "";
      dialog.returnValue = "";
      dialog.showModal();
      (needsCount ? count : document.getElementById("confirm-ok")).focus();
    });
  });
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "ok" || !pending) { if (pending) pending.focus(); return; }
    const button = pending; pending = null;
    // X-Requested-With marks this as a script's call, not a page to navigate; with the sign-in
    // expired, App Service answers 401 or a redirect to Entra (which fetch cannot follow
    // across origins): either way the page says to reload, which signs in again.
    const headers = { "Content-Type": "application/json", "X-Requested-With": "XMLHttpRequest" };
    if (key) headers["x-functions-key"] = key;
    const body = button.dataset.action === "release-brake"
      ? JSON.stringify({ confirm_deletes: Number(count.value) }) : "{}";
    notice.textContent = "Working...";
    try {
      const response = await fetch(button.dataset.url, { method: "POST", headers, body, redirect: "manual" });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        notice.textContent = response.status === 401 || response.type === "opaqueredirect"
          ? button.dataset.label + " failed: the sign-in expired; reload the page to sign in again"
          : button.dataset.label + " failed: " + (answer.error || response.status);
        button.focus();
        return;
      }
      // 202: the work is queued (resync, releasing the brake), not done yet.
      const done = button.dataset.label + (response.status === 202
        ? " queued for " + button.dataset.upn + ": a worker runs it; reload to follow it."
        : " done for " + button.dataset.upn + ".");
      sessionStorage.setItem("crmsync-notice", done);
      location.reload();
    } catch (error) {
      notice.textContent = button.dataset.label + " failed: the function app did not answer.";
      button.focus();
    }
  });
})();
"""
