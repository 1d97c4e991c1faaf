"""Drive a headless Chromium through the DevTools protocol over ``--remote-debugging-pipe``
(JSON messages separated by NUL on file descriptors 3 and 4): no websocket, no Playwright,
no browser download -- Debian's ``chromium`` package is enough.  Used by the browser tests
and by ``benchmarks/bench_report.py``.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time

_STDERR = subprocess.DEVNULL   # chromium's D-Bus chatter; set to None to see it
TIMEOUT = 300.0   # generous: tests must pass on a loaded machine; nothing asserts timing


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class Browser:
    """One headless Chromium with one page; ``console`` collects console/exception/log errors."""

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 1000):
        exe = executable or find_chromium()
        if exe is None:
            raise RuntimeError("no chromium executable on PATH (apt-get install chromium)")
        self.profile = tempfile.mkdtemp(prefix="htsr-chromium-")
        cmd_r, cmd_w = os.pipe()      # we write commands -> chromium reads fd 3
        out_r, out_w = os.pipe()      # chromium writes fd 4 -> we read

        def child_fds():   # copies clear of 3/4 first, then onto 3/4 (dup2: inheritable)
            a = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=_STDERR,
            preexec_fn=child_fds, close_fds=False)
        os.close(cmd_r)
        os.close(out_w)
        self._w = os.fdopen(cmd_w, "wb", buffering=0)
        self._r = os.fdopen(out_r, "rb", buffering=0)
        self._id = 0
        self._replies: dict = {}
        self._events: queue.Queue = queue.Queue()
        self._cond = threading.Condition()
        self.console: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for dom in ("Page", "Runtime", "Log"):
            self.call(dom + ".enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                  "deviceScaleFactor": 1, "mobile": False}, session=True)

    def _read(self):
        buf = b""
        while True:
            chunk = self._r.read(65536)
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self._event(msg)

    def _event(self, msg):
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            self.console.append(f"console.{p['type']}: " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.console.append("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
            self.console.append("log: " + p["entry"].get("text", ""))
        self._events.put(msg)

    def call(self, method: str, params: dict | None = None, session: bool = False,
             timeout: float = TIMEOUT) -> dict:
        self._id += 1
        mid = self._id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        self._w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"chromium: no reply to {method}")
                self._cond.wait(min(left, 1.0))
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise RuntimeError(f"chromium: {method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, path: str, timeout: float = TIMEOUT) -> float:
        """Navigate to a local file and wait for its load event; returns wall seconds."""
        while not self._events.empty():
            self._events.get_nowait()
        t0 = time.perf_counter()
        self.call("Page.navigate", {"url": "file://" + os.path.abspath(path)}, session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                ev = self._events.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"chromium: {path} did not load") from None
            if ev.get("method") == "Page.loadEventFired":
                return time.perf_counter() - t0

    def evaluate(self, expression: str, timeout: float = TIMEOUT):
        r = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                           "returnByValue": True}, session=True, timeout=timeout)
        if "exceptionDetails" in r:
            raise RuntimeError(f"chromium: {expression}: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def screenshot(self, path: str, full_page: bool = False):
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params, session=True)["data"]
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(data))
        return path

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (self._w, self._r):
            try:
                f.close()
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
