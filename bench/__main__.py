"""Run every benchmark, or those named on the command line, and write their JSON results."""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS = ("api", "startup", "telemetry", "scheduler", "recovery")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark: {', '.join(sorted(unknown))}")
    RESULTS.mkdir(exist_ok=True)
    for name in args.names or BENCHMARKS:
        module = __import__(f"bench.{name}", fromlist=["run"])
        started = time.time()
        result = module.run()
        result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
        result["ran_at"] = started
        path = RESULTS / f"{name}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        sys.stdout.write(f"{name}: {json.dumps(result['summary'])}\n  -> {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
