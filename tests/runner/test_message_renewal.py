"""A running message's renewal is never cut off half way: the renewal storage applied gave the
message a new pop receipt, and a delete with the old one fails (PopReceiptMismatch), so the message
came back and its function ran twice (seen under chaos once queue jobs waited for their turn)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import azure.functions as func
from azure.storage.queue.aio import QueueClient

from simulators.azurite import Azurite
from simulators.functions_host import FunctionsHost, QueueSettings


class SlowRenewalAnswers(QueueClient):
    """Azurite's queue, whose answers to visibility renewals arrive late (after storage applied them)."""

    applied: asyncio.Event

    async def update_message(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().update_message(*args, **kwargs)
        self.applied.set()
        await asyncio.sleep(0.5)
        return result


class Host(FunctionsHost):
    applied: asyncio.Event

    def _queue_client(self, name: str) -> QueueClient:
        client = SlowRenewalAnswers.from_connection_string(self.storage_connection_string, name)
        client.applied = self.applied
        return client


async def test_a_function_ending_while_its_message_is_renewed_runs_once(azurite: Azurite) -> None:
    queue_name = "q" + uuid.uuid4().hex[:12]
    runs: list[str] = []
    applied = asyncio.Event()
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name=queue_name, connection="AzureWebJobsStorage")
    async def worker(msg: func.QueueMessage) -> None:
        runs.append(msg.get_body().decode())
        await applied.wait()  # ends while the renewal's answer is on its way

    host = Host(
        app=app,
        storage_connection_string=azurite.connection_string,
        queue_settings=QueueSettings(
            batch_size=1, max_dequeue_count=5, visibility_timeout=1, max_polling_interval=0.2, message_lease=2
        ),
    )
    host.applied = applied
    async with QueueClient.from_connection_string(azurite.connection_string, queue_name) as queue:
        await queue.create_queue()
        await queue.send_message(base64.b64encode(b"job").decode())
        await host.start_background()
        try:
            await asyncio.wait_for(applied.wait(), timeout=10)
            await asyncio.sleep(3.5)  # past the 2 s lease: a message left behind is delivered again
        finally:
            await host.stop_background()
        assert runs == ["job"]
        assert await queue.peek_messages() == []
