"""Telemetry ingest throughput and latency through a real, tuned, private mosquitto into SQLite and PostgreSQL.

    .venv/bin/python benchmarks/telemetry_ingest.py [--windows 20000] [--consumers 2] [--engines sqlite,postgresql]

Per engine, in one run:
  * broker-only ceiling (the peer): the same publisher and the same number of subscriber processes on the
    same shared subscription, each only decoding the JSON (what any consumer must do at least);
  * sustained ingest: every window published as fast as the publisher can, consumed by `--consumers`
    TelemetryConsumer processes (shared subscription, batches, one transaction each, PUBACK after commit),
    timed from the first publish until the database holds all of them; zero loss = stored == published;
  * end-to-end latency at a paced 1,000 windows/s: commit time minus publish time, per window.
Windows are real edge_agent WindowRecorder output (200 rows, 5 features, ~3 KB), re-addressed per device.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from control_plane.db.migrate import upgrade  # noqa: E402
from control_plane.db.session import Database  # noqa: E402
from control_plane.mqtt.broker import PrivateMosquitto  # noqa: E402
from control_plane.mqtt.topics import device_topic, fleet_filter  # noqa: E402
from control_plane.runtime import serving_gc  # noqa: E402
from control_plane.telemetry.config import TelemetrySettings  # noqa: E402
from control_plane.telemetry.consumer import TelemetryConsumer  # noqa: E402
from control_plane.telemetry.models import QuarantinedMessage, TelemetryWindowRow  # noqa: E402
from tests.control_plane.telemetry.simulate import (  # noqa: E402
    ListSink,
    SimDevice,
    make_baseline,
    register_baseline,
    register_model,
)

PG_ADMIN = os.environ.get("EDGELOOP_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SENT = re.compile(rb'"bench_sent":([0-9.]+)')
DEVICES = 200


def make_payloads(count: int, *, sent_marker: bool = False, devices: int = DEVICES) -> list[tuple[str, bytes]]:
    """Return (topic, payload) pairs: real recorded windows re-addressed to ``devices`` devices, recent times."""
    baseline = make_baseline()
    sink = ListSink()
    for d in range(8):
        device = SimDevice(f"tmpl-{d}", baseline, sink, seed=d, start=time.time() - 3600)
        for _ in range(5):
            device.run_window()
    templates = sink.messages
    base = time.time() - 3000
    out = []
    run = uuid.uuid4().hex[:6]
    for i in range(count):
        message = dict(templates[i % len(templates)])
        device_id = f"bench-{run}-{i % devices:03d}"
        seq = i // devices + 1
        message.update(device_id=device_id, window_seq=seq, window_start=base + seq, window_end=base + seq + 60)
        if sent_marker:
            message["bench_sent"] = 0.0  # placeholder, patched at publish time
        out.append((device_topic(device_id, "telemetry"), json.dumps(message, separators=(",", ":")).encode()))
    return out


# ------------------------------------------------------------------------------------------ processes


def publisher(port: int, payloads: list[tuple[str, bytes]], rate: float | None, start_at: float,
              result: Any) -> None:
    """Publish every payload with QoS 1 (paced to `rate`/s if given); report first/last publish times."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}",
                         protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    while time.time() < start_at:
        time.sleep(0.001)
    first = time.time()
    infos = []
    for i, (topic, payload) in enumerate(payloads):
        if rate is not None:
            due = first + i / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            payload = payload.replace(b'"bench_sent":0.0', b'"bench_sent":%.6f' % time.time())
        infos.append(client.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    result.put({"first": first, "last": time.time(), "published": sum(i.is_published() for i in infos)})
    client.loop_stop()
    client.disconnect()


def broker_only_subscriber(port: int, group: str, stop: Any, result: Any) -> None:
    """The peer: a plain paho MQTT 5 subscriber on the shared subscription that only decodes each message."""
    import orjson

    state = {"count": 0, "last": 0.0}

    def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        orjson.loads(message.payload)
        state["count"] += 1
        state["last"] = time.time()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-peer-{os.getpid()}",
                         protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(f"$share/{group}/{fleet_filter('telemetry')}", qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    stop.wait()
    client.loop_stop()
    client.disconnect()
    result.put(dict(state))


class TimedConsumer(TelemetryConsumer):
    """A TelemetryConsumer that records commit time minus publish time of windows carrying `bench_sent`."""

    latencies: list[float]

    def _write(self, batch: list[Any]) -> None:
        super()._write(batch)
        now = time.time()
        for incoming, _mid, _qos in batch:
            match = SENT.search(incoming.payload)
            if match:
                self.latencies.append(now - float(match.group(1)))


def ingest_consumer(url: str, mqtt_url: str, stop: Any, ready: Any, result: Any) -> None:
    """Run one ingest consumer process until told to stop; report its totals and latencies."""
    database = Database(url)
    consumer = TimedConsumer(database, mqtt_url, TelemetrySettings(), name=f"bench-{os.getpid()}")
    consumer.latencies = []
    consumer.start_sync()
    with serving_gc():  # as in `edgeloop serve`: the start-up heap out of the collector's view
        ready.set()
        cpu_start = time.process_time()
        stop.wait()
    consumer.stop_sync()
    cpu = time.process_time() - cpu_start  # CPU of the whole consumer process (paho thread + batcher)
    database.dispose()
    result.put({**consumer.totals.as_dict(), "latencies": consumer.latencies,
                "failed_batches": consumer.failed_batches, "cpu_seconds": cpu})


# ------------------------------------------------------------------------------------------ runs


def counts(database: Database) -> tuple[int, int]:
    """Return stored and quarantined row counts (one reused engine: the poll must not cost a connection)."""
    with database.transaction(write=False) as session:
        stored = session.scalar(select(func.count()).select_from(TelemetryWindowRow)) or 0
        quarantined = session.scalar(select(func.count()).select_from(QuarantinedMessage)) or 0
    return int(stored), int(quarantined)


def run_broker_only(broker: PrivateMosquitto, payloads: list[tuple[str, bytes]], consumers: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    group = f"peer{uuid.uuid4().hex[:6]}"
    subs = [ctx.Process(target=broker_only_subscriber, args=(broker.port, group, stop, results))
            for _ in range(consumers)]
    for p in subs:
        p.start()
    time.sleep(1.5)
    pub_result = ctx.Queue()
    pub = ctx.Process(target=publisher, args=(broker.port, payloads, None, time.time() + 0.5, pub_result))
    pub.start()
    times = pub_result.get(timeout=300)
    pub.join()
    deadline = time.time() + 60
    time.sleep(0.5)
    stop.set()
    states = [results.get(timeout=60) for _ in subs]
    for p in subs:
        p.join()
    received = sum(s["count"] for s in states)
    last = max(s["last"] for s in states)
    assert time.time() < deadline
    seconds = last - times["first"]
    return {"received": received, "published": times["published"], "seconds": seconds,
            "rate": received / seconds if seconds > 0 else 0.0}


def run_ingest(url: str, broker: PrivateMosquitto, payloads: list[tuple[str, bytes]], consumers: int,
               rate: float | None, timeout: float = 300) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    readies = [ctx.Event() for _ in range(consumers)]
    procs = [ctx.Process(target=ingest_consumer, args=(url, broker.url, stop, ready, results)) for ready in readies]
    for p in procs:
        p.start()
    for ready in readies:
        ready.wait(60)
    poll = Database(url)
    before, _ = counts(poll)
    pub_result = ctx.Queue()
    pub = ctx.Process(target=publisher, args=(broker.port, payloads, rate, time.time() + 0.5, pub_result))
    pub.start()
    target = before + len(payloads)
    deadline = time.time() + timeout
    stored = before
    done_at = time.time()
    while time.time() < deadline:
        stored, _ = counts(poll)
        if stored >= target:
            done_at = time.time()
            break
        time.sleep(0.05)
    times = pub_result.get(timeout=120)
    pub.join()
    time.sleep(0.3)
    stop.set()
    states = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    stored, quarantined = counts(poll)
    poll.dispose()
    latencies = np.array([x for s in states for x in s["latencies"]])
    seconds = done_at - times["first"]
    return {
        "published": times["published"], "stored": stored - before, "quarantined": quarantined,
        "lost": len(payloads) - (stored - before), "duplicates": sum(s["duplicates"] for s in states),
        "failed_batches": sum(s["failed_batches"] for s in states), "seconds": seconds,
        "rate": (stored - before) / seconds if seconds > 0 else 0.0,
        "per_consumer": [s["received"] for s in states],
        "consumer_cpu_us_per_window": round(sum(s["cpu_seconds"] for s in states) / max(stored - before, 1) * 1e6, 1),
        "latency_ms": {q: float(np.percentile(latencies, q) * 1000) for q in (50, 95, 99)} if latencies.size else None,
    }


def prepare_database(engine: str, workdir: Path) -> tuple[str, Any]:
    """Return a migrated database URL holding the baseline dataset, and a cleanup function."""
    if engine == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
        upgrade(url)
        cleanup: Any = lambda: None  # noqa: E731
    else:
        name = f"edgeloop_bench_{os.getpid()}"
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
        upgrade(url)

        def cleanup() -> None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    database = Database(url)
    register_baseline(database, make_baseline())
    register_model(database)  # windows of unregistered models are quarantined
    database.dispose()
    return url, cleanup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=20_000)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--quick", action="store_true", help="5,000 windows and 3 s of paced latency")
    args = parser.parse_args()
    if args.quick:
        args.windows, args.latency_seconds = min(args.windows, 5_000), min(args.latency_seconds, 3.0)
    load = os.getloadavg()
    payloads = make_payloads(args.windows)
    latency_payloads = make_payloads(int(1000 * args.latency_seconds), sent_marker=True)
    results: dict[str, Any] = {}
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        workdir = Path(tempfile.mkdtemp(prefix="edgeloop-bench-"))
        broker = PrivateMosquitto(persistence=False, anonymous=True)
        broker.start()
        url, cleanup = prepare_database(engine, workdir)
        try:
            ceiling = run_broker_only(broker, payloads, args.consumers)
            sustained = run_ingest(url, broker, payloads, args.consumers, None)
            latency = run_ingest(url, broker, latency_payloads, args.consumers, 1000.0)
        finally:
            broker.close()
            cleanup()
        results[engine] = {"broker_only": ceiling, "sustained": sustained, "paced_1000": latency}
        print(f"[{engine}] broker-only {ceiling['rate']:,.0f}/s; ingest {sustained['rate']:,.0f}/s "
              f"(lost {sustained['lost']}, dup {sustained['duplicates']}); p99 at 1k/s "
              f"{(latency['latency_ms'] or {}).get(99, float('nan')):.1f} ms", flush=True)
    report(results, args, load)


def report(results: dict[str, Any], args: argparse.Namespace, load: tuple[float, float, float]) -> None:
    """Print the table and write benchmarks/results/telemetry_ingest.json."""
    checks = []
    print(f"\n{'engine':<11}{'ingest/s':>10}{'broker-only/s':>15}{'ratio':>7}{'lost':>6}{'dup':>5}"
          f"{'p50 ms':>8}{'p99 ms':>8}{'cpu us/w':>10}")
    for engine, r in results.items():
        sustained, ceiling, paced = r["sustained"], r["broker_only"], r["paced_1000"]
        lat = paced["latency_ms"] or {50: float("nan"), 99: float("nan")}
        ratio = sustained["rate"] / ceiling["rate"] if ceiling["rate"] else 0.0
        print(f"{engine:<11}{sustained['rate']:>10,.0f}{ceiling['rate']:>15,.0f}{ratio:>7.2f}"
              f"{sustained['lost']:>6}{sustained['duplicates']:>5}{lat[50]:>8.1f}{lat[99]:>8.1f}"
              f"{sustained['consumer_cpu_us_per_window']:>10.0f}")
        checks += [
            {"name": f"{engine}: sustained windows/s, zero loss", "target": ">= 4,000/s and 0 lost",
             "measured": round(sustained["rate"], 1), "lost": sustained["lost"], "unit": "/s",
             "peer": round(ceiling["rate"], 1), "ratio": round(ratio, 3),
             "pass": sustained["rate"] >= 4000 and sustained["lost"] == 0},
            {"name": f"{engine}: p99 end-to-end latency at 1,000 windows/s", "target": "<= 100 ms",
             "measured": round(lat[99], 1), "unit": "ms", "peer": None,
             "peer_note": "no peer: the broker-only subscribers store nothing, so they have no commit latency",
             "pass": bool(lat[99] <= 100) and paced["lost"] == 0},
        ]
    first = next(iter(results.values()))
    document = {
        "name": "telemetry_ingest",
        "title": "Telemetry windows through a tuned private mosquitto into the database",
        "target": ">= 4,000 windows/s sustained with zero loss; p99 <= 100 ms at 1,000 windows/s",
        "measured": "; ".join(f"{e}: {r['sustained']['rate']:,.0f}/s, p99 "
                              f"{(r['paced_1000']['latency_ms'] or {}).get(99, float('nan')):.0f} ms"
                              for e, r in results.items()),
        "peer": "broker-only: same publisher + same number of paho subscribers on the shared subscription, "
                "decoding JSON only",
        "ratio": round(first["sustained"]["rate"] / first["broker_only"]["rate"], 3)
        if first["broker_only"]["rate"] else 0.0,
        "ratio_note": "ingest windows/s divided by the broker-only rate measured in the same run (first engine)",
        "pass": all(c["pass"] for c in checks),
        "checks": checks,
        "config": {"windows": args.windows, "consumers": args.consumers, "devices": DEVICES,
                   "latency_windows": int(1000 * args.latency_seconds), "batch_size": TelemetrySettings().batch_size,
                   "batch_wait_ms": TelemetrySettings().batch_wait_ms, "manual_ack": True,
                   "receive_maximum": TelemetrySettings().receive_maximum or 2 * TelemetrySettings().batch_size,
                   "gc_freeze": True,
                   "mosquitto": "max_queued_messages 100000, max_inflight_messages 100, set_tcp_nodelay true, "
                                "max_packet_size 524288, no persistence",
                   "cpus": os.cpu_count(), "load_average_at_start": load, "load_average_at_end": os.getloadavg()},
        "results": results,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out = ROOT / "benchmarks" / "results" / "telemetry_ingest.json"
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
