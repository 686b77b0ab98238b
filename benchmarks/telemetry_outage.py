"""Broker outage: 100 devices keep producing windows through edge_agent.outbox while mosquitto is down.

    .venv/bin/python benchmarks/telemetry_outage.py [--devices 100] [--outage 30] [--engine sqlite]

Timeline: devices produce one window each every `--period` seconds for `--before` s, mosquitto (persistent,
tuned) is stopped for `--outage` s while they keep producing into their bounded outboxes, then restarted;
the run ends when every outbox is empty and the database holds every window. Counts: windows produced,
stored, lost (produced - stored), duplicates delivered (deduplicated by the unique key) and duplicates
stored (rows sharing (device_id, window_seq); must be 0). The peer is a plain QoS 1 publisher without an
outbox (paho's in-memory queue only), run through the same outage in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from benchmarks.telemetry_ingest import prepare_database  # noqa: E402
from control_plane.db.session import Database  # noqa: E402
from control_plane.mqtt.broker import PrivateMosquitto  # noqa: E402
from control_plane.mqtt.topics import device_topic  # noqa: E402
from control_plane.telemetry.config import TelemetrySettings  # noqa: E402
from control_plane.telemetry.consumer import TelemetryConsumer  # noqa: E402
from control_plane.telemetry.models import TelemetryWindowRow  # noqa: E402
from edge_agent.outbox import Outbox, ack_topic, parse_ack  # noqa: E402
from tests.control_plane.telemetry.simulate import ListSink, SimDevice, make_baseline  # noqa: E402


class Device:
    """A device's telemetry path: template windows -> Outbox -> paho (QoS 1), or paho only for the peer."""

    def __init__(self, device_id: str, port: int, workdir: Path, template: dict[str, Any], use_outbox: bool,
                 max_windows: int) -> None:
        self.device_id = device_id
        self.template = template
        self.outbox = Outbox(workdir / f"{device_id}.db", max_windows=max_windows) if use_outbox else None
        self.seq = 0
        self.produced = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311)
        self.client.max_queued_messages_set(0 if use_outbox else 1000)
        self.client.reconnect_delay_set(1, 2)
        if self.outbox is not None:
            outbox = self.outbox
            self.client.on_publish = lambda _c, _u, mid, _rc, _p: outbox.ack(mid)  # type: ignore[assignment]
            # Rows leave the outbox on the control plane's confirmation after its commit, as on a real agent.
            self.client.message_callback_add(ack_topic(device_id), self._on_ack)

            def on_connect(client: mqtt.Client, *_: Any) -> None:
                client.subscribe(ack_topic(device_id), qos=1)
                outbox.reset_inflight()

            self.client.on_connect = on_connect
        self.client.connect_async("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _on_ack(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.outbox is not None:
            self.outbox.confirm(parse_ack(message.payload))

    def produce(self) -> None:
        now = time.time()
        message = dict(self.template, device_id=self.device_id, window_start=now - 1.0, window_end=now)
        if self.outbox is not None:
            message["window_seq"] = self.outbox.next_window_seq()
            message["dropped_windows"] = self.outbox.take_dropped()
            self.outbox.put(message)
        else:
            self.seq += 1
            message["window_seq"] = self.seq
            self.client.publish(device_topic(self.device_id, "telemetry"), json.dumps(message).encode(), qos=1)
        self.produced += 1

    def pump(self) -> None:
        if self.outbox is None:
            return
        topic = device_topic(self.device_id, "telemetry")

        def publish(payload: bytes) -> int | None:
            info = self.client.publish(topic, payload, qos=1)
            return info.mid if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN) else None

        if self.client.is_connected():
            self.outbox.pump(publish)

    def pending(self) -> int:
        return len(self.outbox) if self.outbox is not None else 0

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        if self.outbox is not None:
            self.outbox.close()


def stored_counts(url: str, prefix: str) -> tuple[int, int]:
    """Return (rows, distinct (device, seq)) of this scenario's devices."""
    database = Database(url)
    t = TelemetryWindowRow
    with database.transaction(write=False) as session:
        rows = session.scalar(select(func.count()).select_from(t).where(t.device_id.like(f"{prefix}%"))) or 0
        distinct = session.scalar(select(func.count()).select_from(
            select(t.device_id, t.window_seq).where(t.device_id.like(f"{prefix}%")).distinct().subquery())) or 0
    database.dispose()
    return int(rows), int(distinct)


def scenario(url: str, broker: PrivateMosquitto, args: argparse.Namespace, template: dict[str, Any], *,
             use_outbox: bool, prefix: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="edgeloop-outage-"))
    config = TelemetrySettings(rate_per_second=50, rate_burst=10_000, shared_subscription=args.shared)
    database = Database(url)
    consumer = TelemetryConsumer(database, broker.url, config, name=f"outage-{prefix}")
    consumer.start_sync()
    devices = [Device(f"{prefix}{i:03d}", broker.port, workdir, template, use_outbox, args.max_windows)
               for i in range(args.devices)]
    stop = threading.Event()

    def pumper() -> None:
        while not stop.is_set():
            for device in devices:
                device.pump()
            time.sleep(0.05)

    pump_thread = threading.Thread(target=pumper, daemon=True)
    pump_thread.start()
    t0 = time.time()
    phases = [(args.before, False), (args.outage, True), (args.after, False)]
    max_backlog = 0
    for seconds, down in phases:
        if down:
            broker.stop()
        elif broker.process is None:
            broker.start()
        end = time.time() + seconds
        while time.time() < end:
            tick = time.time()
            for device in devices:
                device.produce()
            max_backlog = max(max_backlog, sum(d.pending() for d in devices))
            time.sleep(max(0.0, args.period - (time.time() - tick)))
    produced = sum(d.produced for d in devices)
    deadline = time.time() + args.drain_timeout
    while time.time() < deadline:
        rows, distinct = stored_counts(url, prefix)
        if distinct >= produced and all(d.pending() == 0 for d in devices):
            break
        if args.verbose:
            print(f"  stored {distinct}/{produced}, pending {sum(d.pending() for d in devices)}, consumer "
                  f"connected={consumer.connection.connected.is_set()} totals={consumer.totals.as_dict()}",
                  flush=True)
        time.sleep(1.0)
    drained = time.time() - t0
    stop.set()
    pump_thread.join(5)
    rows, distinct = stored_counts(url, prefix)
    dropped = sum(d.outbox.dropped_total for d in devices if d.outbox is not None)
    for device in devices:
        device.close()
    consumer.stop_sync()
    database.dispose()
    return {"produced": produced, "stored": distinct, "lost": produced - distinct, "duplicate_rows": rows - distinct,
            "duplicates_delivered": consumer.totals.duplicates, "dropped_by_outbox_bound": dropped,
            "max_outbox_backlog": max_backlog, "seconds_total": round(drained, 1),
            "quarantined": dict(consumer.totals.quarantined)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--before", type=float, default=5.0)
    parser.add_argument("--after", type=float, default=5.0)
    parser.add_argument("--period", type=float, default=1.0, help="seconds between windows per device")
    parser.add_argument("--max-windows", type=int, default=10_000, help="outbox bound per device")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--engine", default="sqlite")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--shared", action="store_true", help="use the shared subscription (not durable)")
    args = parser.parse_args()
    sink = ListSink()
    SimDevice("tmpl", make_baseline(), sink, seed=1, start=time.time() - 120).run_window()
    template = sink.messages[0]
    load = os.getloadavg()
    url, cleanup = prepare_database(args.engine, Path(tempfile.mkdtemp(prefix="edgeloop-outage-db-")))
    broker = PrivateMosquitto(persistence=True, anonymous=True)
    broker.start()
    try:
        ours = scenario(url, broker, args, template, use_outbox=True, prefix="out-")
        peer = None if args.skip_peer else scenario(url, broker, args, template, use_outbox=False, prefix="raw-")
    finally:
        broker.stop()
        if not args.verbose:
            broker.close()
        else:
            print("broker log:", broker.workdir / "mosquitto.log")
        cleanup()
    print(f"\n{'path':<22}{'produced':>9}{'stored':>8}{'lost':>6}{'dup rows':>9}{'dup delivered':>14}{'backlog':>8}")
    for name, r in (("outbox + ingest", ours), ("paho queue only", peer)):
        if r is not None:
            print(f"{name:<22}{r['produced']:>9}{r['stored']:>8}{r['lost']:>6}{r['duplicate_rows']:>9}"
                  f"{r['duplicates_delivered']:>14}{r['max_outbox_backlog']:>8}")
    passed = ours["lost"] == 0 and ours["duplicate_rows"] == 0 and ours["dropped_by_outbox_bound"] == 0
    document = {
        "name": "telemetry_outage",
        "title": f"Mosquitto stopped {args.outage:.0f} s while {args.devices} devices produce windows",
        "target": "0 windows lost within the outbox bound; 0 duplicates stored",
        "measured": f"lost {ours['lost']} of {ours['produced']}, duplicate rows {ours['duplicate_rows']}",
        "peer": "same devices publishing QoS 1 without an outbox (paho in-memory queue, 1,000 messages)"
                + ("" if peer is None else f": lost {peer['lost']} of {peer['produced']}"),
        "ratio": None if peer is None or not peer["produced"] else round(
            (ours["stored"] / ours["produced"]) / max(peer["stored"] / peer["produced"], 1e-9), 3),
        "ratio_note": "share of windows stored, ours divided by the peer's",
        "pass": passed,
        "config": {**vars(args), "mosquitto": "persistence true, max_queued_messages 100000, "
                   "max_inflight_messages 100, set_tcp_nodelay true, max_packet_size 524288",
                   "consumer": "1 TelemetryConsumer, persistent MQTT 5 session, PUBACK after commit, "
                   + ("shared" if args.shared else "plain durable") + " subscription",
                   "load_average_at_start": load},
        "results": {"outbox": ours, "peer": peer},
    }
    out = ROOT / "benchmarks" / "results" / "telemetry_outage.json"
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}; pass={passed}")


if __name__ == "__main__":
    main()
