"""The embedded default's channel layer: channels' in-memory layer with a cheaper expiry sweep.

The stock layer sweeps every channel queue and every group membership for expiry on each send,
group_send and receive. With one group per connected user (`user.<id>`), a message to a room of
1,000 members paid for a walk over a thousand groups twice, on the event loop. Here the sweep
runs at most once per `sweep_interval` seconds: an expired message or membership lives up to
that much longer, against an expiry of a minute (messages) and years (the chat's groups).
"""

import time

from channels.layers import InMemoryChannelLayer


class InProcessChannelLayer(InMemoryChannelLayer):
    sweep_interval = 1.0
    _swept_at = float("-inf")

    def _clean_expired(self):
        now = time.monotonic()
        if now - self._swept_at < self.sweep_interval:
            return
        self._swept_at = now
        super()._clean_expired()
