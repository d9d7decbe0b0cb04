"""A headless Chromium driven over the DevTools protocol, on 127.0.0.1 only.

Just enough of CDP for the report's browser test: open a file, collect console errors, uncaught
exceptions and every network request, evaluate a script (CDP evaluation is not subject to the
page's Content-Security-Policy, so the page itself can keep forbidding scripts), screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    # Belt and braces for the loopback-only rule: no name resolves to anything.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
INSTALL_HINT = "install it with `apt-get update && apt-get install -y chromium` (`make test` does)"


def find_chromium() -> str | None:
    explicit = os.environ.get("VECAP_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """``with Chromium(binary, tmp) as browser:`` starts it; leaving the block ends it."""

    def __init__(self, binary: str, work_dir: Path, window: tuple[int, int] = (1280, 1000)):
        self.binary = binary
        self.work_dir = work_dir
        self.window = window
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._proc: subprocess.Popen | None = None
        self._ws = None

    def __enter__(self) -> Chromium:
        import websocket  # websocket-client, in the dev extra

        profile = self.work_dir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a reused profile's old port must not be read
        self.log_path = self.work_dir / "chromium.log"
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    *BROWSER_FLAGS,
                    f"--user-data-dir={profile}",
                    f"--window-size={self.window[0]},{self.window[1]}",
                    "about:blank",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            port = self._wait_for_port(port_file)
            # No proxy: an http_proxy in the environment must not route loopback traffic away.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
                targets = json.load(resp)
            page = next(t for t in targets if t.get("type") == "page")
            self._ws = websocket.create_connection(
                page["webSocketDebuggerUrl"],
                timeout=60,
                suppress_origin=True,
                http_no_proxy=["127.0.0.1"],
            )
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.__exit__(None, None, None)  # never leave a browser behind
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ws is not None:
            self._ws.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)

    def _wait_for_port(self, port_file: Path, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"chromium exited with {self._proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            if port_file.exists():
                text = port_file.read_text().split()
                if text:
                    return int(text[0])
            time.sleep(0.1)
        raise TimeoutError(f"chromium did not open its DevTools port in {timeout} s")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        call_id = self._next_id
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the first ``event`` not seen yet (earlier ones are already in ``events``)."""
        deadline = time.monotonic() + timeout
        seen = len(self.events)
        for message in self.events[:seen]:
            if message["method"] == event and not message.get("_consumed"):
                message["_consumed"] = True
                return message
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            if "method" in message:
                self.events.append(message)
                if message["method"] == event:
                    message["_consumed"] = True
                    return message
        raise TimeoutError(f"no {event} within {timeout} s")

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, max_height: int = 12000) -> None:
        """The whole page (up to ``max_height`` CSS px) as PNG."""
        # Measure at the window's own size: an override left by an earlier screenshot would
        # make a short page as tall as the last long one.
        self.call("Emulation.clearDeviceMetricsOverride")
        metrics = self.call("Page.getLayoutMetrics")
        height = min(int(metrics["cssContentSize"]["height"]) + 1, max_height)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.window[0],
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (CSP violations among them)."""
        errors = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(
                    "console: " + " ".join(str(a.get("value", a)) for a in p.get("args", []))
                )
            elif e["method"] == "Runtime.exceptionThrown":
                errors.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                errors.append(
                    f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}"
                )
        return errors

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        ]
