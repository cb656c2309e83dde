"""What the aggregator actor and the node relay share: calls gathered into groups. Each call adds its item
and waits on its own answer; the first call starts a task that, at each call, lingers `linger_s` for others
to join and then runs `on_wake`, which takes the group (`take`) and answers every call in it (a count, or
the exception that made its sender resend). The aggregator writes the group as one segment; the relay
forwards it in one call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Gathering(Generic[T]):
    """Calls waiting to be handled together (see the module's docstring)."""

    def __init__(self, linger_s: float, on_wake: Callable[[], Awaitable[None]]):
        self._linger_s = linger_s
        self._on_wake = on_wake
        self._waiting: list[tuple[T, asyncio.Future[int]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> int:
        """Add `item` to the next group; its answer, once the group is handled."""
        if self._task is None or self._task.done():  # made here: they need the actor's running loop
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._forever())
        assert self._wake is not None
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        self._wake.set()
        return await done

    def take(self) -> list[tuple[T, asyncio.Future[int]]]:
        """The calls waiting now, each with the future its caller awaits; they wait no more here."""
        group, self._waiting = self._waiting, []
        return group

    @property
    def waiting(self) -> bool:
        return bool(self._waiting)

    async def _forever(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._linger_s)
            await self._on_wake()
