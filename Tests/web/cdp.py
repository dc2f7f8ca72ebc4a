"""A small Chrome DevTools Protocol client: headless Chromium driven over its websocket.

Enough for the web inbox's tests and benchmark: navigate, evaluate JavaScript, wait for a
condition (polled, with a deadline), press keys, allow downloads, take screenshots.
"""
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import websocket


class Timeout(AssertionError):
    pass


class Chromium:
    def __init__(self, width=1280, height=800):
        binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if binary is None:
            raise RuntimeError("chromium is not installed (scripts/test installs it)")
        self.profile = tempfile.mkdtemp(prefix="swallow-chromium-")
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        port, browser_path = open(port_file).read().split("\n")[:2]
        self.http = f"http://127.0.0.1:{port}"
        self.browser = websocket.create_connection(f"ws://127.0.0.1:{port}{browser_path}", timeout=60, suppress_origin=True)
        targets = json.load(urllib.request.urlopen(f"{self.http}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self.page = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.viewport(width, height)

    def close(self):
        for name in ("page", "browser"):
            connection = getattr(self, name, None)
            if connection is not None:
                try:
                    connection.close()
                except Exception:
                    pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, method, params=None, connection=None):
        connection = connection or self.page
        self.next_id += 1
        ident = self.next_id
        connection.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
        while True:
            message = json.loads(connection.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def viewport(self, width, height, mobile=False):
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})

    def navigate(self, url):
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"{expression}: {details.get('exception', {}).get('description', details.get('text'))}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression, what, timeout=45.0):
        """Polls until `expression` is truthy; its value. A condition, with a deadline: not a sleep."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                last = self.evaluate(expression)
            except RuntimeError as error:
                last = str(error)
            else:
                if last:
                    return last
            time.sleep(0.05)
        raise Timeout(f"waited {timeout}s for {what}; last value {last!r}")

    def key(self, key):
        codes = {"Enter": 13, "Delete": 46, "Escape": 27}
        params = {"key": key, "code": key if key in codes else f"Key{key.upper()}",
                  "windowsVirtualKeyCode": codes[key] if key in codes else ord(key.upper())}
        text = {"Enter": "\r"}.get(key, key if len(key) == 1 else None)
        down = dict(params, type="keyDown")
        if text:
            down["text"] = text
        self.send("Input.dispatchKeyEvent", down)
        self.send("Input.dispatchKeyEvent", dict(params, type="keyUp"))

    def allow_downloads(self, directory):
        self.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": directory, "eventsEnabled": True},
                  connection=self.browser)

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
