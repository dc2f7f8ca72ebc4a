#!/usr/bin/env python3
"""Soak: hours of steady mail against `swallow serve --data`, watching memory and accounting.

    swift build -c release
    python3 Benchmarks/soak.py                    # one hour at 500 msg/s
    python3 Benchmarks/soak.py --duration 300     # a short run

`swallow load` sends a steady mix of OTP mails and invoices with a 200 KiB PDF (90/10) at
--rate to `swallow serve --data DIR --max-messages 20000`. Meanwhile the API is listed and
searched every second and an event-stream (SSE) client stays attached. The sink's RSS is
sampled every 10 s. At the end it prints the RSS over time and its growth over the last 30
minutes (the last half of shorter runs), and checks that every message the load generator
saw accepted was either stored or counted as evicted. Exit 0 when growth is under 5% and
the accounting holds.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCENARIO = """\
name: soak
duration: {duration}s
arrival: {{kind: constant, rate: {rate}/s}}
connection: {{pool: 10, per_connection: 200}}
mix:
  - {{template: otp, weight: 90}}
  - {{template: invoice, weight: 10}}
templates:
  otp:
    from: "Bank <no-reply@bank.example>"
    to: "user{{seq}}@example.com"
    subject: "Your login code is {{otp:6}}"
    text: "Your code is {{otp}}. It expires in 5 minutes."
    html: "<p>Your code is <b>{{otp}}</b></p>"
  invoice:
    from: billing@shop.example
    to: "customer{{seq}}@example.com"
    subject: "Invoice {{seq}}"
    html: "<p>Amount due: {{amount}}</p>"
    attachments: [{{kind: pdf, name: "invoice-{{seq}}.pdf", size: 200KiB}}]
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def get(base, path, timeout=10):
    with urllib.request.urlopen(base + path, timeout=timeout) as response:
        return response.status, response.read()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=3600, help="seconds of load (default 3600)")
    parser.add_argument("--rate", type=int, default=500, help="messages per second (default 500)")
    parser.add_argument("--swallow", default=os.path.join(ROOT, ".build/release/swallow"))
    parser.add_argument("--max-messages", type=int, default=20000)
    options = parser.parse_args()
    if not os.access(options.swallow, os.X_OK):
        sys.exit(f"{options.swallow} is missing: run `swift build -c release` first")

    work = tempfile.mkdtemp(prefix="swallow-soak-")
    data = os.path.join(work, "data")
    serve = subprocess.Popen(
        [options.swallow, "serve", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data", data,
         "--max-messages", str(options.max_messages), "--log-level", "warning"],
        stdout=subprocess.PIPE, text=True)
    stop = threading.Event()
    try:
        ready = serve.stdout.readline()
        ports = dict(field.split("=", 1) for field in ready.split()[1:])
        smtp, base = ports["smtp"], "http://" + ports["http"]
        print(f"soak: {ready.strip()}, {options.rate} msg/s for {options.duration} s, data in {data}", flush=True)

        samples = []          # (seconds since start, RSS KiB)
        api = {"requests": 0, "errors": 0, "latencies": []}
        events = {"message": 0}
        started = time.monotonic()

        def sample():
            while not stop.is_set():
                samples.append((time.monotonic() - started, rss_kib(serve.pid)))
                stop.wait(10)

        def poll_api():
            query = urllib.parse.quote("subject:code")
            while not stop.is_set():
                for path in ["/api/v1/messages?limit=50", f"/api/v1/search?query={query}&limit=50"]:
                    t0 = time.monotonic()
                    try:
                        status, _ = get(base, path)
                        api["requests"] += 1
                        if status != 200:
                            api["errors"] += 1
                    except Exception:
                        api["errors"] += 1
                    api["latencies"].append((time.monotonic() - t0) * 1000)
                stop.wait(1)

        def listen():
            while not stop.is_set():
                try:
                    with urllib.request.urlopen(base + "/api/v1/events", timeout=60) as stream:
                        for line in stream:
                            if stop.is_set():
                                return
                            if line.startswith(b"event: message"):
                                events["message"] += 1
                except Exception:
                    stop.wait(1)

        threads = [threading.Thread(target=f, daemon=True) for f in (sample, poll_api, listen)]
        for thread in threads:
            thread.start()

        scenario = os.path.join(work, "soak.yaml")
        with open(scenario, "w") as file:
            file.write(SCENARIO.format(duration=options.duration, rate=options.rate))
        report_path = os.path.join(work, "report.json")
        load = subprocess.run([options.swallow, "load", scenario, "--target", smtp, "--report", report_path, "--quiet"],
                              capture_output=True, text=True)
        time.sleep(2)  # let the index and the event stream catch up before the final reads
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        samples.append((time.monotonic() - started, rss_kib(serve.pid)))

        report = json.load(open(report_path))
        stats = json.loads(get(base, "/api/v1/stats")[1])
    finally:
        stop.set()
        serve.terminate()
        serve.wait(timeout=30)

    accepted = report["accepted"]
    smtp_accepted = stats["smtp"]["accepted"]
    stored, evicted, deleted = stats["messages"], stats["evicted"], stats["deleted"]
    print(f"load: exit {load.returncode}, sent {report['sent']}, accepted {accepted}, rejected {report['rejected']}, "
          f"failed {report['failed']}, achieved {report['rate']['achieved']:.1f} msg/s, "
          f"submit p50 {report['submit_latency_ms']['p50']:.2f} ms p99 {report['submit_latency_ms']['p99']:.2f} ms")
    print(f"sink: accepted {smtp_accepted}, stored {stored} + evicted {evicted} + deleted {deleted} = "
          f"{stored + evicted + deleted}; degraded: {stats.get('degraded')}")
    latencies = sorted(api["latencies"]) or [0]
    print(f"api: {api['requests']} requests, {api['errors']} errors, p50 {statistics.median(latencies):.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1 if len(latencies) > 1 else 0]:.1f} ms, max {latencies[-1]:.1f} ms")
    print(f"events: {events['message']} message events received")

    print("rss (MiB) every ~5 min: " + ", ".join(
        f"{t / 60:.0f}m {kib / 1024:.1f}" for t, kib in samples[::30]) + f", end {samples[-1][1] / 1024:.1f}")
    total = samples[-1][0]
    window = min(1800, total / 2)
    head = [kib for t, kib in samples if total - window - 30 <= t <= total - window + 30] or [samples[0][1]]
    tail = [kib for t, kib in samples if t >= total - 60] or [samples[-1][1]]
    start_rss, end_rss = statistics.median(head), statistics.median(tail)
    growth = (end_rss - start_rss) / start_rss * 100
    print(f"rss growth over the last {window / 60:.0f} minutes: {start_rss / 1024:.1f} -> {end_rss / 1024:.1f} MiB "
          f"({growth:+.1f}%), peak {max(k for _, k in samples) / 1024:.1f} MiB")

    failures = []
    if smtp_accepted != accepted:
        failures.append(f"the sink counted {smtp_accepted} accepted, the load generator {accepted}")
    if stored + evicted + deleted != smtp_accepted:
        failures.append(f"{smtp_accepted - stored - evicted - deleted} accepted messages neither stored nor evicted")
    if stored > options.max_messages:
        failures.append(f"{stored} stored, over --max-messages {options.max_messages}")
    if growth >= 5:
        failures.append(f"RSS grew {growth:.1f}% (limit 5%)")
    if api["errors"]:
        failures.append(f"{api['errors']} API requests failed")
    if stats.get("degraded"):
        failures.append(f"storage degraded: {stats['degraded']}")
    shutil.rmtree(work, ignore_errors=True)
    for failure in failures:
        print("FAIL: " + failure)
    print("soak: " + ("passed" if not failures else "failed"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
