"""chat.frames: one frame per event, written to uvicorn's sockets directly, and only when that is safe."""

import asyncio
import json
import socket

import pytest
import uvicorn
from asgiref.sync import sync_to_async
from websockets.asyncio.client import connect
from websockets.frames import Opcode

from accounts.tests.factories import UserFactory
from accounts.tokens import token_pair_issue
from chat import events
from chat.frames import direct_writer, event_frame, event_frames, text_frame
from chat.models import Room
from chat.tests.factories import make_message
from chat.tests.wire import parse_frame


@pytest.mark.parametrize("text", ["", "héllo ✓", "x" * 125, "x" * 126, "x" * 70_000])
def test_a_text_frame_reads_back_as_its_text(text):
    frame = parse_frame(text_frame(text))

    assert (frame.opcode, frame.fin, frame.data.decode()) == (Opcode.TEXT, True, text)


def test_an_event_frame_is_built_once_and_kept_in_the_event():
    event = {"type": "chat.message", "text": '{"type": "message"}'}

    first = event_frame(event)

    assert first == text_frame(event["text"])
    assert event["frame"] is first
    assert event_frame(event) is first


def test_other_servers_have_no_direct_writer():
    async def send(message):  # e.g. daphne's, or channels' test communicator
        pass

    assert direct_writer(send) is None


class Server:
    """uvicorn with websockets-sansio on a free port, in this loop, serving `app`."""

    def __init__(self, app, **options) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, ws="websockets-sansio", lifespan="off", log_config=None, **options
        )
        self.server = uvicorn.Server(config)

    async def __aenter__(self):
        self.task = asyncio.create_task(self.server.serve())
        async with asyncio.timeout(10):
            while not self.server.started:
                await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc):
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 10)


def writing_app(outcome: dict):
    """Accept, then mix direct frames and ASGI sends; after the client leaves, try once more."""

    async def app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        write = outcome["writer"] = direct_writer(send)
        for text in ("one", "two", "three"):
            if text == "two" or not write(text_frame(text)):
                outcome.setdefault("through_asgi", []).append(text)
                await send({"type": "websocket.send", "text": text})
        outcome["left"] = await receive()
        outcome["after_close"] = write(text_frame("late"))

    return app


async def test_frames_written_directly_keep_their_order_with_asgi_sends():
    outcome: dict = {}
    async with Server(writing_app(outcome)) as server:
        async with connect(f"ws://127.0.0.1:{server.port}/", compression=None) as client:
            received = [await asyncio.wait_for(client.recv(), 5) for _ in range(3)]
        async with asyncio.timeout(5):
            while "after_close" not in outcome:
                await asyncio.sleep(0.01)

    assert received == ["one", "two", "three"]
    assert outcome["through_asgi"] == ["two"]  # one and three went straight to the transport
    assert outcome["left"]["type"] == "websocket.disconnect"
    assert outcome["after_close"] is False


async def test_a_compressed_connection_is_never_written_directly():
    outcome: dict = {}
    server = Server(writing_app(outcome), ws_per_message_deflate=True)
    async with server, connect(f"ws://127.0.0.1:{server.port}/", compression="deflate") as client:
        assert client.protocol.extensions  # deflate was negotiated
        received = [await asyncio.wait_for(client.recv(), 5) for _ in range(3)]

    assert received == ["one", "two", "three"]
    assert outcome["through_asgi"] == ["one", "two", "three"]


async def test_a_paused_transport_or_a_sent_close_refuses_direct_frames():
    outcome: dict = {}

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        write, protocol = direct_writer(send), send.__self__
        outcome["open"] = write(text_frame("one"))
        protocol.pause_writing()  # what the transport calls when its buffer passes the high-water mark
        outcome["paused"] = write(text_frame("not sent"))
        protocol.resume_writing()
        outcome["resumed"] = write(text_frame("two"))
        await send({"type": "websocket.close", "code": 1000})
        outcome["closing"] = write(text_frame("late"))

    server = Server(app)
    async with server, connect(f"ws://127.0.0.1:{server.port}/", compression=None) as client:
        received = [message async for message in client]

    assert received == ["one", "two"]
    assert outcome == {"open": True, "paused": False, "resumed": True, "closing": False}


def test_the_frames_of_a_commit_are_built_once_in_order_and_kept_in_the_event():
    event = {"type": "chat.messages", "messages": [[1, '{"seq": 1}'], [2, "héllo"]]}

    frames = event_frames(event)

    assert frames == [text_frame('{"seq": 1}'), text_frame("héllo")]
    assert event_frames(event) is frames


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_a_commits_messages_reach_a_uvicorn_socket_in_seq_order(monkeypatch):
    """The chat application on uvicorn's sansio protocol: the frames of one commit, released by the
    socket's orderer, go out directly (in one write) and read back as the messages, in seq order."""
    from chatproject.asgi import application

    alice = await sync_to_async(UserFactory)(username="alice")
    general = await sync_to_async(Room.objects.get)(name="general")
    token = await sync_to_async(lambda: token_pair_issue(user=alice).access_token)()
    monkeypatch.setattr("chat.services.publish_messages", lambda messages: [True] * len(messages))
    writes = []

    def recording_writer(send):
        write = direct_writer(send)

        def record(data: bytes) -> bool:
            written = write(data)
            writes.append((data, written))
            return written

        return record

    monkeypatch.setattr("chat.consumers.direct_writer", recording_writer)
    async with Server(application) as server:
        url = f"ws://127.0.0.1:{server.port}/ws/general?token={token}"
        async with connect(url, compression=None) as client:
            assert [json.loads(await client.recv())["type"] for _ in range(2)] == ["presence", "join"]
            messages = [
                await sync_to_async(make_message)(room=general, user=alice, content=f"m{n}") for n in range(1, 6)
            ]
            await events.apublish_messages([*messages[2:], *messages[:2]])

            received = [json.loads(await asyncio.wait_for(client.recv(), 5)) for _ in range(5)]

    assert received == [events.message_event(m) for m in messages]
    commit = b"".join(text_frame(events.encode(events.message_event(m))) for m in messages)
    assert writes[-1] == (commit, True)  # the join event before it, then the commit's five in one write
