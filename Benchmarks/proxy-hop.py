"""What a Swallow proxy (`swallow serve --upstream`) costs in front of a server: `swallow load`
straight to Postfix's smtp-sink, against `swallow load` -> Swallow proxy -> smtp-sink, in the
same run, alternating (A B A B ...), 1 KiB messages.

  throughput  a closed scenario of 20 senders over 20 persistent connections, COUNT messages:
              messages per second, whole command timed (process start included)
  latency     a constant RATE msg/s for COUNT messages: submission latency p50/p99 (scheduled to
              the final 250, as the client sees it) each way; through the proxy also the
              proxy's upstream share (`relay_latency_ms`, read from the proxy's event stream)

    python3 Benchmarks/proxy-hop.py [--count 10000] [--rounds 5] [--rate 1000]

Needs a release build (built if missing) and Postfix's smtp-sink. Everything listens on
127.0.0.1; every run is bounded by its count.
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


def wait_listening(port):
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f"nothing listens on {port}")


def scenario(path, count, arrival):
    with open(path, "w") as f:
        f.write(f"""count: {count}
arrival: {arrival}
connection: {{pool: 20, per_connection: 0}}
templates:
  filler: {{from: a@bench.example, to: b@bench.example, subject: "Load {{seq}}", size: 1KiB}}
""")
    return path


def run_load(binary, path, target, report, sink=None):
    command = [binary, "load", path, "--target", target, "--quiet", "--seed", "1", "--report", report]
    if sink:
        command += ["--sink", sink, "--grace", "20s"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    with open(report) as f:
        return wall, json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=int, default=1000)
    options = parser.parse_args()
    binary = os.path.join(ROOT, ".build", "release", "swallow")
    if not os.path.exists(binary):
        subprocess.run(["swift", "build", "-c", "release", "--product", "swallow"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="swallow-proxy-bench-")
    sink_port = free_port()
    sink = subprocess.Popen(["/usr/sbin/smtp-sink"] + (["-u", "nobody"] if os.getuid() == 0 else []) + [f"127.0.0.1:{sink_port}", "256"])
    smtp, http = free_port(), free_port()
    # Bodies discarded would forbid --upstream; --max-messages bounds the proxy's memory.
    proxy = subprocess.Popen([binary, "serve", "--smtp", f"127.0.0.1:{smtp}", "--http", f"127.0.0.1:{http}", "--upstream",
                              f"smtp://127.0.0.1:{sink_port}?tls=none", "--max-messages", "20000", "--log-level", "error"],
                             stdout=subprocess.DEVNULL)
    try:
        wait_listening(sink_port)
        wait_listening(smtp)
        direct_target, proxy_target = f"127.0.0.1:{sink_port}", f"127.0.0.1:{smtp}"
        closed = scenario(os.path.join(work, "closed.yaml"), options.count, "{kind: closed, senders: 20}")
        report = os.path.join(work, "report.json")
        direct, proxied = [], []
        for _ in range(options.rounds):
            direct.append(options.count / run_load(binary, closed, direct_target, report)[0])
            proxied.append(options.count / run_load(binary, closed, proxy_target, report)[0])
        print(f"throughput: {options.count} x 1 KiB, 20 persistent connections, median of {options.rounds} alternating rounds")
        print(f"  load -> smtp-sink          {statistics.median(direct):8.0f} msg/s   rounds: {', '.join(f'{r:.0f}' for r in direct)}")
        print(f"  load -> proxy -> smtp-sink {statistics.median(proxied):8.0f} msg/s   rounds: {', '.join(f'{r:.0f}' for r in proxied)}")
        print(f"  ratio                      {statistics.median(proxied) / statistics.median(direct):8.2f}x")

        count = min(options.count, options.rate * 10)
        steady = scenario(os.path.join(work, "steady.yaml"), count, f"{{kind: constant, rate: {options.rate}/s}}")
        rows = {"direct": [], "proxy": [], "relay": []}
        for _ in range(options.rounds):
            _, a = run_load(binary, steady, direct_target, report)
            rows["direct"].append(a["submit_latency_ms"])
            _, b = run_load(binary, steady, proxy_target, report, sink=f"http://127.0.0.1:{http}")
            rows["proxy"].append(b["submit_latency_ms"])
            if b.get("relay_latency_ms"):
                rows["relay"].append(b["relay_latency_ms"])
        med = lambda name, key: statistics.median(r[key] for r in rows[name]) if rows[name] else float("nan")
        print(f"latency: {count} x 1 KiB at {options.rate} msg/s, median of {options.rounds} alternating rounds (ms)")
        print(f"  {'':28}{'p50':>8}{'p99':>8}")
        print(f"  {'load -> smtp-sink':28}{med('direct', 'p50'):8.3f}{med('direct', 'p99'):8.3f}")
        print(f"  {'load -> proxy -> smtp-sink':28}{med('proxy', 'p50'):8.3f}{med('proxy', 'p99'):8.3f}")
        print(f"  {'  of which the upstream':28}{med('relay', 'p50'):8.3f}{med('relay', 'p99'):8.3f}")
        print(f"  {'added by the proxy hop':28}{med('proxy', 'p50') - med('direct', 'p50'):8.3f}{med('proxy', 'p99') - med('direct', 'p99'):8.3f}")
    finally:
        for proc in (proxy, sink):
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
