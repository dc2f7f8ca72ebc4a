#!/usr/bin/env python3
"""The web inbox's first page with many stored messages, measured in headless Chromium.

Fills a fresh `swallow serve` (in memory with no message limit, or `--data DIR`) with N
messages from Postfix's smtp-source, then loads `/` in headless Chromium (Tests/web/cdp.py)
R times and reports, from the page's own clock (`performance.now()`, zero at navigation
start), when the first page of the list was rendered.

    python3 Benchmarks/inbox-render.py                 # 100 000 messages, in memory
    python3 Benchmarks/inbox-render.py --data          # the same with --data (disk + index)

Everything listens on 127.0.0.1; the load is bounded by its count.
"""
import argparse
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "Tests", "web"))
peer = importlib.import_module("peer-compare")
api = importlib.import_module("api-latency")
from cdp import Chromium  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", action="store_true", help="store on disk with the index (--data DIR --fsync batch)")
    options = parser.parse_args()
    binary = peer.ensure_tools()
    directory = tempfile.mkdtemp(prefix="swallow-render-") if options.data else None
    extra = ["--max-messages", "0"] + (["--data", directory, "--fsync", "batch"] if directory else [])
    proc, smtp, http = api.start(binary, extra)
    try:
        rate = api.fill(smtp, options.count)
        base = f"http://127.0.0.1:{http}"
        deadline = time.time() + 600
        while json.load(urllib.request.urlopen(f"{base}/api/v1/messages?limit=1"))["messages_count"] < options.count:
            if time.time() > deadline:
                raise RuntimeError("the sink never held every message")
            time.sleep(0.2)
        samples = []
        with Chromium() as browser:
            for _ in range(options.rounds):
                browser.navigate("about:blank")
                browser.wait_for("location.href === 'about:blank'", "a blank page")
                browser.navigate(base + "/")
                rendered = browser.wait_for("window.swallowFirstRender", "the first page of the list", timeout=30)
                rows = browser.evaluate("document.querySelectorAll('#rows tr').length")
                shown = browser.evaluate("document.getElementById('range').textContent")
                assert rows == 50, (rows, shown)
                samples.append(rendered)
        store = f"--data (disk + index)" if directory else "in memory"
        print(f"# web inbox, {options.count} messages {store} (filled at {rate:.0f} msg/s), headless Chromium, {options.rounds} loads")
        print(f"  first page rendered after: median {statistics.median(samples):.0f} ms, max {max(samples):.0f} ms "
              f"(each: {', '.join(f'{s:.0f}' for s in samples)}); the page said: {shown}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if directory:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
