#!/usr/bin/env python3
"""The sink's footprint, measured from outside: time from exec to the `ready` line, resident
memory when idle, and `swallow --help`'s time, over several starts (median and range).

    python3 Benchmarks/footprint.py                      # .build/release/swallow, 10 starts
    python3 Benchmarks/footprint.py --binary dist/swallow --runs 20
    python3 Benchmarks/footprint.py --held 0             # skip the held-messages case

Each start is `swallow serve --smtp 127.0.0.1:0 --http 127.0.0.1:0` (in memory, no config);
the idle RSS is the highest VmRSS sampled every 0.25 s from 0.25 s to 5 s after `ready`, with
nothing connected (until 2026-12-07 one sample a second after `ready`, which came before the
sink's first timers had run: they mapped ~3 MiB more a moment later); "after use" is VmRSS
after one message over SMTP and one `GET /api/v1/messages`. RSS counts the pages
of the binary and its libraries that the process has mapped, which depends on the kernel's
page cache as well as on the program: compare figures of one run.

Then the held case: one sink with `--max-messages N`, N messages of 1 KiB sent by Postfix's
smtp-source (20 sessions), and VmRSS compared with the raw bytes stored (`smtp.acceptedBytes` of
`/api/v1/stats`): the target is RSS <= 1.3 x raw + 40 MiB.
"""
import argparse
import json
import os
import smtplib
import statistics
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(binary, extra):
    started = time.perf_counter()
    proc = subprocess.Popen(
        [binary, "serve", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "error"] + extra,
        stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        ready = time.perf_counter() - started
        if not line.startswith("ready "):
            raise RuntimeError(f"swallow did not start: {line!r}")
        idle = 0.0
        for _ in range(20):
            time.sleep(0.25)
            idle = max(idle, rss_kib(proc.pid) / 1024)
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        smtp_host, smtp_port = fields["smtp"].rsplit(":", 1)
        with smtplib.SMTP(smtp_host, int(smtp_port), timeout=10) as client:
            client.sendmail("a@example.com", ["b@example.com"], "Subject: footprint\r\n\r\nhello\r\n")
        with urllib.request.urlopen(f"http://{fields['http']}/api/v1/messages", timeout=10) as response:
            response.read()
        return ready * 1000, idle, rss_kib(proc.pid) / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def held(binary, count, extra):
    proc = subprocess.Popen(
        [binary, "serve", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "error",
         "--max-messages", str(count)] + extra, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        subprocess.run(["smtp-source", "-s", "20", "-l", "1024", "-m", str(count), "-d", fields["smtp"]],
                       check=True, stdout=subprocess.DEVNULL, timeout=600)
        with urllib.request.urlopen(f"http://{fields['http']}/api/v1/stats", timeout=30) as response:
            stats = json.load(response)
        time.sleep(2)
        return stats, rss_kib(proc.pid) / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def help_ms(binary):
    started = time.perf_counter()
    subprocess.run([binary, "--help"], check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000


def describe(values, unit):
    return f"{statistics.median(values):.1f} {unit} ({min(values):.1f}-{max(values):.1f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "swallow"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--serve-args", default="", help="extra arguments for swallow serve")
    parser.add_argument("--held", type=int, default=100000, help="messages of 1 KiB to hold (0: skip)")
    options = parser.parse_args()
    ready, rss, used, helps = [], [], [], []
    for _ in range(options.runs):
        r, m, u = start(options.binary, options.serve_args.split())
        ready.append(r)
        rss.append(m)
        used.append(u)
        helps.append(help_ms(options.binary))
    print(f"# {options.binary} serve {options.serve_args}, {options.runs} starts, median (range)")
    print(f"exec to ready   {describe(ready, 'ms')}")
    print(f"idle RSS        {describe(rss, 'MiB')}")
    print(f"after use RSS   {describe(used, 'MiB')}")
    print(f"--help          {describe(helps, 'ms')}")
    if options.held:
        stats, rss = held(options.binary, options.held, options.serve_args.split())
        raw = stats["smtp"]["acceptedBytes"] / (1 << 20)
        limit = 1.3 * raw + 40
        print(f"held {stats['messages']} messages of 1 KiB: raw {raw:.1f} MiB, RSS {rss:.1f} MiB "
              f"({rss / raw:.2f}x raw; target <= 1.3 x raw + 40 = {limit:.1f} MiB: {'met' if rss <= limit else 'not met'})")


if __name__ == "__main__":
    main()
