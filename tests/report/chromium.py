"""Headless Chromium driven over the DevTools protocol on a pipe (no package, no port).

Chromium started with ``--remote-debugging-pipe`` reads JSON commands from its
fd 3 and writes replies and events to its fd 4, one message per NUL-terminated
chunk. That is all a test needs to open a page at a chosen viewport, evaluate
JavaScript in it, list every request it made, and take a screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Headless as root, and quiet: with the network closed, background services only stall.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-pipe")


def find_chromium() -> str | None:
    """The first Chromium or Chrome on PATH, or None."""
    return next((path for name in NAMES if (path := shutil.which(name))), None)


class Chromium:
    """One headless browser with one tab; use as a context manager.

    >>> with Chromium(find_chromium()) as browser:
    ...     browser.open("file:///tmp/page.html", width=390, height=844, mobile=True)
    ...     browser.evaluate("document.title")
    """

    def __init__(self, executable: str, *, timeout: float = 60.0):
        self.executable, self.timeout = executable, timeout
        self.requests: list[str] = []  # URL of every request the tab made, in order
        self._next_id, self._buffer, self._session = 0, b"", None

    def __enter__(self) -> Chromium:
        self._profile = tempfile.mkdtemp(prefix="mmal-chromium-")
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()

        def pipes_on_3_and_4():  # runs in the child before exec
            a, b = os.dup(to_browser), os.dup(from_browser)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, close_fds=False,
            preexec_fn=pipes_on_3_and_4, start_new_session=True)
        os.close(to_browser)
        os.close(from_browser)
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target,
                                  flatten=True)["sessionId"]
        self.send("Network.enable")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._session = None
            self.send("Browser.close")
            self._process.wait(timeout=10)
        except Exception:  # noqa: BLE001 - a browser that does not close is killed below
            pass
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)  # the group this object started
            self._process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def open(self, url: str, *, width: int, height: int, mobile: bool = False) -> None:
        """Load ``url`` at a ``width`` x ``height`` CSS-pixel viewport and wait until it loaded.

        ``mobile`` emulates a phone: the page is laid out at 980 px unless its
        viewport meta tag asks for the device width.
        """
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=mobile)
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout
        while self.evaluate("document.readyState") != "complete" or \
                self.evaluate("location.href") != url:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading in {self.timeout} s")
            time.sleep(0.05)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serializable values)."""
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression!r} raised: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def screenshot(self, *, full_page: bool = False) -> bytes:
        """PNG bytes of the viewport (or of the whole page)."""
        return base64.b64decode(self.send("Page.captureScreenshot", format="png",
                                          captureBeyondViewport=full_page)["data"])

    def send(self, method: str, **params):
        """Send one command to the tab (or, before a tab exists, the browser); its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if reply.get("method") == "Network.requestWillBeSent":
                self.requests.append(reply["params"]["request"]["url"])

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer in {self.timeout} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                self._log.seek(0)
                raise RuntimeError("Chromium exited: " + self._log.read()[-2000:].decode(
                    errors="replace"))
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)


def file_url(path: Path) -> str:
    return path.resolve().as_uri()
