"""A WebsocketCommunicator that waits as long as a loaded machine may need for what must come."""

from channels.testing import WebsocketCommunicator

# Seconds to wait for a frame, a handshake or the application's end that the test expects. Channels'
# default of 1 s is short on a busy 2-core machine, where an answer may wait on the database thread
# and the channel layer; a wait that succeeds returns as soon as it can, so only a failure takes longer.
# Waits for nothing to arrive (receive_nothing) keep their own short timeouts.
PATIENCE = 5.0


class Communicator(WebsocketCommunicator):
    disconnected = False

    async def connect(self, timeout=PATIENCE):
        return await super().connect(timeout)

    async def receive_output(self, timeout=PATIENCE):
        output = await super().receive_output(timeout)
        if output.get("type") == "websocket.send" and output.get("text") is not None:
            # A real server encodes a text frame as UTF-8, and fails on what cannot be (a lone
            # surrogate); the in-memory channel would let it through.
            output["text"].encode("utf-8")
        return output

    async def receive_from(self, timeout=PATIENCE):
        return await super().receive_from(timeout)

    async def receive_json_from(self, timeout=PATIENCE):
        return await super().receive_json_from(timeout)

    async def disconnect(self, code=1000, timeout=PATIENCE):
        self.disconnected = True
        await super().disconnect(code, timeout)
