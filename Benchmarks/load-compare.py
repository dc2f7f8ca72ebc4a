#!/usr/bin/env python3
"""The load generator against Postfix's smtp-source, with Postfix's smtp-sink as the server.

Cases (each: smtp-source and `swallow load` alternating, ROUNDS rounds, whole commands timed,
process start included; the median of each and the ratio, with every round's figures):

  persistent   20 connections kept open, 1 KiB messages (`smtp-source -d -s 20 -l 1024`;
               swallow: a closed scenario of 20 senders, PIPELINING as the server offers it)
  per-message  a new connection per message, 20 at a time (`smtp-source -s 20 -l 1024`;
               swallow: `per_connection: 1`)
  200k         20 connections, 200 KiB messages (`smtp-source -d -s 20 -l 204800`; swallow: an
               invoice template with a 145 KiB PDF attachment: 200 KiB in all, as base64 lines)
  cpu          CPU (user + system) per message of each program in the persistent case
  open-loop    a constant 20 000 msg/s for 10 s: achieved rate against the target and the
               schedule lag (scheduled time to first byte)

    python3 Benchmarks/load-compare.py [--count 20000] [--rounds 5] [--cases persistent,per-message,200k,open-loop]

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


def timed(command):
    """Runs a command to the end: (wall seconds, CPU seconds of user + system)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def scenario(path, count, template, connection="pool: 20, per_connection: 0"):
    with open(path, "w") as f:
        f.write(f"""count: {count}
arrival: {{kind: closed, senders: 20}}
connection: {{{connection}}}
templates:
  {template}
""")
    return path


def compare(name, rounds, count, source_command, load_command):
    source, load = [], []
    for _ in range(rounds):
        source.append(timed(source_command))
        load.append(timed(load_command))
    source_rate = statistics.median(count / wall for wall, _ in source)
    load_rate = statistics.median(count / wall for wall, _ in load)
    source_cpu = statistics.median(cpu / count * 1e6 for _, cpu in source)
    load_cpu = statistics.median(cpu / count * 1e6 for _, cpu in load)
    spread = lambda runs: ", ".join(f"{count / wall:.0f}" for wall, _ in runs)
    print(f"{name}: {count} messages, median of {rounds} alternating rounds")
    print(f"  smtp-source   {source_rate:8.0f} msg/s  {source_cpu:6.1f} us CPU/msg   rounds: {spread(source)}")
    print(f"  swallow load  {load_rate:8.0f} msg/s  {load_cpu:6.1f} us CPU/msg   rounds: {spread(load)}")
    print(f"  ratio         {load_rate / source_rate:8.2f}x msg/s  {load_cpu / source_cpu:6.2f}x CPU/msg")
    return {"source_msgs": source_rate, "load_msgs": load_rate, "ratio": load_rate / source_rate,
            "source_cpu_us": source_cpu, "load_cpu_us": load_cpu, "cpu_ratio": load_cpu / source_cpu}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", default="persistent,per-message,200k,open-loop")
    options = parser.parse_args()
    cases = options.cases.split(",")
    binary = os.path.join(ROOT, ".build", "release", "swallow")
    if not os.path.exists(binary):
        subprocess.run(["swift", "build", "-c", "release", "--product", "swallow"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="swallow-load-bench-")
    filler = 'filler: {from: a@bench.example, to: b@bench.example, subject: "Load {seq}", size: 1KiB}'
    sink, port = start_sink()
    target = f"127.0.0.1:{port}"
    load = lambda path: [binary, "load", path, "--target", target, "--quiet", "--seed", "1"]
    try:
        if "persistent" in cases:
            path = scenario(os.path.join(work, "persistent.yaml"), options.count, filler)
            compare("persistent, 20 connections x 1 KiB", options.rounds, options.count,
                    ["smtp-source", "-d", "-s", "20", "-l", "1024", "-m", str(options.count), target], load(path))
        if "per-message" in cases:
            count = options.count // 2
            path = scenario(os.path.join(work, "per-message.yaml"), count, filler, "pool: 20, per_connection: 1")
            compare("a connection per message, 20 at a time, 1 KiB", options.rounds, count,
                    ["smtp-source", "-s", "20", "-l", "1024", "-m", str(count), target], load(path))
        if "200k" in cases:
            count = max(500, options.count // 10)
            invoice = ('invoice: {from: billing@bench.example, to: "{user}", subject: "Invoice {seq}", '
                       'text: "Your invoice {seq} is attached.", '
                       'attachments: [{kind: pdf, name: "invoice-{seq}.pdf", size: 145KiB}]}')
            path = scenario(os.path.join(work, "invoice.yaml"), count, invoice)
            compare("20 connections x 200 KiB (a PDF invoice)", options.rounds, count,
                    ["smtp-source", "-d", "-s", "20", "-l", "204800", "-m", str(count), target], load(path))
        if "open-loop" in cases:
            path = os.path.join(work, "constant.yaml")
            with open(path, "w") as f:
                f.write("duration: 10s\narrival: {kind: constant, rate: 20000/s}\nconnection: {pool: 20, per_connection: 0}\n"
                        f"templates:\n  {filler}\n")
            report = os.path.join(work, "constant.json")
            subprocess.run(load(path) + ["--report", report], check=True, stdout=subprocess.DEVNULL, timeout=120)
            with open(report) as f:
                data = json.load(f)
            achieved, rate = data["rate"]["achieved"], data["rate"]["target"]
            lag = data["schedule_lag_ms"]
            print(f"open loop, constant 20 000/s for 10 s: sent {data['sent']}, achieved {achieved}/s "
                  f"({(achieved / rate - 1) * 100:+.2f}% of the target)")
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
