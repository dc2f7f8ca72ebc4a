#!/usr/bin/env python3
"""HTTP API latency with many stored messages, and SMTP throughput with and without --data.

Fills a fresh `swallow serve --data DIR --fsync batch` with N messages from Postfix's
smtp-source (1 KiB, 20 sessions, numbered recipients), then times, over one keep-alive HTTP
connection, the first page of `GET /api/v1/messages` and two searches (a selective one on a
recipient, and a free-text term every message holds). Prints median and p95 in ms.

    python3 Benchmarks/api-latency.py              # 100 000 messages
    python3 Benchmarks/api-latency.py --count 20000

Everything listens on 127.0.0.1; the load is bounded by its count.
"""
import argparse
import http.client
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
peer = importlib.import_module("peer-compare")


def start(binary, extra):
    proc = subprocess.Popen([binary, "serve", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "error"] + extra,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    return proc, int(fields["smtp"].rsplit(":", 1)[1]), int(fields["http"].rsplit(":", 1)[1])


def fill(port, count):
    # Timed by peer-compare's `run_timed`: its end seen at once, not up to 50 ms late.
    wall = peer.run_timed(["smtp-source", "-s", "20", "-l", "1024", "-m", str(count), "-d", "-N", "-t", "user@bench.example",
                           f"127.0.0.1:{port}"], timeout=3600)
    return count / wall


def timed(connection, path, rounds):
    samples = []
    body = None
    for _ in range(rounds):
        started = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, (path, response.status, body[:200])
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)], json.loads(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=50)
    options = parser.parse_args()
    binary = os.path.join(ROOT, ".build", "release", "swallow")
    if not os.path.exists(binary):
        subprocess.run(["swift", "build", "-c", "release", "--product", "swallow"], cwd=ROOT, check=True)

    # SMTP throughput for the same load, in memory and with --data --fsync batch, same run.
    throughput = {}
    scratch = tempfile.mkdtemp(prefix="swallow-bench-")
    for name, extra in [("memory", []), ("--data --fsync batch", ["--data", scratch, "--fsync", "batch"])]:
        proc, smtp, _ = start(binary, extra + ["--max-messages", "0"])
        throughput[name] = fill(smtp, 20_000)
        proc.terminate()
        proc.wait()
    print(f"SMTP, 20 000 x 1 KiB, 20 sessions: memory {throughput['memory']:.0f} msg/s, "
          f"--data --fsync batch {throughput['--data --fsync batch']:.0f} msg/s "
          f"({throughput['--data --fsync batch'] / throughput['memory']:.2f}x)")

    directory = tempfile.mkdtemp(prefix="swallow-bench-")
    proc, smtp, http_port = start(binary, ["--data", directory, "--fsync", "batch", "--max-messages", "0"])
    try:
        rate = fill(smtp, options.count)
        connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=600)
        started = time.perf_counter()
        _, _, first = timed(connection, "/api/v1/messages?limit=1", 1)  # waits for the index to catch up
        caught_up = time.perf_counter() - started
        print(f"filled {first['total']} messages at {rate:.0f} msg/s; index caught up {caught_up:.1f} s after the last 250")
        for label, path, rounds in [
            ("list, first page (50)", "/api/v1/messages?limit=50", options.rounds),
            ("search bcc:<one envelope recipient>", "/api/v1/search?query=bcc:" + str(options.count // 2) + "user@", options.rounds),
            ("search subject:<absent word>", "/api/v1/search?query=subject:invoice", options.rounds),
            ("search free text, one message", "/api/v1/search?query=" + str(options.count // 3) + "user@", options.rounds),
            ("search free text in every message", "/api/v1/search?query=xxxxxx&limit=50", 3),
        ]:
            median, p95, body = timed(connection, path, rounds)
            print(f"{label:<36} median {median:7.1f} ms   p95 {p95:7.1f} ms   matches {body.get('messages_count')}")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
