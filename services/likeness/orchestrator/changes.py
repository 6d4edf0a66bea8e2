"""In-process wake-ups on job store writes.

A Watch stream served by the replica that runs the job hears the job's new events as they are
written instead of at its next poll, and the job loop hears a Submit (or a job finishing and
freeing a slot) at once. Polling the job store stays the fallback for what other replicas write,
so the poll interval bounds only cross-replica latency and can be long: every poll is a query that
costs the orchestrator CPU while a job runs.
"""

from __future__ import annotations

import asyncio

QUEUE = "queue"  # key of "a job was queued or a slot was freed"


class Changes:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}

    def listen(self, key: str) -> asyncio.Event:
        """Call in the event loop BEFORE reading the state `key` guards, then `wait` on the result:
        a change written between the read and the wait still wakes the waiter."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # events belong to one loop (a test may run several in turn)
            self._loop, self._events = loop, {}
        return self._events.setdefault(key, asyncio.Event())

    def notify(self, key: str) -> None:
        """Wakes the listeners of `key`; safe from any thread, a no-op when nobody listens."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._wake, key)
        except RuntimeError:  # the loop closed in between
            pass

    def _wake(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()


async def wait(event: asyncio.Event, timeout: float) -> bool:
    """True when `event` was set within `timeout` seconds, False when the time ran out."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except TimeoutError:
        return False
