#!/usr/bin/env python3
"""Swallow's sink against Postfix's smtp-sink, driven by Postfix's smtp-source, in one run.

For each case (message size x sessions x connection mode) it starts a fresh sink, sends the
same load with smtp-source, and records for that sink process: messages/s (wall clock),
CPU microseconds per message (user+sys of the sink process / messages, from /proc), and peak
RSS (VmHWM). The two sinks alternate, case by case and round by round, so both see the same
machine. Swallow really stores every message (memory store); smtp-sink stores nothing.

    python3 Benchmarks/peer-compare.py            # full run (a few minutes)
    python3 Benchmarks/peer-compare.py --quick    # smaller counts
    python3 Benchmarks/peer-compare.py --cases "1KiB x1,200KiB x20 conn"   # some cases only
    python3 Benchmarks/peer-compare.py --swallow-args "--data /tmp/d --fsync batch"

Everything listens on 127.0.0.1 and every load is bounded by its message count.
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def ensure_tools():
    if shutil.which("smtp-source") is None or shutil.which("smtp-sink") is None:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        print("installing postfix (for smtp-source and smtp-sink)", file=sys.stderr)
        subprocess.run(sudo + ["sh", "-c", "echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections"], check=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "postfix"], check=True, env=env, stdout=subprocess.DEVNULL)
    binary = os.path.join(ROOT, ".build", "release", "swallow")
    if not os.path.exists(binary):
        subprocess.run(["swift", "build", "-c", "release", "--product", "swallow"], cwd=ROOT, check=True)
    return binary


def run_timed(args, timeout):
    """Runs `args` to its end (stdout discarded) and returns the wall seconds it took. Its end
    is seen at once: `subprocess.run(..., timeout=...)` polls the child with sleeps that grow
    to 50 ms, which put every measured time up to 50 ms late, in 50 ms steps (20 000 messages
    at 32 400 msg/s were measured as 30 000). A timer kills the child past `timeout`, so a
    load is still bounded."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        returncode = proc.wait()
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, args)
    return wall


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the full line (11 and 12 after the name).
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Swallow:
    name = "swallow"

    def __init__(self, binary, extra):
        self.binary = binary
        self.extra = extra

    def start(self, messages):
        args = [self.binary, "serve", "--smtp", "127.0.0.1:0", "--max-messages", str(messages + 10), "--log-level", "error"]
        self.proc = subprocess.Popen(args + self.extra, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready smtp="):
            raise RuntimeError(f"swallow did not start: {line!r}")
        self.port = int(line.split()[1].rsplit(":", 1)[1])
        return self.proc.pid

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class SmtpSink:
    name = "smtp-sink"

    def start(self, messages):
        self.port = free_port()
        args = ["smtp-sink", "-u", "nobody", "-m", "1000", f"127.0.0.1:{self.port}", "1024"]
        if os.geteuid() != 0:
            args = ["smtp-sink", "-m", "1000", f"127.0.0.1:{self.port}", "1024"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port)
        return self.proc.pid

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def run_case(sink, size, sessions, persistent, messages):
    pid = sink.start(messages)
    try:
        cpu_before = cpu_seconds(pid)
        args = ["smtp-source", "-s", str(sessions), "-l", str(size), "-m", str(messages)]
        if persistent:
            args.append("-d")
        args.append(f"127.0.0.1:{sink.port}")
        wall = run_timed(args, timeout=600)
        cpu = cpu_seconds(pid) - cpu_before
        rss = peak_rss_kib(pid)
    finally:
        sink.stop()
    return {"rate": messages / wall, "cpu_us": cpu * 1e6 / messages, "rss_mib": rss / 1024}


def case_name(size, label, sessions, persistent, messages):
    return f"{label} x{sessions} {'persistent' if persistent else 'conn/msg'} ({messages})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller message counts")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per case (median reported)")
    parser.add_argument("--swallow-args", default="", help="extra arguments for swallow serve")
    parser.add_argument("--cases", default="", help="only the cases whose name contains one of these comma-separated texts, "
                        "e.g. '1KiB x1,200KiB x20 conn'")
    options = parser.parse_args()

    binary = ensure_tools()
    swallow = Swallow(binary, options.swallow_args.split())
    peer = SmtpSink()
    scale = 0.25 if options.quick else 1.0
    cases = []
    for size, label in [(1024, "1KiB"), (200 * 1024, "200KiB")]:
        for sessions in (1, 20):
            for persistent in (True, False):
                # 1 KiB at one session: 50 000 messages, ~1.5 s of the sink's CPU, 150 clock ticks
                # of /proc (20 000 were 60: one tick moved the CPU ratio ~1.6%). /proc/PID/stat
                # is kept over the threads' schedstat: it counts threads that ended meanwhile
                # (14 short-lived ones in a 200 KiB run, half the sink's CPU there).
                base = (50000 if sessions == 1 else 20000) if size == 1024 else (2000 if sessions == 20 else 500)
                cases.append((size, label, sessions, persistent, max(50, int(base * scale))))
    wanted = [text.strip() for text in options.cases.split(",") if text.strip()]
    if wanted:
        cases = [case for case in cases if any(text in case_name(*case) for text in wanted)]

    print(f"# swallow serve {options.swallow_args} vs smtp-sink; smtp-source load; {options.rounds} rounds, median", flush=True)
    header = f"{'case':<28} {'sink':<10} {'msg/s':>9} {'cpu us/msg':>11} {'peak RSS MiB':>13}"
    print(header)
    print("-" * len(header))
    summary = []
    for size, label, sessions, persistent, messages in cases:
        results = {swallow.name: [], peer.name: []}
        for round_index in range(options.rounds):
            order = (swallow, peer) if round_index % 2 == 0 else (peer, swallow)
            for sink in order:
                results[sink.name].append(run_case(sink, size, sessions, persistent, messages))
        name = case_name(size, label, sessions, persistent, messages)
        medians = {}
        for sink_name, runs in results.items():
            medians[sink_name] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            m = medians[sink_name]
            print(f"{name:<28} {sink_name:<10} {m['rate']:>9.0f} {m['cpu_us']:>11.0f} {m['rss_mib']:>13.1f}", flush=True)
        ratio_rate = medians["swallow"]["rate"] / medians["smtp-sink"]["rate"]
        ratio_cpu = medians["swallow"]["cpu_us"] / max(medians["smtp-sink"]["cpu_us"], 1e-9)
        # The spread: each round's own ratio (swallow's run against the peer's of that round).
        rounds = [(a["rate"] / b["rate"], a["cpu_us"] / max(b["cpu_us"], 1e-9))
                  for a, b in zip(results["swallow"], results["smtp-sink"])]
        spread = (min(r for r, _ in rounds), max(r for r, _ in rounds))
        summary.append((name, ratio_rate, ratio_cpu, spread))
        print(f"{'':<28} {'ratio':<10} {ratio_rate:>8.2f}x {ratio_cpu:>10.2f}x   (msg/s per round {spread[0]:.2f}-{spread[1]:.2f}x)", flush=True)
    print()
    print("ratios swallow / smtp-sink (msg/s higher is better; cpu lower is better)")
    for name, rate, cpu, spread in summary:
        print(f"  {name:<28} msg/s {rate:5.2f}x ({spread[0]:.2f}-{spread[1]:.2f})   cpu/msg {cpu:5.2f}x")


if __name__ == "__main__":
    main()
