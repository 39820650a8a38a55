"""What one room socket is sent of its room's events: every message once, in seq order.

Events reach a socket from the process's hub (`deliver`), from the replay of what it missed
(`start_live`), from the database when a hole in seq is filled (`_fill_holes`), and as the
acknowledgement of its own repeated send (`acknowledge`). They queue in one backlog and leave in
that order: a message through the socket's SeqOrderer, as one direct write of prebuilt frames when
the socket takes them (chat.frames), through the ASGI send when it must wait.
"""

import asyncio
import logging
from collections import deque

from channels.db import database_sync_to_async
from django.conf import settings

from chat import selectors
from chat.events import encode, message_event, replay_truncated_event
from chat.frames import event_frame, event_frames
from chat.ordering import SeqOrderer

logger = logging.getLogger("chat.ws")

GAP_WAIT_SECONDS = 0.5


class RoomDelivery:
    """The delivery half of chat.consumers.RoomConsumer, which provides `send`, `room`, `user`,
    `closed`, `tasks`, `_live_tasks` and `deactivated` (close the socket: its user was banned)."""

    orderer: SeqOrderer | None = None  # set once the replay is queued: live delivery starts
    write_frame = None  # chat.frames.direct_writer: room events skip the ASGI send path

    def start_delivery(self, write_frame) -> None:
        # What the hub delivered and the socket has not sent yet: (kind, seq or upto, item or found),
        # where an item is (text, its frame or None).
        self.backlog = deque()
        self.emitting = False
        self.write_frame = write_frame

    async def acknowledge(self, result) -> None:
        """This socket's own send, stored (a services.MessageResult)."""
        if not result.created:  # a repeated client_id: acknowledge to this socket only
            item = (encode(message_event(result.message)), None)
            if result.message.seq < self.orderer.next_seq:  # delivered before: a second copy, behind the queue
                await self._queue("raw", None, item)
            else:  # not delivered yet: in its place in seq order, never ahead of a lower seq
                await self._queue("message", result.message.seq, item)
        elif not result.published:
            # Stored, but the broadcast did not leave: the sender still gets its acknowledgement
            # (the others fill it from the database at the next message or the next tail check).
            await self._queue("message", result.message.seq, (encode(message_event(result.message)), None))

    def deliver(self, event: dict):
        """An event of the room or user group, from this process's hub.

        Runs without a coroutine while every frame can be written at once (the common case);
        returns a coroutine for the hub to finish when something must be awaited.
        """
        if self.closed:
            return None
        kind = event["type"]
        if kind == "chat.message":  # a committed message: sent in seq order
            self.backlog.append(("message", event["seq"], self._item(event)))
        elif kind == "chat.messages":  # several of one commit, in seq order
            messages = event["messages"]
            frames = event_frames(event) if self.write_frame is not None else [None] * len(messages)
            for (seq, text), frame in zip(messages, frames, strict=True):
                self.backlog.append(("message", seq, (text, frame)))
        elif kind == "chat.typing":  # to everyone but the typist
            if event["user_id"] == self.user.pk:
                return None
            self.backlog.append(("raw", None, self._item(event)))
        elif kind == "user.deactivated":
            return self.deactivated()
        elif kind == "room.tail":  # the room's newest seq (chat.tails): a lost last message is a hole
            # Only for a socket with nothing queued: what waits in its backlog has not reached the
            # orderer yet, and a slow reader's queue would look like a hole to fetch again and again.
            if self.orderer is not None and not self.backlog and not self.emitting:
                self.orderer.expect(event["last_seq"])
                self._watch_holes()
            return None
        elif kind == "chat.deletions":  # message_deleted events of one room
            texts = event["texts"]
            frames = event_frames(event) if self.write_frame is not None else [None] * len(texts)
            for text, frame in zip(texts, frames, strict=True):
                self.backlog.append(("raw", None, (text, frame)))
        elif "text" in event:  # chat.member (join, leave)
            self.backlog.append(("raw", None, self._item(event)))
        else:
            return None
        return self._flush()

    def _item(self, event: dict) -> tuple[str, bytes | None]:
        """The event's text, and its frame (one per process) when this socket can take frames."""
        return event["text"], event_frame(event) if self.write_frame is not None else None

    async def _queue(self, kind: str, seq: int | None, item) -> None:
        self.backlog.append((kind, seq, item))
        pending = self._flush()
        if pending is not None:
            await pending

    def _ordered(self, kind: str, seq: int | None, item) -> list | tuple:
        """What a backlog entry releases, in order: a message may wait for (or fill) a hole in seq."""
        if kind == "message":
            return self.orderer.offer(seq, item)
        if kind == "fill":
            return self.orderer.fill(seq, item)
        return (item,)

    def _flush(self):
        """Write what the backlog holds as direct frames; a coroutine for the rest, or None.

        Everything the backlog releases goes out in one write (the frames of a commit's messages
        together), as far as it has frames and the socket takes them; the rest goes through `_emit`.
        The writer checks that the transport is not paused before the write, so a slow reader's
        buffer can pass its high-water mark by one write: at most one commit's messages to the room.
        None also while the socket is still joining (no orderer yet: events wait in the backlog)
        and while a send is under way (`emitting`: new events join the backlog, never overtake it).
        """
        if self.orderer is None or self.emitting:
            return None
        released = []
        try:
            while self.backlog and not self.closed:
                released.extend(self._ordered(*self.backlog.popleft()))
            written = self._write_frames(released)
        except Exception:
            self._gone()
            return None
        if written < len(released):
            # Released by the orderer already: what is left goes on unordered ("raw").
            self.backlog.extendleft(("raw", None, rest) for rest in reversed(released[written:]))
            return self._emit()
        self._watch_holes()
        return None

    def _write_frames(self, items: list) -> int:
        """Write the leading items that have frames in one direct write; how many were written."""
        count = 0
        while count < len(items) and items[count][1] is not None:
            count += 1
        if count == 0:
            return 0
        data = items[0][1] if count == 1 else b"".join(frame for _text, frame in items[:count])
        return count if self.write_frame(data) else 0

    async def _emit(self) -> None:
        """The backlog through the ASGI send, in order; the one way room events leave that can wait."""
        if self.orderer is None or self.emitting:
            return
        self.emitting = True
        try:
            while self.backlog and not self.closed:
                for text, frame in self._ordered(*self.backlog.popleft()):
                    if frame is None or not self.write_frame(frame):
                        await self.send(text_data=text)
        except Exception:
            self._gone()
        finally:
            self.emitting = False
        self._watch_holes()

    def _gone(self) -> None:
        """A write or send failed: the client is gone (uvicorn: ClientDisconnected, daphne: Disconnected)."""
        logger.debug("write to a closed socket dropped", exc_info=True)
        self.closed = True
        self.backlog.clear()

    def _watch_holes(self) -> None:
        """A message waiting behind a hole in seq: fetch the hole from the database after a while."""
        if self.closed or self.orderer.hole() is None:
            return
        if not any(t.get_name() == "gap" for t in self._live_tasks()):
            self.tasks.append(asyncio.create_task(self._fill_holes(), name="gap"))

    async def read_replay(self, since: int | None) -> tuple[list, int]:
        """The messages after `since` to replay, and the room's last seq at the same moment."""
        if since is None:
            return [], await database_sync_to_async(selectors.room_last_seq)(room_id=self.room.pk)
        # One more than is replayed: whether anything is left out (the newest seqs may be deleted ones).
        return await database_sync_to_async(selectors.message_replay)(
            room_id=self.room.pk, after=since, limit=settings.CHAT_REPLAY_LIMIT + 1
        )

    async def start_live(self, messages: list, last_seq: int) -> None:
        # Live delivery resumes after the room's newest message; a client more than
        # CHAT_REPLAY_LIMIT behind is told so (replay_truncated, after the replay) and pages the
        # rest with GET /messages?after=. A since beyond the newest message (a client of a reset
        # database) still gets every new message. What the hub delivered meanwhile waits in the
        # backlog, behind the replay; the orderer drops what the replay already holds.
        left_out = len(messages) > settings.CHAT_REPLAY_LIMIT
        messages = messages[: settings.CHAT_REPLAY_LIMIT]
        replay = [encode(message_event(m)) for m in messages]
        if left_out:
            cut = replay_truncated_event(room_name=self.room.name, replayed_to=messages[-1].seq, last_seq=last_seq)
            replay.append(encode(cut))
        self.backlog.extendleft(("raw", None, (text, None)) for text in reversed(replay))
        self.orderer = SeqOrderer(next_seq=last_seq + 1)
        await self._emit()

    async def _fill_holes(self) -> None:
        while True:
            await asyncio.sleep(GAP_WAIT_SECONDS)
            hole = self.orderer.hole()
            if hole is None:
                return
            after, upto = hole
            messages = await database_sync_to_async(selectors.message_range)(
                room_id=self.room.pk, after=after, upto=upto
            )
            await self._queue("fill", upto, {m.seq: (encode(message_event(m)), None) for m in messages})
