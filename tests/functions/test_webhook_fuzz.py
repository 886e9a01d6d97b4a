"""A short derandomized run of the webhook fuzzer (bench/webhook_fuzz.py has the strategies and the
oracle; ``python -m bench.webhook_fuzz --payloads 10000`` is the long run): for each webhook, a few
hundred generated requests - Graph's documented shapes, forged and malformed variants, raw garbage,
validation tokens, replays - each answered within 3 s, never 5xx, with the expected status and
nothing of the request reflected; afterwards no job, dirty mark or lifecycle work for a subscription
only forged or malformed requests named."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.webhook_fuzz import WEBHOOKS, Case, Fuzzer, Target, audit, make_target, strategy_for
from shared.runtime import Runtime
from tests.fixtures.app import registered_function

EXAMPLES = 300


@pytest.mark.parametrize("webhook", WEBHOOKS)
async def test_fuzzed_requests_get_the_documented_answers_and_forged_ones_change_nothing(
    app_runtime: Runtime, webhook: str
) -> None:
    target: Target = await make_target(app_runtime)
    fuzzer = Fuzzer(webhook, registered_function(webhook), target)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy_for(webhook, target), replay=st.integers(0, 1000))
    def one(case: Case, replay: int) -> None:
        # Hypothesis drives a plain function (in a worker thread); the request runs on the test's loop.
        assert asyncio.run_coroutine_threadsafe(fuzzer.send(case, replay), loop).result() == []

    loop = asyncio.get_running_loop()
    await asyncio.to_thread(one)
    assert len(fuzzer.latencies_ms) >= EXAMPLES * 0.9
    checked = await audit(app_runtime, target)
    assert checked.problems == []
    # the positive control: genuine requests did queue their work
    assert {
        "notifications": checked.jobs,
        "lifecycle": checked.lifecycle_work,
        "crm_webhook": checked.crm_work,
    }[webhook]
    kinds = {kind for kind, _ in fuzzer.counts}
    expected = {"genuine", "forged", "malformed", "garbage"}
    assert expected | ({"unknown", "validation"} if webhook != "crm_webhook" else set()) <= kinds
