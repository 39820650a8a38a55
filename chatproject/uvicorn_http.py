"""uvicorn's httptools protocol with a bound on the request head, which httptools reads without one.

A request line and headers of more than MAX_REQUEST_HEAD_BYTES are answered 431 and the connection
closed, before the application sees any of it; the parser is fed at most that many bytes of a head,
so a head that never ends holds no more. A head is counted from the first read after the previous
request's end: one that a pipelining client starts in the same read as an earlier request's end can
pass the bound by the rest of that read, never grow without end. Bodies are not counted: Django
keeps one in memory up to 2.5 MB, spools a longer one to a temporary file and refuses it once read
(DATA_UPLOAD_MAX_MEMORY_SIZE); the proxy bounds their size (nginx's client_max_body_size). Nothing
bounds how long a head may take to arrive.
"""

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from chatproject.security import security_headers

MAX_REQUEST_HEAD_BYTES = 64 * 1024
_REFUSAL = json.dumps({"detail": "Request header fields too large."}).encode()


class HeadBoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Bytes of the head being read; between two heads (a body, a pending response) none are counted.
        self.head_bytes = 0
        self.reading_head = True
        self.messages_completed = 0

    def data_received(self, data: bytes) -> None:
        budget = MAX_REQUEST_HEAD_BYTES - self.head_bytes
        if not self.reading_head or len(data) <= budget:
            if self.reading_head:
                self.head_bytes += len(data)
            super().data_received(data)
            return
        messages_completed = self.messages_completed
        super().data_received(data[:budget])
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # answered 400, or upgraded to a WebSocket: the rest is not this parser's to read
        if self.reading_head and self.messages_completed == messages_completed:
            self.refuse_head()
        else:
            # The head ended within the budget (the rest is its body), or a message ended and the
            # next head began there, uncounted: either way the rest starts afresh.
            self.data_received(data[budget:])

    def on_headers_complete(self) -> None:
        self.reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.messages_completed += 1
        self.reading_head, self.head_bytes = True, 0

    def refuse_head(self) -> None:
        """Answer 431 and close, the head unread past the bound and never handed to the application."""
        client = f"{self.client[0]}:{self.client[1]}" if self.client else None
        self.logger.warning(
            "Request head over %d bytes: answered 431.", MAX_REQUEST_HEAD_BYTES, extra={"client": client}
        )
        headers = [
            *self.server_state.default_headers,
            *((name.encode(), value.encode()) for name, value in security_headers()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_REFUSAL)).encode()),
            (b"connection", b"close"),
        ]
        lines = [name + b": " + value + b"\r\n" for name, value in headers]
        self.transport.write(b"".join([STATUS_LINE[431], *lines, b"\r\n", _REFUSAL]))
        self.transport.close()
