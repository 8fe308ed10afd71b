"""Batches the console has not acknowledged yet, kept for sending again after a reconnect.

Batches are kept encoded (one JSON string each, about 1.5 KB for 8 GPUs), so the default
hour of history costs a few megabytes. A batch is *pending* until it is sent on the
current connection, then *sent* until an ``ack`` covers it. An ack only drops sent
batches: a batch the console never received cannot have been stored. After a reconnect
every unacknowledged batch is pending again, and those made before that connection go
out with ``"replay": true``. When the buffer is full the oldest batch is dropped and
counted.
"""

from collections import deque

_LIVE = '"replay":false'
_REPLAY = '"replay":true'


class ReplayBuffer:
    """A bounded, ordered store of encoded batches awaiting acknowledgement."""

    def __init__(self, maxlen: int = 3600) -> None:
        if maxlen < 1:
            raise ValueError("the replay buffer needs room for at least one batch")
        self.maxlen = maxlen
        self.dropped = 0
        self._sent: deque[tuple[int, str]] = deque()
        self._pending: deque[tuple[int, str]] = deque()
        self._replay_below = 0  # pending batches with a lower seq go out as replays

    def __len__(self) -> int:
        return len(self._sent) + len(self._pending)

    @property
    def pending(self) -> int:
        """How many batches wait to be sent on this connection."""
        return len(self._pending)

    def add(self, seq: int, frame: str) -> None:
        """Keep a new batch (encoded with ``"replay":false``), dropping the oldest if full."""
        if len(self) >= self.maxlen:
            (self._sent or self._pending).popleft()
            self.dropped += 1
        self._pending.append((seq, frame))

    def next(self) -> tuple[int, str, bool] | None:
        """The oldest pending batch as (seq, frame to send, is a replay), or None."""
        if not self._pending:
            return None
        seq, frame = self._pending[0]
        if seq < self._replay_below:
            return seq, frame.replace(_LIVE, _REPLAY, 1), True
        return seq, frame, False

    def mark_sent(self, seq: int) -> None:
        """Record that the pending batch ``seq`` went out on this connection."""
        if self._pending and self._pending[0][0] == seq:
            self._sent.append(self._pending.popleft())

    def ack(self, seq: int) -> int:
        """Drop the sent batches up to ``seq``; returns how many were dropped."""
        dropped = 0
        while self._sent and self._sent[0][0] <= seq:
            self._sent.popleft()
            dropped += 1
        return dropped

    def rewind(self, next_seq: int) -> None:
        """A new connection: unacknowledged batches are pending again, as replays.

        ``next_seq`` is the seq of the first batch made on the new connection; every
        batch below it was made before and goes out flagged ``replay``.
        """
        self._sent.extend(self._pending)
        self._pending = self._sent
        self._sent = deque()
        self._replay_below = next_seq
