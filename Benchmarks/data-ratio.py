#!/usr/bin/env python3
"""The sink's SMTP throughput with `--data DIR --fsync batch` (or `--fsync always`) against in
memory, same run.

Postfix's smtp-source sends N 1 KiB messages over 20 persistent sessions (`-d -s 20 -l 1024`)
to a fresh `swallow serve` in memory, then to a fresh one writing to a new directory (or the
other way round: the order alternates round by round); prints each round's rates and the
median ratio. Directories are removed only at the end: ext4 creates files several times slower
for minutes after many were deleted, which would penalise the next round.

    python3 Benchmarks/data-ratio.py              # 7 rounds of 20 000 messages
    python3 Benchmarks/data-ratio.py --rounds 3 --count 50000
    python3 Benchmarks/data-ratio.py --fsync always

Everything listens on 127.0.0.1; every load is bounded by its count.
"""
import argparse
import importlib
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
peer = importlib.import_module("peer-compare")
api = importlib.import_module("api-latency")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--fsync", choices=["batch", "always", "never"], default="batch")
    options = parser.parse_args()
    binary = peer.ensure_tools()
    rates = {"memory": [], "data": []}
    directories = []
    try:
        for round_index in range(options.rounds):
            order = ["memory", "data"] if round_index % 2 == 0 else ["data", "memory"]
            for mode in order:
                extra = ["--max-messages", "0"]
                if mode == "data":
                    directories.append(tempfile.mkdtemp(prefix="swallow-ratio-"))
                    extra += ["--data", directories[-1], "--fsync", options.fsync]
                proc, smtp, _ = api.start(binary, extra)
                try:
                    rates[mode].append(api.fill(smtp, options.count))
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
    finally:
        for directory in directories:
            shutil.rmtree(directory, ignore_errors=True)
    ratios = [d / m for d, m in zip(rates["data"], rates["memory"])]
    memory, data = statistics.median(rates["memory"]), statistics.median(rates["data"])
    print(f"# smtp-source -d -s 20 -l 1024 -m {options.count}, {options.rounds} alternating rounds")
    print(f"  in memory              {', '.join(f'{r:.0f}' for r in rates['memory'])} msg/s; median {memory:.0f}")
    print(f"  --data --fsync {options.fsync:<7} {', '.join(f'{r:.0f}' for r in rates['data'])} msg/s; median {data:.0f}")
    print(f"  ratio of medians {data / memory:.2f}x; per round {', '.join(f'{r:.2f}' for r in ratios)} (min {min(ratios):.2f})")


if __name__ == "__main__":
    main()
