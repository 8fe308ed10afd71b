"""The replay buffer, the replay pace, the reconnect backoff and the credentials file."""

import stat

import pytest

from podium.agent import state
from podium.agent.client import Backoff
from podium.agent.replay import ReplayBuffer
from podium.agent.state import Credentials, CredentialStore, machine_id
from podium.tokenbucket import TokenBucket


def _frame(seq: int) -> str:
    return f'{{"type":"batch","seq":{seq},"ts":1.0,"replay":false,"gpus":[]}}'


def _send_all(buffer: ReplayBuffer) -> list[tuple[int, bool]]:
    sent = []
    while (item := buffer.next()) is not None:
        seq, frame, replay = item
        assert ('"replay":true' in frame) is replay
        buffer.mark_sent(seq)
        sent.append((seq, replay))
    return sent


def test_acks_drop_only_sent_batches() -> None:
    buffer = ReplayBuffer()
    for seq in range(1, 6):
        buffer.add(seq, _frame(seq))
    assert _send_all(buffer)[:3] == [(1, False), (2, False), (3, False)]
    buffer.add(6, _frame(6))

    assert buffer.ack(10) == 5
    assert len(buffer) == 1  # batch 6 was never sent: still kept
    assert buffer.next()[0] == 6


def test_rewind_replays_unacked_batches_in_order() -> None:
    buffer = ReplayBuffer()
    for seq in range(1, 5):
        buffer.add(seq, _frame(seq))
    _send_all(buffer)
    buffer.ack(2)
    buffer.add(5, _frame(5))  # made while disconnected

    buffer.rewind(next_seq=6)
    buffer.add(6, _frame(6))  # made on the new connection

    assert _send_all(buffer) == [(3, True), (4, True), (5, True), (6, False)]


def test_a_full_buffer_drops_the_oldest_and_counts() -> None:
    buffer = ReplayBuffer(maxlen=3)
    for seq in range(1, 6):
        buffer.add(seq, _frame(seq))

    assert buffer.dropped == 2
    assert [seq for seq, _ in _send_all(buffer)] == [3, 4, 5]


def test_replay_pacing_allows_a_burst_then_the_rate() -> None:
    pacer = TokenBucket(rate=100.0, burst=3)

    delays = [pacer.delay() for _ in range(5)]

    assert delays[:3] == [0.0, 0.0, 0.0]
    assert 0.005 < delays[3] <= 0.011
    assert delays[4] > delays[3]
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(rate=0, burst=1)


def test_backoff_doubles_to_the_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 30.0)

    delays = [backoff.delay() for _ in range(10)]

    assert 0.375 <= delays[0] <= 0.625
    assert 0.75 <= delays[1] <= 1.25
    assert all(delay <= 30.0 for delay in delays)
    assert delays[-1] >= 22.5
    backoff.reset()
    assert backoff.delay() <= 0.625


def test_credentials_round_trip_private_and_per_server(tmp_path) -> None:
    store = CredentialStore(tmp_path / "state", "gpu-01")
    credentials = Credentials(
        server="https://podium.example.com", node_id=4, name="gpu-01", node_token="pdn_x"
    )

    store.save(credentials)

    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.load("https://podium.example.com/") == credentials
    assert store.load("https://other.example.com") is None
    assert [p.name for p in store.path.parent.iterdir()] == ["gpu-01.json"]  # no temp files
    store.path.write_text("{broken")
    assert store.load("https://podium.example.com") is None
    with pytest.raises(ValueError, match="file name"):
        CredentialStore(tmp_path, "../escape")


def test_machine_id_is_generated_once_without_a_system_one(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(state, "MACHINE_ID_PATHS", (tmp_path / "absent",))

    generated = machine_id(tmp_path / "state")

    assert len(generated) == 32
    assert machine_id(tmp_path / "state") == generated
    assert stat.S_IMODE((tmp_path / "state" / "machine-id").stat().st_mode) == 0o600
