"""Headless Chromium driven over the DevTools protocol, for the report and JupyterLab tests.

websocket-client is already a Jupyter dependency; Chromium comes from `make browser` (run by `make test`).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-port=0"]


class DevTools:
    """A minimal DevTools-protocol client over one page's websocket; events that arrive are kept in ``events``."""

    def __init__(self, ws_url: str):
        import websocket  # websocket-client

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.events: list[dict] = []
        self._id = 0

    def send(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        """Until the page has sent the event ``method``."""
        end = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > end:
                raise TimeoutError(method)
            self.events.append(json.loads(self.ws.recv()))

    def js(self, expression: str):
        """The expression's value (promises awaited); a JavaScript exception raises."""
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float, what: str):
        """Until the expression is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def click(self, element_js: str, what: str, timeout: float = 30):
        """A real mouse click at the centre of the element that the JavaScript expression ``element_js`` returns."""
        box = self.wait(
            f"(() => {{ const e = {element_js}; if (!e) return null;"
            f" const r = e.getBoundingClientRect(); return r.width ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()",
            timeout, what,
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def key(self, key: str, code: int, modifiers: int = 0):
        for kind in ("rawKeyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code, modifiers=modifiers)

    def close(self):
        self.ws.close()


def launch(chromium: str, profile: Path, width: int, height: int, timeout: float = 60) -> tuple[subprocess.Popen, DevTools]:
    """Start headless Chromium (leading its own process group) with a fresh profile; a client for its blank page."""
    proc = subprocess.Popen(
        [chromium, *FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while not (port_file.is_file() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"chromium did not start (exit code {proc.poll()})")
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
    return proc, DevTools(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"])
