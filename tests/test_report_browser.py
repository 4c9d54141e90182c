"""report.html in headless Chromium over the DevTools protocol: no console errors, thumbnails decoded,
search and filters change the visible rows. Needs Debian's `chromium` and the `websocket-client` package.

Screenshots go to the test's tmp folder, or to $REPORT_SCREENSHOTS when set (to look at them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_report import AMP, LABELS, SCRIPT, make_big_run, make_run

from llm2labels.report import write_report

pytestmark = pytest.mark.slow
websocket = pytest.importorskip("websocket", reason="pip install websocket-client for the browser tests")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1280,1000", "--remote-debugging-port=0"]


class DevTools:
    """The smallest DevTools-protocol client: numbered calls; events are kept in `events`."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.events: list[dict[str, Any]] = []
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                assert "error" not in msg, f"{method}: {msg['error']}"
                return msg["result"]
            self.events.append(msg)

    def eval(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        """Poll until `expression` is truthy; returns its value."""
        end = time.monotonic() + timeout
        while (value := self.eval(expression)) in (None, False, 0, "", []):
            assert time.monotonic() < end, f"timed out waiting for {expression}"
            time.sleep(0.05)
        return value

    def open(self, path: Path) -> float:
        """Load a file and wait for its load event; returns the seconds it took."""
        start = time.monotonic()
        self.call("Page.navigate", url=path.resolve().as_uri())
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(json.loads(self.ws.recv()))
        return time.monotonic() - start

    def type(self, selector: str, text: str) -> None:
        """Focus an input and type `text` one character at a time, as a user would."""
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        for char in text:
            self.call("Input.insertText", text=char)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries and dialogs (an alert() that ran)."""
        found = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                found.append(f"console: {[a.get('value', a.get('description')) for a in p['args']]}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {p['exceptionDetails']}")
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                found.append(f"log: {p['entry']['text']}")
            elif method == "Page.javascriptDialogOpening":
                found.append(f"dialog: {p['message']}")
        return found

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(__import__("base64").b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    profile = tmp_path / "profile"
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file, end = profile / "DevToolsActivePort", time.monotonic() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            assert proc.poll() is None and time.monotonic() < end, "chromium did not start"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            page = next(t for t in json.load(reply) if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        yield tools
        tools.ws.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the wrapper script and the browser it started
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("REPORT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# Rows and thumbnails are read through the rows: asking a thumbnail inside an off-screen row
# (content-visibility: auto) for its layout forces that row's layout, one at a time (minutes for 20,000).
ROWS = "[...document.querySelectorAll('#labels .row:not(.hd)')].filter((r) => getComputedStyle(r).display !== 'none')"
VISIBLE_ROWS = f"{ROWS}.length"
# natural widths of the thumbnails in the rows on screen, once each has its src and has decoded
VISIBLE_THUMBS = f"""(async () => {{
  const rows = {ROWS}.filter((r) => {{ const b = r.getBoundingClientRect(); return b.bottom > 0 && b.top < innerHeight; }});
  const imgs = rows.flatMap((r) => [...r.querySelectorAll('img')]);
  if (imgs.length === 0 || imgs.some((i) => !i.getAttribute('src'))) return null;
  await Promise.all(imgs.map((i) => i.decode().catch(() => null)));
  return imgs.map((i) => i.naturalWidth);
}})()"""


def test_small_report_shows_labels_thumbnails_and_filters(browser, tmp_path):
    out, root = make_run(tmp_path, metrics=True)
    browser.open(write_report(out, root))
    shown = browser.eval("[...document.querySelectorAll('#labels .lb b')].map((b) => b.textContent)")
    assert shown == ["cat", SCRIPT, AMP]  # the <script> label is text on the page, not code
    browser.eval("document.getElementById('labels').scrollIntoView()")
    widths = browser.wait_for(VISIBLE_THUMBS)
    assert len(widths) == 7 and all(w > 0 for w in widths)  # 8 figures, one a placeholder
    assert browser.eval("document.querySelectorAll('#labels .ph').length") == 1
    assert browser.eval("document.querySelector('img.curve').naturalWidth") == 60
    browser.screenshot(shots(tmp_path) / "report_small.png")
    queries = {label: " ".join([label, *forms.split("|")]).lower() for _, label, *_, forms in
               [(0, *row) for row in LABELS]}
    browser.type("#q", "cat")
    expected = sum("cat" in q for q in queries.values())
    assert expected == 1 and browser.wait_for(f"{VISIBLE_ROWS} === {expected} && {VISIBLE_ROWS}")
    assert browser.eval("document.getElementById('count').textContent") == "1 of 3 labels"
    assert browser.eval("document.getElementById('syn-count').textContent") == "1 of 2 synsets"
    browser.eval("const q = document.getElementById('q'); q.value = ''; q.dispatchEvent(new Event('input'))")
    assert browser.wait_for(f"{VISIBLE_ROWS} === 3")
    browser.type("#min-images", "2")  # cat in 4 images, a & "b" in 2, the script label in 1
    assert browser.wait_for(f"{VISIBLE_ROWS} === 2")
    browser.eval("document.getElementById('expand').click()")
    assert browser.eval("[...document.querySelectorAll('#hierarchy details')].every((d) => d.open)")
    assert browser.errors() == []


def test_thumbnails_from_the_folder_beside_the_report_load_from_disk(browser, tmp_path):
    out, root = make_run(tmp_path)
    browser.open(write_report(out, root, inline_limit_mb=0))
    browser.eval("document.getElementById('labels').scrollIntoView()")
    # the page sets a thumbnail's src when its row nears the viewport (an IntersectionObserver callback, later)
    src = browser.wait_for("document.querySelector('#labels img[src]')?.getAttribute('src')")
    assert src.startswith("report_thumbs/")
    widths = browser.wait_for(VISIBLE_THUMBS)
    assert len(widths) == 7 and all(w > 0 for w in widths)
    assert browser.errors() == []  # the page's Content-Security-Policy allows these files


def test_5000_labels_load_lazily_and_filter(browser, tmp_path):
    out, where = make_big_run(tmp_path)
    path = write_report(out, where)
    seconds = browser.open(path)
    browser.eval("document.getElementById('labels').scrollIntoView()")
    assert all(w > 0 for w in browser.wait_for(VISIBLE_THUMBS))
    loaded = browser.eval("document.querySelectorAll('#labels img[src]').length")
    total = browser.eval("document.querySelectorAll('#labels img').length")
    assert 0 < loaded < total / 10  # only rows near the viewport have their thumbnails set
    browser.screenshot(shots(tmp_path) / "report_5000.png")
    start = time.monotonic()
    browser.type("#q", "label 04")
    assert browser.wait_for(f"{VISIBLE_ROWS} === 100")  # label 0400 ... label 0499
    filtered = time.monotonic() - start
    assert all(w > 0 for w in browser.wait_for(VISIBLE_THUMBS))
    browser.eval("const q = document.getElementById('q'); q.value = ''; q.dispatchEvent(new Event('input'))")
    assert browser.wait_for(f"{VISIBLE_ROWS} === 5000")
    browser.eval("document.querySelector('#labels .row:last-child').scrollIntoView()")
    assert all(w > 0 for w in browser.wait_for(VISIBLE_THUMBS))  # the last rows' thumbnails load too
    assert browser.errors() == []
    print(f"\n5,000 labels: {path.stat().st_size / 2**20:.1f} MiB loaded in {seconds:.2f} s, "
          f"{loaded} of {total} thumbnails set at first; typing a filter (8 keys) took {filtered:.2f} s")


def test_the_error_collector_sees_errors(browser, tmp_path):
    """The checks above would pass vacuously if errors went unseen: make each kind happen once."""
    page = tmp_path / "bad.html"
    page.write_text('<meta http-equiv="Content-Security-Policy" content="img-src data:">'
                    '<img src="elsewhere.png"><script>console.error("oops"); undefinedFunction();</script>')
    browser.open(page)
    time.sleep(0.3)
    found = browser.errors()
    assert any("oops" in e for e in found) and any("undefinedFunction" in e for e in found)
    assert any(e.startswith("log:") and "Content Security Policy" in e for e in found), found
