"""The MLflow server and headless Chromium that ``screenshots.py`` drives (no selenium, no websocket package).

``mlflow_server`` starts ``mlflow server`` on loopback against a store; ``Browser`` drives Chromium over
the DevTools protocol on a pipe, waits until a page shows the text it should, and saves PNGs, refusing
blank ones. Needs Debian's ``chromium`` package (``apt-get install -y chromium``).
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # containers and CI run as root, where the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
]
WIDTH, HEIGHT = 1400, 900

# Set before the app's scripts run: MLflow 3.x auto-opens its "Assistant" side panel on localhost and
# starts in GenAI mode; neither belongs in a picture of a recommender's training runs. Nothing else is
# preset: chart sections, their order and sizes are MLflow's defaults, as a first-time user gets them.
UI_PRESETS = {
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
    "mlflow.assistant.panelOpen_v1": False,
    "mlflow.workflowType_v1": "machine_learning",
}


# ------------------------------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def mlflow_server(store: str, timeout: float = 120.0) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 and a free port against ``store``; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1", "--backend-store-uri", store]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with tempfile.TemporaryFile() as log:
        # Own process group: stopping it stops the uvicorn worker it forks too, and nothing else.
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while not healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-3000:]
                    raise RuntimeError(f"mlflow server did not start on {url}:\n{tail}")
                time.sleep(0.25)
            yield url
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


# ------------------------------------------------------------------------------------------ browser
class CDPError(RuntimeError):
    """Chromium answered a DevTools command with an error, or stopped answering."""


class Browser:
    """Headless Chromium driven over ``--remote-debugging-pipe``: JSON messages ending in NUL on fds 3/4.

    A pipe needs no port, no websocket client and no timing games with the DevTools URL on stderr.
    """

    def __init__(self, chromium: str, profile: Path, timeout: float = 30.0) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:
            # In the child: move both ends above 10 first so that placing them on 3 and 4 never
            # overwrites one with the other, then give Chromium the fd numbers it expects.
            r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"]
        cmd += [f"--window-size={WIDTH},{HEIGHT}", "about:blank"]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=wire_fds,
            start_new_session=True,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._timeout = timeout
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None

    def send(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False) -> Any:
        """Send one command (to the page session unless ``browser``) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session is not None and not browser:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self._timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_chrome], [], [], max(left, 0))
            if not ready:
                raise CDPError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise CDPError("Chromium closed the DevTools pipe (did it crash?)")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(raw))

    def open_page(self, presets: dict[str, Any]) -> None:
        """Create a page, attach to it, fix the viewport, and pre-seed localStorage on every load."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)
        attached = self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, browser=True
        )
        self.session = attached["sessionId"]
        self.send("Page.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        seed = ";".join(
            f"localStorage.setItem({json.dumps(k)}, {json.dumps(json.dumps(v))})" for k, v in presets.items()
        )
        self.send("Page.addScriptToEvaluateOnNewDocument", {"source": f"try {{ {seed} }} catch (e) {{}}"})

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    def goto(self, url: str, expect: list[str], timeout: float = 60.0, settle: float = 2.0) -> None:
        """Load ``url`` and wait until the page text contains every string in ``expect``.

        The UI is a React app: the HTML arrives empty and fills in after API calls, so "loaded" means
        "shows what it should". ``settle`` gives charts their entry animation.
        """
        # Via about:blank: a hash-only change would keep the previous page's text around (and the
        # check below could pass on it); a fresh load also starts each shot from the same state.
        self.send("Page.navigate", {"url": "about:blank"})
        self.send("Page.navigate", {"url": url})
        needles = json.dumps(expect)
        check = (
            "(() => { const t = document.body ? document.body.innerText : '';"
            f" return {needles}.every(s => t.includes(s)); }})()"
        )
        deadline = time.monotonic() + timeout
        while not self.evaluate(check):
            if time.monotonic() > deadline:
                text = self.evaluate("document.body ? document.body.innerText.slice(0, 1500) : ''")
                raise CDPError(f"{url} never showed {expect}; page text starts:\n{text}")
            time.sleep(0.5)
        time.sleep(settle)

    def in_first_screenful(self, text: str) -> bool:
        """Whether an element showing exactly ``text`` lies wholly inside the viewport, unscrolled."""
        needle = json.dumps(text)
        return bool(
            self.evaluate(
                "(() => { const all = Array.from(document.querySelectorAll('body *'));"
                f" return all.some(e => e.childElementCount === 0 && e.textContent.trim() === {needle}"
                " && (r => r.top >= 0 && r.bottom <= window.innerHeight && r.width > 0)"
                "(e.getBoundingClientRect())); })()"
            )
        )

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        png = base64.b64decode(data)
        check_not_blank(png, path)
        path.write_bytes(png)

    def close(self) -> None:
        with suppress(CDPError, OSError):  # already gone is fine: we only want it gone
            self.send("Browser.close", browser=True)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def check_not_blank(png: bytes, name: Path | str) -> None:
    """Refuse a screenshot of an unrendered page: a rendered MLflow page has text, charts and colour."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 16)
    n_colours = len(colours) if colours is not None else 1 << 16
    dominant = max(count for count, _ in colours) / (image.width * image.height) if colours else 0.0
    if n_colours < 64 or dominant > 0.97:
        raise RuntimeError(f"{name}: screenshot looks blank ({n_colours} colours, {dominant:.0%} one colour)")
