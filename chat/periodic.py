"""Checks each server process runs every few seconds on its event loop, started by its first socket."""

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable

from chatproject.logs import no_log_context


def every(
    seconds: Callable[[], float], check: Callable[[], Awaitable], *, name: str, logger: logging.Logger, failed: str
) -> Callable[[], None]:
    """A `watch()` that starts `check` on the running event loop, once, to run every `seconds()` from
    then on. A check that fails (the database down) is logged as a warning and tried again next time."""
    tasks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()

    async def forever() -> None:
        while True:
            await asyncio.sleep(seconds())
            try:
                await check()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning(failed, exc_info=True)

    def watch() -> None:
        loop = asyncio.get_running_loop()
        task = tasks.get(loop)
        if task is None or task.done():
            with no_log_context():  # the socket that starts it is not what it logs about
                tasks[loop] = loop.create_task(forever(), name=name)

    return watch
