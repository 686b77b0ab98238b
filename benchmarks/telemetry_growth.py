"""Telemetry ingest rate vs the number of devices sending, against the broker-only rate at each size (same run).

For each device count (default 10, 100, 1,000, 10,000) the same number of real recorded windows (default 5,000)
is re-addressed round-robin to that many device ids and published as fast as possible through a tuned private
mosquitto; Edgeloop's ingest (``--consumers`` TelemetryConsumer processes on an MQTT 5 shared subscription,
batched, one transaction per batch, PUBACK after commit) is timed from the first publish until the database
holds every window; the peer at the same size is the same publisher and the same number of plain paho
subscribers that only decode the JSON. More devices means fewer windows per device: per-device state
(sequence dedup, device rows, index fan-out) grows while the message count stays fixed. The helpers are
benchmarks/telemetry_ingest.py's (one publisher connection carries every device's windows; connection count is
measured by fleet_rollout_growth, not here).

    python benchmarks/telemetry_growth.py [--quick] [--engines sqlite,postgresql] [--windows 10000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._growth import host, plot, write_results
from benchmarks.telemetry_ingest import make_payloads, prepare_database, run_broker_only, run_ingest
from control_plane.mqtt.broker import PrivateMosquitto
from control_plane.telemetry.config import TelemetrySettings

NAME = "telemetry_growth"
# The ingest target of telemetry_ingest (>= 4,000 windows/s) is for a quiet machine; across device counts the
# claim here is that the rate does not collapse as per-device state grows.
KEEP_TARGET = 0.5


def measure(engine: str, device_counts: list[int], windows: int, consumers: int) -> list[dict[str, Any]]:
    """Return one point per device count on ``engine``: ingest rate, broker-only rate, loss."""
    points = []
    for devices in device_counts:
        workdir = Path(tempfile.mkdtemp(prefix="edgeloop-bench-growth-"))
        broker = PrivateMosquitto(persistence=False, anonymous=True)
        broker.start()
        url, cleanup = prepare_database(engine, workdir)
        try:
            payloads = make_payloads(windows, devices=devices)
            ceiling = run_broker_only(broker, payloads, consumers)
            ingest = run_ingest(url, broker, payloads, consumers, None)
        finally:
            broker.close()
            cleanup()
        point = {"devices": devices, "windows": windows, "ingest_per_s": round(ingest["rate"], 1),
                 "broker_only_per_s": round(ceiling["rate"], 1), "lost": ingest["lost"],
                 "duplicates": ingest["duplicates"], "quarantined": ingest["quarantined"],
                 "consumer_cpu_us_per_window": ingest["consumer_cpu_us_per_window"],
                 "load_avg_1m": round(os.getloadavg()[0], 2)}
        points.append(point)
        print(f"[{engine}] devices={devices:>6,}  ingest {ingest['rate']:>7,.0f}/s  broker-only "
              f"{ceiling['rate']:>7,.0f}/s  lost {ingest['lost']}", flush=True)
    return points


def draw(curves: dict[str, list[dict[str, Any]]], device_counts: list[int], windows: int, consumers: int,
         quick: bool) -> Path:
    """Plot rate vs devices (with the broker-only peer) and the consumers' CPU per window vs devices."""
    rates: dict[str, tuple[list[int], list[Any]]] = {}
    cpu: dict[str, tuple[list[int], list[Any]]] = {}
    for engine, points in curves.items():
        rates[f"Edgeloop ingest, {engine}"] = (device_counts, [p["ingest_per_s"] for p in points])
        rates[f"peer: broker-only ({engine} run)"] = (device_counts, [p["broker_only_per_s"] for p in points])
        cpu[f"Edgeloop consumers, {engine}"] = (device_counts, [p["consumer_cpu_us_per_window"] for p in points])
    xlabel = f"devices sending (same {windows:,} windows spread over them)"
    return plot(NAME, [
        {"xlabel": xlabel, "ylabel": "windows per second (Edgeloop: stored; peer: decoded)", "logx": True, "ymin": 0,
         "series": rates, "subtitle": f"rate: {consumers} consumers, shared subscription, zero-loss runs"},
        {"xlabel": xlabel, "ylabel": "consumer CPU per stored window (us)", "logx": True, "series": cpu, "ymin": 0,
         "subtitle": "cost per window (moves little with machine load; no peer: it stores nothing)"},
    ], "Telemetry ingest vs devices, with mosquitto's broker-only rate in the same run", quick=quick)


def main(argv: list[str] | None = None) -> int:
    """Run every engine over the device counts; write results/telemetry_growth.json and .png."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10, 100, 1,000 devices; 3,000 windows; SQLite")
    parser.add_argument("--devices", default="10,100,1000,10000")
    # 5,000: at 10 devices that is 500 windows each, inside the per-device burst allowance (rate_burst 600);
    # more would be quarantined as rate_limited by design and read as loss here.
    parser.add_argument("--windows", type=int, default=5_000)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    if args.quick:
        args.devices, args.windows, args.engines = "10,100,1000", 3_000, "sqlite"
    device_counts = [int(d) for d in args.devices.split(",") if d.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    load_start = os.getloadavg()
    curves = {engine: measure(engine, device_counts, args.windows, args.consumers) for engine in engines}
    checks = []
    for engine, points in curves.items():
        first, last = points[0], points[-1]
        kept = last["ingest_per_s"] / first["ingest_per_s"] if first["ingest_per_s"] else 0.0
        peer_kept = last["broker_only_per_s"] / first["broker_only_per_s"] if first["broker_only_per_s"] else 0.0
        checks.append({"name": f"{engine}: ingest rate at {last['devices']:,} devices / at {first['devices']:,} "
                               "(peer: broker-only rate, same ratio)",
                       "target": f">= {KEEP_TARGET} and 0 lost", "measured": round(kept, 3),
                       "peer": round(peer_kept, 3), "unit": "",
                       "ratio": round(kept / peer_kept, 3) if peer_kept else None,
                       "pass": kept >= KEEP_TARGET and all(p["lost"] == 0 for p in points)})
        checks.append({"name": f"{engine}: ingest windows/s at {last['devices']:,} devices vs broker-only",
                       "target": ">= 4,000/s and 0 lost (telemetry_ingest's target)",
                       "measured": last["ingest_per_s"], "peer": last["broker_only_per_s"], "unit": "/s",
                       "ratio": round(last["ingest_per_s"] / last["broker_only_per_s"], 3)
                       if last["broker_only_per_s"] else None,
                       "pass": last["ingest_per_s"] >= 4000 and last["lost"] == 0})
    png = draw(curves, device_counts, args.windows, args.consumers, args.quick)
    path = write_results(NAME, {
        "title": "Telemetry ingest rate vs devices (broker-only rate at each size, same run)",
        "target": f"rate at the largest device count >= {KEEP_TARGET}x the rate at the smallest, zero loss",
        "measured": checks[0]["measured"], "peer": checks[0]["peer"], "ratio": checks[0]["ratio"],
        "ratio_note": "rate kept (largest/smallest device count), Edgeloop / broker-only",
        "pass": all(c["pass"] for c in checks), "checks": checks, "plot": png.name,
        "config": {"windows_per_point": args.windows, "devices": device_counts, "consumers": args.consumers,
                   "engines": engines, "quick": args.quick, "batch_size": TelemetrySettings().batch_size,
                   "publisher": "one paho MQTT 3.1.1 client, QoS 1, 100 in flight, as fast as it can",
                   "peer": "same publisher, same number of paho MQTT 5 subscribers on the shared subscription, "
                           "orjson.loads only",
                   "mosquitto": "private, tuned (max_queued_messages 100000, max_inflight_messages 100, "
                                "set_tcp_nodelay true), no persistence; fresh broker and database per point"},
        "details": curves,
        "host": host(load_start),
    }, quick=args.quick)
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
