"""One WebSocket frame per event and process, written to each socket without the ASGI send path.

A room event goes to every member with the same bytes: a server's frames are not masked. On
uvicorn's websockets-sansio protocol, `direct_writer` hands those bytes straight to the
socket's transport, which skips building a frame per socket (the ASGI message, the
protocol's frame serializer, the joined write) and is most of the cost of a delivery in a
large room (docs/performance.md).

The direct write is taken only when the ASGI send would do exactly the same thing at once: the
connection open, no close sent, no fragmented message under way, no extension that rewrites
frames (permessage-deflate compresses per socket), nothing the protocol has yet to flush and a
transport that is not paused for a slow reader. Otherwise the writer says no and the caller
sends through ASGI, which waits, compresses or raises as the server decides. Any other server
(daphne) has no direct writer: every send goes through ASGI.
"""

from collections.abc import Callable

from websockets.frames import Frame, Opcode
from websockets.protocol import State

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # a daphne deployment without uvicorn: no direct writes
    WebSocketsSansIOProtocol = None


def text_frame(text: str) -> bytes:
    """The unmasked, uncompressed text frame a server sends for `text`."""
    return Frame(Opcode.TEXT, text.encode("utf-8")).serialize(mask=False)


def event_frame(event: dict) -> bytes:
    """The frame of event["text"], built by the first socket that asks and kept in the event."""
    frame = event.get("frame")
    if frame is None:
        frame = event["frame"] = text_frame(event["text"])
    return frame


def event_frames(event: dict) -> list[bytes]:
    """The frames of a chat.messages event (one per message) or a chat.deletions event (one per
    deleted message), built once and kept in the event."""
    frames = event.get("frames")
    if frames is None:
        texts = event["texts"] if "texts" in event else [text for _seq, text in event["messages"]]
        frames = event["frames"] = [text_frame(text) for text in texts]
    return frames


def direct_writer(send) -> Callable[[bytes], bool] | None:
    """For an ASGI `send` of uvicorn's sansio WebSocket protocol: write(frame) -> written?"""
    protocol = getattr(send, "__self__", None)
    if WebSocketsSansIOProtocol is None or not isinstance(protocol, WebSocketsSansIOProtocol):
        return None
    connection = protocol.conn

    def write(frame: bytes) -> bool:
        if (
            protocol.disconnected
            or protocol.close_sent
            or not protocol.writable.is_set()
            or connection.state is not State.OPEN
            or connection.extensions
            or connection.expect_continuation_frame
            or connection.writes
            or protocol.transport.is_closing()
        ):
            return False
        protocol.transport.write(frame)
        return True

    return write
