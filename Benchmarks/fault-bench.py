#!/usr/bin/env python3
"""The fault engine, measured: delay accuracy, probability, and the cost of rules that never fire.

1. Delay accuracy: `swallow serve` with a rule delaying every RCPT reply by 100 ms; N delayed
   replies over C concurrent connections (asyncio); prints the distribution of
   (measured - configured) and, measured in the same run with no rule, the plain round trip.
2. Probability: a rule answering 451 with probability 0.2 at RCPT; 10 000 RCPTs; prints how many
   fired against 2 000 +- 3 standard deviations.
3. Cost of rules that never fire: smtp-source (Postfix) against `swallow serve` with no rules
   and with 20 rules that never match (every phase, patterns, headers, rates), alternating,
   median of the rounds; prints msg/s and the ratio.

    python3 Benchmarks/fault-bench.py              # everything (about two minutes)
    python3 Benchmarks/fault-bench.py --only delay

Everything listens on 127.0.0.1; every load is bounded by its count.
"""
import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import importlib

peer = importlib.import_module("peer-compare")

NEVER_RULES = """rules:
  - {name: n1, match: {phase: connect, client: "10.9.*"}, action: {disconnect: true}}
  - {name: n2, match: {phase: greeting, client: "~^192\\\\.168\\\\."}, action: {delay: 1s}}
  - {name: n3, match: {phase: ehlo, helo: "never.example"}, action: {reply: "421 4.7.0 No"}}
  - {name: n4, match: {phase: mail, sender: "*@never.example"}, action: {reply: "550 5.7.1 No"}}
  - {name: n5, match: {phase: mail, sender: "bulk*@*"}, action: {reply: "451 4.3.0 No"}}
  - {name: n6, match: {phase: rcpt, recipient: "*@flaky.example"}, probability: 0.5, action: {reply: "451 4.3.0 No"}}
  - {name: n7, match: {phase: rcpt, recipient: "~^user[0-9]+@never"}, action: {reply: "550 5.1.1 No"}}
  - {name: n8, match: {phase: rcpt, recipient: "bounce-me@*"}, action: {reply: "550 5.1.1 No"}}
  - {name: n9, match: {phase: rcpt, client: "10.*"}, action: {greylist: {retry_after: 60s}}}
  - {name: n10, match: {phase: rcpt, recipient: "*@slow.example"}, action: {delay: 2s}}
  - {name: n11, match: {phase: data, sender: "*@never.example"}, action: {reply: "452 4.3.1 No"}}
  - {name: n12, match: {phase: data, recipient: "*@never.example"}, action: {hang: true}}
  - {name: n13, match: {phase: data-end, header: {X-Never: "*"}}, action: {drop: true}}
  - {name: n14, match: {phase: data-end, header: {Subject: "never*"}}, action: {reply: "554 5.7.1 No"}}
  - {name: n15, match: {phase: data-end, sender: "*@never.example"}, action: {delay: {distribution: lognormal, median: 200ms, p99: 2s}}}
  - {name: n16, match: {phase: data-end, recipient: "*@never.example"}, action: {disconnect: true}}
  - {name: n17, match: {phase: quit, helo: "never*"}, action: {reply: "421 4.3.2 No"}}
  - {name: n18, match: {phase: auth, client: "10.*"}, action: {reply: "454 4.7.0 No"}}
  - {name: n19, match: {phase: starttls, client: "10.*"}, action: {reply: "454 4.7.0 No"}}
  - {name: n20, match: {phase: connect, client: "10.*", rate: {over: 1000/s, per: client}}, action: {reply: "421 4.7.0 No"}}
"""


class Sink:
    def __init__(self, binary, args):
        self.proc = subprocess.Popen([binary, "serve", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "error"] + args,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready smtp="):
            raise RuntimeError(f"swallow did not start: {line!r}")
        self.port = int(line.split()[1].rsplit(":", 1)[1])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def read_reply(reader):
    while True:
        line = await reader.readline()
        if not line:
            raise RuntimeError("connection closed")
        if line[3:4] == b" ":
            return int(line[:3])


async def rcpt_connection(port, count, latencies, codes, offset=0.0):
    # Staggered starts, so the connections' delayed replies do not all land at once on this
    # one-threaded client (which would measure the client's queueing, not the sink).
    await asyncio.sleep(offset)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await read_reply(reader)
    for command in (b"EHLO bench\r\n", b"MAIL FROM:<app@bench.example>\r\n"):
        writer.write(command)
        await read_reply(reader)
    for i in range(count):
        started = time.perf_counter()
        writer.write(b"RCPT TO:<user%d@bench.example>\r\n" % i)
        await writer.drain()
        code = await read_reply(reader)
        latencies.append(time.perf_counter() - started)
        codes.append(code)
    writer.write(b"QUIT\r\n")
    await read_reply(reader)
    writer.close()


def rcpts(port, total, connections, spread=0.0):
    latencies, codes = [], []

    async def main():
        await asyncio.gather(*(rcpt_connection(port, total // connections, latencies, codes, spread * i / connections)
                               for i in range(connections)))

    asyncio.run(main())
    return latencies, codes


def percentiles(values, scale=1000.0):
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))] * scale
    return f"p50 {pick(0.5):.3f}  p90 {pick(0.9):.3f}  p99 {pick(0.99):.3f}  max {values[-1] * scale:.3f} (ms)"


def with_rules(binary, yaml, args=()):
    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    handle.write(yaml)
    handle.close()
    return Sink(binary, ["--faults", handle.name] + list(args)), handle.name


def delay_accuracy(binary, total, connections):
    sink = Sink(binary, ["--max-messages", "10"])
    try:
        baseline, _ = rcpts(sink.port, total, connections, spread=0.1)
    finally:
        sink.stop()
    sink, path = with_rules(binary, "rules:\n  - {name: d, match: {phase: rcpt}, action: {delay: 100ms}}\n")
    try:
        measured, _ = rcpts(sink.port, total, connections, spread=0.1)
    finally:
        sink.stop()
        os.unlink(path)
    errors = [m - 0.1 for m in measured]
    print(f"## delay accuracy: {len(measured)} RCPT replies delayed 100ms, {connections} connections (starts spread over 100ms)")
    print(f"   measured - configured: {percentiles(errors)}")
    print(f"   plain round trip (no rule, same run): {percentiles(baseline)}")


def probability(binary, total, connections):
    sink, path = with_rules(binary, "seed: 11\nrules:\n  - {name: p, match: {phase: rcpt}, probability: 0.2, action: {reply: \"451 4.3.0 p\"}}\n")
    try:
        _, codes = rcpts(sink.port, total, connections)
    finally:
        sink.stop()
        os.unlink(path)
    fired = codes.count(451)
    sigma = (total * 0.2 * 0.8) ** 0.5
    verdict = "within" if abs(fired - total * 0.2) <= 3 * sigma else "OUTSIDE"
    print(f"## probability 0.2 over {total} RCPTs: fired {fired}, expected {total * 0.2:.0f} +- {3 * sigma:.0f} (3 sd): {verdict}")


def rule_cost(binary, messages, rounds):
    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    handle.write(NEVER_RULES)
    handle.close()
    variants = {"no rules": [], "20 rules": ["--faults", handle.name]}
    results = {name: [] for name in variants}
    try:
        for round_index in range(rounds):
            order = list(variants.items())
            if round_index % 2:
                order.reverse()
            for name, args in order:
                sink = peer.Swallow(binary, args)
                results[name].append(peer.run_case(sink, 1024, 20, True, messages)["rate"])
    finally:
        os.unlink(handle.name)
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    print(f"## rules that never fire: smtp-source -s 20 -l 1024 -m {messages} -d, {rounds} rounds, median")
    for name, rate in medians.items():
        print(f"   {name:<9} {rate:>8.0f} msg/s   (rounds: {', '.join(f'{r:.0f}' for r in results[name])})")
    print(f"   ratio 20 rules / no rules: {medians['20 rules'] / medians['no rules']:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["delay", "probability", "cost"])
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    binary = peer.ensure_tools()
    if options.only in (None, "delay"):
        delay_accuracy(binary, 1000, 20)
    if options.only in (None, "probability"):
        probability(binary, 10_000, 10)
    if options.only in (None, "cost"):
        rule_cost(binary, 20_000, options.rounds)


if __name__ == "__main__":
    main()
