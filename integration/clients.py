"""Clients of the nodes: WebSocket sockets that keep every event they receive, and REST from asyncio.

A `Socket` reads in a task of its own, so a test can send, post over REST and wait on several
sockets at once, then compare each socket's whole list of events: a message delivered twice, a
join announced twice or an event out of order shows up there.
"""

import asyncio
import contextlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tests.conftest import ChatUser, HttpResponse, ServerProcess

EVENT_TIMEOUT_SECONDS = 10.0


class Socket:
    """One WebSocket client. A reader task keeps every event, in arrival order, and the close code."""

    def __init__(self, ws: ClientConnection, label: str) -> None:
        self.ws = ws
        self.label = label
        self.events: list[dict] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read(), name=f"reader {label}")

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                async with self._changed:
                    self.events.append(json.loads(frame))
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code if self.ws.close_code is not None else 1006
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    # --- reading ------------------------------------------------------------------------

    def _find(self, predicate: Callable[[dict], bool], start: int) -> int | None:
        for index in range(start, len(self.events)):
            if predicate(self.events[index]):
                return index
        return None

    async def poll_for(self, predicate: Callable[[dict], bool], *, timeout: float, start: int = 0) -> dict | None:
        """The first event from index `start` on that matches; None after `timeout` or once closed."""
        found: list[int] = []

        def ready() -> bool:
            index = self._find(predicate, start)
            if index is not None:
                found.append(index)
                return True
            return self.closed.is_set()

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(ready), timeout)
        return self.events[found[0]] if found else None

    async def wait_for(
        self, predicate: Callable[[dict], bool], *, what: str, timeout: float = EVENT_TIMEOUT_SECONDS, start: int = 0
    ) -> dict:
        """Like poll_for, but fail the test when nothing matches."""
        event = await self.poll_for(predicate, timeout=timeout, start=start)
        if event is None:
            state = f"closed with {self.close_code}" if self.closed.is_set() else "still open"
            pytest.fail(
                f"{self.label}: no {what} within {timeout}s ({state}); events since #{start}: {self.events[start:]}"
            )
        return event

    async def wait_for_seq(self, seq: int, timeout: float = EVENT_TIMEOUT_SECONDS) -> dict:
        return await self.wait_for(
            lambda e: e["type"] == "message" and e["seq"] >= seq, what=f"message with seq >= {seq}", timeout=timeout
        )

    async def wait_for_client_id(
        self, client_id: str, *, start: int = 0, timeout: float = EVENT_TIMEOUT_SECONDS
    ) -> dict:
        """The answer to a send: its message event (the acknowledgement) or an error event."""
        return await self.wait_for(
            lambda e: e.get("type") in ("message", "error") and e.get("client_id") == client_id,
            what=f"message or error event for client_id {client_id!r}",
            timeout=timeout,
            start=start,
        )

    async def wait_closed(self, timeout: float = EVENT_TIMEOUT_SECONDS) -> int:
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except TimeoutError:
            pytest.fail(f"{self.label}: not closed within {timeout}s; events: {self.events}")
        return self.close_code

    def messages(self) -> list[dict]:
        return [e for e in self.events if e["type"] == "message"]

    # --- writing ------------------------------------------------------------------------

    async def send_message(self, content: str, client_id: str | None = None) -> None:
        frame = {"type": "message", "content": content}
        if client_id is not None:
            frame["client_id"] = client_id
        await self.ws.send(json.dumps(frame))

    async def close(self) -> None:
        with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
            await asyncio.wait_for(self.ws.close(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)


def ws_url(node: ServerProcess, room: str, token: str, since: int | None = None) -> str:
    query = {"token": token}
    if since is not None:
        query["since"] = since
    return f"{node.ws_url}/ws/{room}?{urlencode(query)}"


async def open_socket(node: ServerProcess, room: str, user: ChatUser, *, since: int | None = None) -> Socket:
    """Connect as `user`; the socket is ready once the server's first event (presence) has come."""
    ws = await connect(ws_url(node, room, user.access_token, since), proxy=None, open_timeout=10, close_timeout=3)
    socket = Socket(ws, label=f"{user.username}@{node.port}/{room}")
    await socket.wait_for(lambda e: True, what="first event (presence)")
    return socket


async def connect_outcome(node: ServerProcess, room: str, user: ChatUser, *, timeout: float) -> tuple[str, object]:
    """What a new connection gets: ("event", first event), ("closed", code), ("http", status), ("error", ...)."""
    try:
        ws = await asyncio.wait_for(
            connect(ws_url(node, room, user.access_token), proxy=None, open_timeout=timeout, close_timeout=3), timeout
        )
    except InvalidStatus as refused:
        return "http", refused.response.status_code
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        return "error", repr(exc)
    socket = Socket(ws, label=f"{user.username}@{node.port}/{room}")
    try:
        event = await socket.poll_for(lambda e: True, timeout=timeout)
        if event is not None:
            return "event", event
        if socket.closed.is_set():
            return "closed", socket.close_code
        return "silent", f"no event and no close within {timeout}s"
    finally:
        await socket.close()


@contextlib.asynccontextmanager
async def sockets_closed_at_exit():
    """Collect sockets; close them all when the block ends, whatever happened."""
    opened: list[Socket] = []
    try:
        yield opened
    finally:
        await asyncio.gather(*(s.close() for s in opened), return_exceptions=True)


def presence_users(*users: ChatUser) -> list[dict]:
    return sorted((u.payload for u in users), key=lambda u: u["username"].lower())


def member_events(socket: Socket, kind: str, user: ChatUser, start: int = 0) -> list[dict]:
    return [e for e in socket.events[start:] if e["type"] == kind and e["user"] == user.payload]


def as_event(message: dict) -> dict:
    return {"type": "message", **message}


def seqs(events: list[dict]) -> list[int]:
    return [e["seq"] for e in events if e["type"] == "message"]


# --- REST from asyncio ----------------------------------------------------------------------


# Enough threads for every concurrent REST writer of a test (the default executor has cpu + 4).
REST_THREADS = ThreadPoolExecutor(max_workers=48, thread_name_prefix="rest")


async def in_thread(function, *args, **kwargs):
    """Run a blocking HTTP call without blocking the event loop that reads the sockets."""
    return await asyncio.get_running_loop().run_in_executor(REST_THREADS, lambda: function(*args, **kwargs))


def json_or_none(response: HttpResponse):
    """The body when it is JSON, else None (an HTML error page, say)."""
    if not response.content_type.startswith("application/json"):
        return None
    try:
        return response.json()
    except ValueError:
        return None


def is_json_error(response: HttpResponse) -> bool:
    """An error the way the API promises them: a JSON object with a `detail` string."""
    body = json_or_none(response)
    return isinstance(body, dict) and isinstance(body.get("detail"), str)
