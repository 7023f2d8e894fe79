"""W1 echo for the Temporal peer: the same workflow and activity, in the Temporal SDK.

Kept in its own small module because the SDK's workflow sandbox re-imports the module that
defines a workflow: it must import nothing but temporalio and the standard library.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

ACTIVITY_TIMEOUT = timedelta(seconds=60)  # as load.scenarios.base.ACTIVITY_TIMEOUT


@activity.defn(name="w1_echo")
async def w1_echo(message: str) -> str:
    return message


@workflow.defn(name="W1Echo")
class W1Echo:
    @workflow.run
    async def run(self, message: str) -> str:
        echoed: str = await workflow.execute_activity(
            w1_echo, message, schedule_to_close_timeout=ACTIVITY_TIMEOUT
        )
        return echoed
