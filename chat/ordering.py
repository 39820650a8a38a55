"""Per-socket ordering of room messages: every seq once, in order, whatever the channel layer does.

Publishes of concurrent commits can overtake each other, and a channel layer may drop a
message (capacity, expiry, a Redis restart). The socket therefore delivers strictly by seq:
a message ahead of a hole waits here until the hole is filled, by a late publish or, after a
short wait, from the database, which is the record. Seqs below `next_seq` were delivered
(or predate the socket) and are dropped, so nothing reaches a socket twice.
"""


class SeqOrderer:
    """Items are whatever the socket sends for a message (opaque here), keyed by seq."""

    def __init__(self, next_seq: int) -> None:
        self.next_seq = next_seq
        self._waiting: dict[int, object] = {}
        self._tail = next_seq - 1  # the newest seq known to be committed

    def expect(self, last_seq: int) -> None:
        """The room's newest seq is at least `last_seq`: what is missing up to it is a hole too,
        even with no later message waiting behind it (the broadcast of a room's last message lost)."""
        self._tail = max(self._tail, last_seq)

    def offer(self, seq: int, item) -> list:
        """Take one published message; return what can now be sent, in order."""
        if seq >= self.next_seq:
            self._waiting.setdefault(seq, item)
        return self._take_contiguous()

    def hole(self) -> tuple[int, int] | None:
        """The missing range (after, upto] before the first waiting message, or up to the known
        tail when nothing waits; None when nothing is missing."""
        if not self._waiting:
            return (self.next_seq - 1, self._tail) if self._tail >= self.next_seq else None
        first = min(self._waiting)
        return (self.next_seq - 1, first - 1) if first > self.next_seq else None

    def fill(self, upto: int, found: dict[int, object]) -> list:
        """Close the hole up to `upto` with what the database holds; absent seqs were deleted."""
        for seq, item in found.items():
            if seq >= self.next_seq:
                self._waiting.setdefault(seq, item)
        ready = [self._waiting.pop(s) for s in sorted(s for s in self._waiting if s <= upto)]
        self.next_seq = max(self.next_seq, upto + 1)
        return ready + self._take_contiguous()

    def _take_contiguous(self) -> list:
        ready = []
        while self.next_seq in self._waiting:
            ready.append(self._waiting.pop(self.next_seq))
            self.next_seq += 1
        return ready
