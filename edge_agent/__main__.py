"""Command line: `edgeloop-edge --config edge.toml` runs one device."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from edge_agent.config import ConfigError, load_config
from edge_agent.daemon import EdgeAgent
from edge_agent.telemetry_loop import TelemetryLoop

PAUSE_ENV = "EDGELOOP_EDGE_TEST_PAUSE_AT"
CRASH_ENV = "EDGELOOP_EDGE_TEST_CRASH_SHA256"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load config and run the agent until signalled."""
    parser = argparse.ArgumentParser(prog="edgeloop-edge", description="Run the Edgeloop edge agent.")
    parser.add_argument("--config", "-c", help="TOML config file (EDGELOOP_EDGE_* env vars override it)")
    parser.add_argument("--log-level", default=os.environ.get("EDGELOOP_EDGE_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as exc:
        print(f"edgeloop-edge: {exc}", file=sys.stderr)
        return 2
    # Test hooks only: block at a named point of the update so tests can kill -9 it, or play a model
    # that kills the agent whenever it is loaded.
    agent = EdgeAgent(config, pause_at=os.environ.get(PAUSE_ENV) or None,
                      crash_on_sha256=os.environ.get(CRASH_ENV) or None)
    telemetry = TelemetryLoop(agent)
    agent.run_forever(on_start=telemetry.start, on_stop=telemetry.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
