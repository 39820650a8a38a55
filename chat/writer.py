"""Group commit for the sockets of one process: concurrent sends share one transaction.

A socket's send waits here while the batch before it is being written; everything that
arrived meanwhile is stored by the next call of services.message_create_many, in one
transaction and one commit. With one send in flight it is written at once (no added delay);
under load a commit carries as many messages as arrived during the previous one. A send is
answered only after its batch committed and its broadcast was attempted.

The writer's thread takes each next batch from the queue itself, and the broadcast of a batch
runs on the event loop while the thread stores the next one: the thread never waits for the
loop. Batches are broadcast in the order they committed.
"""

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

from django.db import connection

from chat import events, services

logger = logging.getLogger(__name__)

MAX_BATCH = 500
# One thread writes every batch of the process, one batch at a time, and keeps its database
# connection between batches: opening one (and setting SQLite's pragmas) took as long as the write.
_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-writer")


# After a batch found no database to connect to, the batches of this long are refused at once
# instead of each waiting for a connection (DATABASE_POOL_TIMEOUT): a socket's next frame is read
# only once its send is answered, so waiting per message stopped the socket reading at all, its
# pings included, and clients gave up on it. A batch is still stored meanwhile when a connection can
# be had within PROBE_SECONDS: the database came back and the pool has connected again.
DATABASE_PAUSE_SECONDS = 5.0
PROBE_SECONDS = 0.05


class DatabaseUnavailable(Exception):
    """No connection to the database could be had: the batch was not stored."""


class _Outage:
    """State of the writer's thread only; an incident is logged when it begins and when it ends."""

    paused_until = 0.0
    failing = False
    refused = 0


def _connect() -> None:
    """The connection the writer keeps, checked, or a new one; DatabaseUnavailable if none can be had."""
    if connection.connection is not None and not connection.is_usable():
        connection.close()  # e.g. PostgreSQL restarted since the last batch
    try:
        connection.ensure_connection()
    except Exception as exc:
        connection.close()
        raise DatabaseUnavailable(str(exc) or type(exc).__name__) from exc


def _write(requests: list[services.MessageRequest]) -> list:
    """Run in the writer's thread: one batch on the connection it keeps, or a fresh one if that broke."""
    _connect()
    try:
        return services.message_create_many(requests, publish=False)
    except Exception:
        connection.close()  # whatever failed, the next batch starts on a new connection
        raise


def _connection_at_once() -> bool:
    """Whether a connection can be had without waiting: the one kept, SQLite's (opening one does not
    wait), or one the pool has (asking starts a new connection attempt if it has none)."""
    pool = getattr(connection, "pool", None)
    if connection.connection is not None or pool is None:
        return True
    try:
        pool.open()  # as Django does before its first connection; no-op once open
        pooled = pool.getconn(timeout=PROBE_SECONDS)
    except Exception:
        return False
    pool.putconn(pooled)
    return True


def _write_unless_paused(requests: list[services.MessageRequest]) -> list:
    """_write, or every request refused at once while a database outage is paused on; never raises."""
    outage = _Outage
    if time.monotonic() < outage.paused_until and not _connection_at_once():
        outage.refused += len(requests)
        return [DatabaseUnavailable("the database was unavailable moments ago")] * len(requests)
    try:
        outcomes = _write(requests)
    except DatabaseUnavailable as exc:
        outage.paused_until = time.monotonic() + DATABASE_PAUSE_SECONDS
        outage.refused += len(requests)
        if not outage.failing:
            outage.failing = True
            logger.error(
                "database unavailable: sends are refused for %g s at a time until it answers",
                DATABASE_PAUSE_SECONDS,
                exc_info=True,
            )
        else:
            logger.warning("database still unavailable (%s)", exc)
        return [exc] * len(requests)
    except Exception as exc:  # a statement failed: this batch only
        return [exc] * len(requests)
    if outage.failing:
        logger.warning("database available again; %d sends refused meanwhile", outage.refused)
        outage.failing, outage.refused = False, 0
    return outcomes


class MessageWriter:
    """The writer of one event loop. Sends queue here; the writer's thread takes whatever has
    queued, stores it, hands the outcomes to the loop and goes on with what queued meanwhile,
    without waiting for the loop (a busy loop left the thread idle for as long as a write took)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[tuple[services.MessageRequest, asyncio.Future]] = []
        self._running = False  # the thread is draining this writer's queue
        self._broadcast: asyncio.Task | None = None  # the last batch's broadcast

    async def create(self, *, room, user, content, client_id=None) -> services.MessageResult:
        """Store one message as services.message_create does (same result, same exceptions)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        request = services.MessageRequest(room=room, user=user, content=content, client_id=client_id)
        with self._lock:
            self._waiting.append((request, future))
            start, self._running = not self._running, True
        if start:
            _thread.submit(self._drain, loop)
        return await future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the writer's thread: store batches until the queue is empty."""
        try:
            while True:
                with self._lock:
                    if not self._waiting:
                        self._running = False
                        return
                    batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                outcomes = _write_unless_paused([request for request, _ in batch])
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for these answers
                    loop.call_soon_threadsafe(self._written, batch, outcomes)
        except BaseException:  # the thread is going away: the next send starts another drain
            with self._lock:
                self._running = False
            raise

    def _written(self, batch: list, outcomes: list) -> None:
        """On the loop: broadcast the batch after the previous batch's broadcast, then answer its sends."""
        self._broadcast = asyncio.create_task(self._answer(batch, outcomes, after=self._broadcast))

    @staticmethod
    async def _answer(
        batch: list[tuple[services.MessageRequest, asyncio.Future]], outcomes: list, after: asyncio.Task | None
    ) -> None:
        """Broadcast what the batch created, then answer each send, whatever happened to the broadcast."""
        try:
            if after is not None:
                await asyncio.wait([after])  # one batch's messages reach the layer before the next one's
            created = [o for o in outcomes if isinstance(o, services.MessageResult) and o.created]
            if created:
                try:
                    reached = await events.apublish_messages([result.message for result in created])
                except Exception:  # stored all the same: the senders are answered, the others heal from the database
                    logger.exception("broadcast of %d stored messages failed", len(created))
                    reached = [False] * len(created)
                for result, published in zip(created, reached, strict=True):
                    result.published = published
        finally:
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its socket closed meanwhile
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


_writers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MessageWriter]" = weakref.WeakKeyDictionary()


def writer() -> MessageWriter:
    """The writer of the running event loop."""
    loop = asyncio.get_running_loop()
    found = _writers.get(loop)
    if found is None:
        found = _writers[loop] = MessageWriter()
    return found
