"""The on-disk telemetry outbox: restart, order, bound, ack semantics, and a broker outage end to end."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from control_plane.drift.baseline import build_baseline
from control_plane.mqtt.broker import PrivateMosquitto
from edge_agent.outbox import Outbox, parse_ack
from edge_agent.telemetry import WindowRecorder


def _fill(outbox: Outbox, count: int) -> list[int]:
    seqs = []
    for _ in range(count):
        seq = outbox.next_window_seq()
        outbox.put({"window_seq": seq, "n": seq})
        seqs.append(seq)
    return seqs


def test_rows_and_sequence_survive_restart(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    assert _fill(outbox, 3) == [1, 2, 3]
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.db")
    assert [item.window_seq for item in reopened.peek()] == [1, 2, 3]
    assert json.loads(reopened.peek()[0].payload) == {"window_seq": 1, "n": 1}
    assert reopened.next_window_seq() == 4
    reopened.close()


def test_peek_is_in_order_and_does_not_remove(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    _fill(outbox, 5)
    assert [i.window_seq for i in outbox.peek(3)] == [1, 2, 3]
    assert [i.window_seq for i in outbox.peek(3)] == [1, 2, 3]
    assert len(outbox) == 5


def test_bound_drops_oldest_and_counts_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_windows=5)
    _fill(outbox, 8)
    assert len(outbox) == 5 and [i.window_seq for i in outbox.peek()] == [4, 5, 6, 7, 8]
    assert outbox.take_dropped() == 3 and outbox.take_dropped() == 0
    _fill(outbox, 1)
    outbox.close()
    reopened = Outbox(tmp_path / "o.db", max_windows=5)
    assert reopened.take_dropped() == 1 and reopened.dropped_total == 4


def test_dropped_count_is_reported_in_the_next_window(tmp_path: Path) -> None:
    baseline = build_baseline(np.random.default_rng(0).normal(size=(500, 2)))
    outbox = Outbox(tmp_path / "o.db", max_windows=2)
    clock = [0.0]
    recorder = WindowRecorder(
        baseline.to_dict(), device_id="d", model_name="m", model_version=1, sink=outbox, clock=lambda: clock[0]
    )
    for _ in range(4):
        recorder.observe(np.zeros((1, 2)), np.zeros(1), None, 0.001, error=False)
        clock[0] += 60
    recorder.observe(np.zeros((1, 2)), np.zeros(1), None, 0.001, error=False)  # closes window 4
    last = json.loads(outbox.peek(include_inflight=True)[-1].payload)
    assert last["window_seq"] == 4 and last["dropped_windows"] == 1
    assert [i.window_seq for i in outbox.peek()] == [3, 4]


class FakeClient:
    """Stands in for paho's publish(): hands out mids, optionally acks before returning."""

    def __init__(self, outbox: Outbox, ack_early: bool = False) -> None:
        self.outbox = outbox
        self.ack_early = ack_early
        self.mid = 0
        self.sent: list[tuple[int, bytes]] = []

    def publish(self, payload: bytes) -> int:
        self.mid += 1
        self.sent.append((self.mid, payload))
        if self.ack_early:
            self.outbox.ack(self.mid)  # PUBACK processed by the network thread before publish() returns
        return self.mid


def test_rows_are_deleted_only_on_puback_without_end_to_end_acks(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_inflight=3, end_to_end=False)
    _fill(outbox, 5)
    client = FakeClient(outbox)
    assert outbox.pump(client.publish) == 3 and outbox.inflight() == 3
    assert outbox.pump(client.publish) == 0  # in-flight window full, nothing sent twice
    assert len(outbox) == 5
    assert outbox.ack(2) and not outbox.ack(2) and not outbox.ack(99)
    assert [i.window_seq for i in outbox.peek(include_inflight=True)] == [1, 3, 4, 5]
    assert outbox.pump(client.publish) == 1  # one slot freed: window 4
    assert [json.loads(p)["window_seq"] for _, p in client.sent] == [1, 2, 3, 4]
    for mid in (1, 3, 4):
        outbox.ack(mid)
    outbox.pump(client.publish)
    outbox.ack(5)
    assert len(outbox) == 0


def test_ack_before_publish_returns_is_applied(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", end_to_end=False)
    _fill(outbox, 4)
    assert outbox.pump(FakeClient(outbox, ack_early=True).publish) == 4
    assert len(outbox) == 0 and outbox.inflight() == 0


def test_foreign_acks_outside_a_pump_do_not_delete_later_windows(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    _fill(outbox, 2)
    assert not outbox.ack(1)  # e.g. a status message on the same client
    client = FakeClient(outbox)
    outbox.pump(client.publish)
    assert len(outbox) == 2 and outbox.inflight() == 2


def test_unacked_rows_are_resent_after_restart_or_reset(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    _fill(outbox, 2)
    outbox.pump(FakeClient(outbox).publish)
    outbox.reset_inflight()
    client = FakeClient(outbox)
    assert outbox.pump(client.publish) == 2
    outbox.close()
    reopened = Outbox(tmp_path / "o.db")
    assert reopened.pump(FakeClient(reopened).publish) == 2


# ---------------------------------------------------------------- real broker outage


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    # Under /tmp: mosquitto drops to its own user, which cannot enter tmp_path.
    broker = PrivateMosquitto(anonymous=True)
    broker.start()
    yield broker
    broker.stop()


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.mark.mqtt
def test_broker_outage_loses_and_duplicates_nothing(tmp_path: Path, broker: PrivateMosquitto) -> None:
    topic = "edgeloop/devices/dev-1/telemetry"
    received: list[int] = []
    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cp-sub", clean_session=False)
    subscriber.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    subscriber.on_message = lambda c, u, m: received.append(json.loads(m.payload)["window_seq"])
    subscriber.reconnect_delay_set(1, 1)
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.loop_start()

    outbox = Outbox(tmp_path / "outbox.db", max_inflight=10, end_to_end=False)  # this subscriber confirms nothing
    connected = threading.Event()
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dev-1")
    publisher.on_connect = lambda c, u, f, rc, p: connected.set()
    publisher.on_disconnect = lambda c, u, f, rc, p: connected.clear()

    def on_publish(client: mqtt.Client, userdata: object, mid: int, reason: object, props: object) -> None:
        outbox.ack(mid)

    publisher.on_publish = on_publish
    publisher.reconnect_delay_set(1, 1)
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()

    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            if connected.is_set():
                outbox.pump(lambda payload: publisher.publish(topic, payload, qos=1).mid)
            time.sleep(0.01)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    baseline = build_baseline(np.random.default_rng(0).normal(size=(500, 3)))
    clock = [0.0]
    recorder = WindowRecorder(
        baseline.to_dict(), device_id="dev-1", model_name="m", model_version=1, sink=outbox, clock=lambda: clock[0]
    )

    def produce(count: int) -> None:
        for _ in range(count):
            recorder.observe(np.ones((5, 3)), np.zeros(5), None, 0.002, error=False)
            clock[0] += 60
            recorder.tick()
            time.sleep(0.005)

    try:
        _wait(lambda: connected.is_set() and subscriber.is_connected())
        produce(40)
        broker.stop()
        _wait(lambda: not connected.is_set())
        produce(60)  # the broker is down: windows pile up on disk
        assert len(outbox) >= 60
        broker.start()
        produce(40)
        _wait(lambda: len(outbox) == 0 and len(received) >= 140, timeout=30)
        time.sleep(0.5)  # let any late duplicate arrive before counting
    finally:
        stop.set()
        pumper.join(timeout=5)
        publisher.loop_stop()
        subscriber.loop_stop()
        publisher.disconnect()
        subscriber.disconnect()
    # Nothing is lost. Delivery is at least once: a window the broker stored but whose PUBACK died with it is sent
    # again, so only windows in flight at the outage may arrive twice; the ingest dedupes on (device, window_seq).
    assert sorted(set(received)) == list(range(1, 141))
    duplicates = [seq for seq, count in Counter(received).items() if count > 1]
    assert len(duplicates) <= outbox.max_inflight and all(count == 2 for count in Counter(received).values()
                                                          if count > 1)
    assert all(40 - outbox.max_inflight < seq <= 40 for seq in duplicates), duplicates  # in flight at the stop
    assert outbox.dropped_total == 0


def test_rows_wait_for_the_control_plane_after_the_puback(tmp_path: Path) -> None:
    clock = [0.0]
    outbox = Outbox(tmp_path / "o.db", max_inflight=3, ack_timeout_s=30, clock=lambda: clock[0])
    _fill(outbox, 5)
    client = FakeClient(outbox)
    assert outbox.pump(client.publish) == 3
    for mid in (1, 2, 3):
        assert outbox.ack(mid)  # PUBACK: the broker has them, the control plane may not
    assert len(outbox) == 5 and outbox.inflight() == 3
    assert outbox.pump(client.publish) == 0, "unconfirmed windows fill the window"
    assert outbox.confirm([1, 3, 99]) == 2  # settled: stored, duplicate or quarantined
    assert [i.window_seq for i in outbox.peek(include_inflight=True)] == [2, 4, 5]
    assert outbox.pump(client.publish) == 2  # windows 4 and 5
    clock[0] = 31.0  # window 2's confirmation is late (a consumer died after the PUBACK): send it again
    outbox.ack(4)
    outbox.ack(5)
    assert outbox.pump(client.publish) == 1
    assert [json.loads(p)["window_seq"] for _, p in client.sent] == [1, 2, 3, 4, 5, 2]
    assert outbox.confirm([2, 4, 5]) == 3 and len(outbox) == 0


def test_a_confirmation_before_the_puback_leaves_nothing_behind(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_inflight=2)
    _fill(outbox, 4)
    client = FakeClient(outbox)
    assert outbox.pump(client.publish) == 2
    assert outbox.confirm([1, 2]) == 2  # the consumer was faster than the broker's PUBACK
    outbox.ack(1)
    outbox.ack(2)
    assert outbox.pump(client.publish) == 2 and outbox.confirm([3, 4]) == 2
    assert len(outbox) == 0


def test_only_well_formed_confirmations_count() -> None:
    assert parse_ack(b'{"schema":"edgeloop.telemetry-ack/v1","seqs":[1,2,true,-1,3.0,9223372036854775808]}') == [1, 2]
    assert parse_ack(b'{"schema":"other","seqs":[1]}') == []
    assert parse_ack(b"[" * 100_000) == [] and parse_ack(b"\xff") == []
