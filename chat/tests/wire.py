"""Reading the bytes a server writes to a WebSocket, for tests that see frames rather than messages."""

from websockets.frames import Frame
from websockets.streams import StreamReader


def parse_frame(data: bytes) -> Frame:
    """The one unmasked frame in `data`."""
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("incomplete frame")
