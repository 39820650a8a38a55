"""Per-process fan-out: the channel layer carries one message per process, the hub fans it out here.

Every socket of this process that follows a group (`room.<id>`, `user.<id>`) is a local member
of the hub, and the hub's one channel is in the layer's group once. A broadcast therefore costs
the layer one message per server process instead of one per socket, and its text, encoded once
by the publisher, is handed to each local socket without a queue or a task per socket.

Publishers put the group's name in the message (`"group"`), since a layer does not say which
group a message came through. Members implement `deliver(message)`, which returns None when it
is done or a coroutine (an `async def deliver` returns one) to run for the rest. A delivery runs
at once, inside the hub's loop, as far as it can without waiting (a send normally only appends
to the socket's buffer); only a delivery that must wait (a reader too slow to empty its buffer)
continues in a task of its own, so one slow reader delays nobody else.
"""

import asyncio
import logging
import weakref

from channels.layers import get_channel_layer

from chatproject.logs import no_log_context

logger = logging.getLogger("chat.hub")
RETRY_SECONDS = 1.0


class Hub:
    def __init__(self) -> None:
        self._groups: dict[str, set] = {}
        self._lock = asyncio.Lock()
        self._layer = None
        self._channel: str | None = None
        self._reader: asyncio.Task | None = None

    async def subscribe(self, group: str, member) -> None:
        """Follow `group`; raises when the channel layer is unavailable (nothing is then followed)."""
        async with self._lock:
            await self._start()
            members = self._groups.get(group)
            if members is None:
                await self._layer.group_add(group, self._channel)
                members = self._groups[group] = set()
            members.add(member)

    async def unsubscribe(self, group: str, member) -> None:
        async with self._lock:
            members = self._groups.get(group)
            if members is None or member not in members:
                return
            members.discard(member)
            if members:
                return
            del self._groups[group]
            try:
                await self._layer.group_discard(group, self._channel)
            except Exception:
                logger.warning("channel layer unavailable while leaving %s", group, exc_info=True)

    def group_ids(self, prefix: str) -> list[int]:
        """The ids of the groups named `<prefix><id>` (rooms, users) that some socket of this process follows."""
        return [int(group.removeprefix(prefix)) for group in self._groups if group.startswith(prefix)]

    async def _start(self) -> None:
        if self._reader is not None:
            return
        self._layer = get_channel_layer()
        with no_log_context():  # the layer's own receiving task is started here too
            self._channel = await self._layer.new_channel(prefix="hub.")
            self._reader = asyncio.create_task(self._read(), name="chat-hub")

    async def _read(self) -> None:
        while True:
            try:
                message = await self._layer.receive(self._channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The layer is down (Redis restarting): sockets heal from the database by seq.
                logger.error("channel layer receive failed; retrying", exc_info=True)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            await self.dispatch(message)

    async def dispatch(self, message: dict) -> None:
        for member in list(self._groups.get(message.get("group"), ())):
            try:
                pending = member.deliver(message)
                if pending is not None:
                    run_eagerly(pending)
            except Exception:
                logger.error("delivery of %s to a socket failed", message.get("type"), exc_info=True)


_unfinished: set[asyncio.Task] = set()


def run_eagerly(coroutine) -> asyncio.Task | None:
    """Run `coroutine` now up to its first wait; a task finishes it from there (None: it finished).

    The common delivery never waits, so it costs no task and no turn of the event loop.
    """
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return None
    task = asyncio.get_running_loop().create_task(_finish(coroutine, awaited))
    _unfinished.add(task)
    task.add_done_callback(_unfinished.discard)
    return task


async def _finish(coroutine, awaited) -> None:
    """Drive a coroutine that stopped at `awaited` (what it yielded: a future, or None) to its end."""
    try:
        while True:
            if awaited is None:  # a bare yield: give the loop one turn
                await asyncio.sleep(0)
            else:
                # Wait for the future without consuming it: the coroutine reads its result (or
                # exception) itself when resumed.
                await asyncio.wait({awaited})
            try:
                awaited = coroutine.send(None)
            except StopIteration:
                return
    except asyncio.CancelledError:
        coroutine.close()
        raise
    except Exception:
        logger.error("delivery to a socket failed", exc_info=True)


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The hub of the running event loop (a server process has one loop; tests may have several)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub()
    return found
