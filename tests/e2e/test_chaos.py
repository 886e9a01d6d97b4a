"""A short seeded chaos run (bench/chaos.py) in the test suite: random changes on both sides of three
mailboxes under injected faults (Graph and Dataverse errors, dropped, duplicated, reordered and
replayed notifications, expired tokens, a removed subscription, the runner killed, storage frozen),
then quiet: nothing lost, nothing duplicated, nothing diverged (README "What crmsync promises under
faults"). Its own sandbox, so its faults and runner restarts touch no other test's mailboxes."""

from __future__ import annotations

import pytest

from bench.chaos import run

# Seed 2's first 60 operations carry 24 faults of 12 kinds (a fault every third operation).
SEED = 2
OPS = 60


# About 40 s alone; the suite's 2 cores under xdist can double that, and the quiet phase waits by
# condition (both sides matching, nothing waiting) for up to 120 s before it reports what differs.
@pytest.mark.timeout(240)
def test_a_short_chaos_run_loses_duplicates_and_diverges_nothing() -> None:
    report = run(SEED, OPS, fault_every=3, quiet_seconds=120)
    assert report.operations == OPS
    assert len(report.faults) >= 12, report.faults  # the seed's sequence: same faults every run
    assert report.lost == []
    assert report.duplicated == []
    assert report.diverged == []
