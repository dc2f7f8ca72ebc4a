#!/usr/bin/env python3
"""The load generator against Postfix: raw speed next to smtp-source, and rate accuracy.

1. Raw speed: 20 connections, 1 KiB messages, as fast as the server answers, against
   Postfix's smtp-sink: `smtp-source -d -s 20 -l 1024 -m N` and `swallow load` with a closed
   scenario of 20 senders (one template padded to 1 KiB), alternating, ROUNDS rounds; prints
   messages/s of each and the ratio (whole commands timed, process start included).
2. Rate accuracy: a constant 2 000 msg/s scenario for 20 s against smtp-sink; prints the
   achieved rate against the target and the schedule lag (scheduled time to first byte).

    python3 Benchmarks/load-compare.py [--count 20000] [--rounds 3]

Needs a release build (built if missing) and Postfix's smtp-sink/smtp-source (Debian's
postfix). Everything listens on 127.0.0.1; every run is bounded by count or duration.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink():
    port = free_port()
    command = ["/usr/sbin/smtp-sink"] + (["-u", "nobody"] if os.getuid() == 0 else []) + [f"127.0.0.1:{port}", "256"]
    proc = subprocess.Popen(command)
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.01)
    raise SystemExit("smtp-sink did not start")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    binary = os.path.join(ROOT, ".build", "release", "swallow")
    if not os.path.exists(binary):
        subprocess.run(["swift", "build", "-c", "release", "--product", "swallow"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="swallow-load-bench-")
    closed = os.path.join(work, "closed.yaml")
    with open(closed, "w") as f:
        f.write(f"""count: {options.count}
arrival: {{kind: closed, senders: 20}}
connection: {{pool: 20, per_connection: 0}}
templates:
  filler: {{from: a@bench.example, to: b@bench.example, subject: "Load {{seq}}", size: 1KiB}}
""")
    constant = os.path.join(work, "constant.yaml")
    with open(constant, "w") as f:
        f.write("""duration: 20s
arrival: {kind: constant, rate: 2000/s}
connection: {pool: 20, per_connection: 0}
templates:
  filler: {from: a@bench.example, to: b@bench.example, subject: "Load {seq}", size: 1KiB}
""")
    sink, port = start_sink()
    try:
        source_rates, load_rates = [], []
        for _ in range(options.rounds):
            started = time.perf_counter()
            subprocess.run(["smtp-source", "-d", "-s", "20", "-l", "1024", "-m", str(options.count), f"127.0.0.1:{port}"],
                           check=True, timeout=600)
            source_rates.append(options.count / (time.perf_counter() - started))
            started = time.perf_counter()
            subprocess.run([binary, "load", closed, "--target", f"127.0.0.1:{port}", "--quiet", "--seed", "1"],
                           check=True, stdout=subprocess.DEVNULL, timeout=600)
            load_rates.append(options.count / (time.perf_counter() - started))
        source, load = statistics.median(source_rates), statistics.median(load_rates)
        print(f"raw speed, 20 connections x 1 KiB, {options.count} messages, median of {options.rounds}:")
        print(f"  smtp-source   {source:8.0f} msg/s")
        print(f"  swallow load  {load:8.0f} msg/s   ratio {load / source:.2f}x")

        report = os.path.join(work, "constant.json")
        subprocess.run([binary, "load", constant, "--target", f"127.0.0.1:{port}", "--quiet", "--seed", "1", "--report", report],
                       check=True, stdout=subprocess.DEVNULL, timeout=120)
        with open(report) as f:
            data = json.load(f)
        achieved, target = data["rate"]["achieved"], data["rate"]["target"]
        lag = data["schedule_lag_ms"]
        print(f"rate accuracy, constant 2000/s for 20 s: sent {data['sent']}, achieved {achieved}/s "
              f"({(achieved / target - 1) * 100:+.2f}% of the target)")
        print(f"  schedule lag ms: p50 {lag['p50']}  p99 {lag['p99']}  max {lag['max']};  "
              f"submit latency ms: p50 {data['submit_latency_ms']['p50']}  p99 {data['submit_latency_ms']['p99']}")
    finally:
        sink.kill()
        sink.wait()
        for name in os.listdir(work):
            os.remove(os.path.join(work, name))
        os.rmdir(work)


if __name__ == "__main__":
    main()
