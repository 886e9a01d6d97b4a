"""Timers: subscription renewal, the periodic delta sweep, parked-item retries and CRM change tracking.
Schedules come from app settings. The engine is imported by the first run, not when the app is
indexed (shared.runtime)."""

from __future__ import annotations

import datetime as dt
import logging

import azure.functions as func

from shared.runtime import get_runtime

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(arg_name="timer", schedule="%CRMSYNC_RENEW_SCHEDULE%", run_on_startup=False)
async def renew_subscriptions(timer: func.TimerRequest) -> None:
    """Renew subscriptions well before they expire; recreate the ones Graph lost."""
    from shared.sync.dispatch import renewal_horizon

    maintenance = await get_runtime().maintenance()
    report = await maintenance.renew_subscriptions(before=renewal_horizon(dt.datetime.now(dt.UTC)))
    log.info("renewed %d subscriptions, recreated %d", len(report.renewed), len(report.recreated))
    if report.failed:
        log.error("subscription renewal failed for %d subscription(s); retried next run", len(report.failed))


@bp.timer_trigger(arg_name="timer", schedule="%CRMSYNC_SWEEP_SCHEDULE%", run_on_startup=False)
async def delta_sweep(timer: func.TimerRequest) -> None:
    """Safety net: stale dirty marks get a job again; each mailbox is checked hourly for missed changes."""
    from shared.outlook.batch import GraphBatch
    from shared.outlook.probe import DeltaProbe
    from shared.sync.dispatch import sweep

    runtime = get_runtime()
    probe = DeltaProbe(GraphBatch(await runtime.graph()))
    enqueued = await sweep(await runtime.store(), await runtime.jobs(), probe=probe)
    log.info("sweep enqueued %d jobs", enqueued)


@bp.timer_trigger(arg_name="timer", schedule="%CRMSYNC_PARKED_RETRY_SCHEDULE%", run_on_startup=False)
async def retry_parked(timer: func.TimerRequest) -> None:
    """Retry parked items (e.g. after an administrator granted a missing privilege)."""
    maintenance = await get_runtime().maintenance()
    reports = await maintenance.retry_parked()
    log.info("retried parked items in %d runs, %d still parked", len(reports), sum(r.parked for r in reports))


@bp.timer_trigger(arg_name="timer", schedule="%CRMSYNC_CRM_CHANGES_SCHEDULE%", run_on_startup=False)
async def crm_changes(timer: func.TimerRequest) -> None:
    """Read Dataverse change tracking for contacts, appointments and tasks; queue routing work."""
    results = await (await get_runtime().change_feed()).poll()
    log.info("CRM changes: %s", ", ".join(f"{r.table} {r.changed}+{r.deleted}" for r in results))
