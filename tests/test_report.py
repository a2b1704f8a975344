"""`tf report` opened in Debian's headless Chromium, driven through the DevTools protocol: no console
errors, no network requests, every figure and the table rendered (a screenshot checked for size and
non-blank regions), sorting, filtering and the curves on demand working."""
import base64
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from transferfeat.cli import main


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium (apt-get install chromium)")
        pytest.skip("Chromium: not installed (apt-get install chromium)")
    return path


class Page:
    """One headless Chromium tab over the DevTools protocol; records console errors and requests.
    Chromium runs in its own process group (it starts many processes), with its profile and its
    temporary files in ``folder``; ``close`` ends the whole group, and so does a failed start."""

    def __init__(self, chromium, folder, start_timeout: float = 60, tmpdir=None):
        import websocket
        folder.mkdir(parents=True, exist_ok=True)
        self.ws = None
        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1280,900", f"--user-data-dir={folder / 'profile'}", "--remote-debugging-port=0",
             "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
            env={**os.environ, "TMPDIR": str(tmpdir or folder)})      # its sockets' paths must be short
        try:
            port, said = None, b""
            deadline = time.time() + start_timeout
            while port is None and time.time() < deadline:
                if not select.select([self.proc.stderr], [], [], 0.2)[0]:
                    continue
                chunk = os.read(self.proc.stderr.fileno(), 65536)
                if not chunk:
                    break
                said += chunk
                m = re.search(rb"DevTools listening on ws://127\.0\.0\.1:(\d+)/", said)
                port = int(m.group(1)) if m else None
            assert port, f"chromium did not start its DevTools server: {said[-2000:]!r}"
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
            page = next(t for t in targets if t["type"] == "page")
            # No Origin header: Chromium 111+ refuses a DevTools websocket whose client sends one
            # (unless --remote-allow-origins names it; both are set, for old and new Chromium alike).
            self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
            self.id, self.events = 0, []
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            self.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def call(self, method, **params):
        self.id += 1
        self.ws.send(json.dumps({"id": self.id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.id:
                assert "error" not in msg, msg
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method, since=0, timeout=30):
        """Wait for event ``method`` among the events recorded from index ``since`` on."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(e.get("method") == method for e in self.events[since:]):
                return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def navigate(self, url):
        """Load ``url`` and wait for its own load event (not an earlier page's)."""
        since = len(self.events)
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired", since)

    def js(self, expression):
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in out, out
        return out["result"].get("value")

    def errors(self):
        found = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown" or (m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning")) \
                    or (m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning")):
                found.append(e)
        return found

    def requests(self):
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self):
        """End the tab's connection and every process of the browser's group."""
        if self.ws is not None:
            self.ws.close()
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                if not group_alive(self.proc.pid):
                    break
            except subprocess.TimeoutExpired:
                continue
        self.proc.stderr.close()


def group_alive(pgid: int) -> bool:
    """Is any process of group ``pgid`` still there (zombies aside)?"""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.fixture
def page(chromium, tmp_path, tmp_path_factory):
    p = Page(chromium, tmp_path / "chromium", tmpdir=tmp_path_factory.mktemp("c"))
    yield p
    p.close()
    assert not group_alive(p.proc.pid), "a chromium process outlived its test"


def test_report_in_a_real_browser(shared, page, tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "report.html"
    r = CliRunner().invoke(main, ["report", "--root", str(shared / "results"), "--out", str(out),
                                  "--compare", str(shared / "results"), "--label", "authors",
                                  "--compare-label", "authors again"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    size = out.stat().st_size
    assert 100_000 < size < 800_000, size                       # a few hundred KB for 170 nets
    text = out.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text   # nothing to fetch
    shots = {}
    for width in (1400, 800):
        page.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
        page.navigate(out.as_uri())
        assert page.js("document.documentElement.scrollWidth") <= width, width      # no horizontal overflow
        assert page.js("document.querySelectorAll('figure svg').length") == 4       # each figure once
        assert page.js("Array.from(document.querySelectorAll('figure')).map(f => f.id)") == [
            "fig2_top", "fig2_bottom_annotated", "fig3", "reduced"]
        widths = page.js("Array.from(document.querySelectorAll('figure svg')).map(s => Math.round(s.getBoundingClientRect().width))")
        assert len(set(widths)) == 1 and widths[0] >= min(width, 1120) - 100, widths   # one size, the page's width
        summary = page.js("document.querySelector('#summary').textContent")
        assert "transfer AnB at n = 7" in summary and "0.542" in summary and "-0.083 vs baseB 0.625" in summary
        assert "authors again" in summary                                          # --compare: their numbers beside
        assert page.js("document.querySelector('.about').textContent").count("selffer") >= 1
        smallest = page.js("Math.min(...Array.from(document.querySelectorAll('p, td, th, figcaption, li'))"
                           ".map(e => parseFloat(getComputedStyle(e).fontSize)))")
        assert smallest >= 12, smallest
        shots[width] = page.call("Page.captureScreenshot", format="png")
    assert page.js("document.querySelectorAll('#nets tbody tr').length") == 170
    assert page.js("document.getElementById('shown').textContent") == "170 of 170 nets"
    status = page.js("Object.fromEntries(Array.from(document.querySelectorAll('#nets tbody tr'))"
                     ".map(r => [r.dataset.name, r.children[5].textContent]))")
    assert status["half0A"] == "trained (logs only)" and status["transfer0A0B_1_1"] == "trained (logs only)"
    assert status["transfer-ft0B0A_1_1"] == "no log (not rendered)"
    assert not any("not rendered" in s and not s.startswith("no log") for s in status.values())
    flags = page.js("Object.fromEntries(Array.from(document.querySelectorAll('#nets tbody tr'))"
                    ".map(r => [r.dataset.name, r.children[6].textContent]))")
    assert sorted(n for n, f in flags.items() if f == "at chance") == [
        "nolearn_1_3", "reduced-0005", "reduced-0010", "reduced-0025", "reduced-0050", "reduced-0100"]
    attention = page.js("document.getElementById('attention').textContent")
    assert "reduced-0005" in attention and "blocked" not in attention and "pending" not in attention
    # sorting: by the paper's statistic, descending on a second click
    page.js("document.querySelector(\"th[data-key='top10']\").click()")
    page.js("document.querySelector(\"th[data-key='top10']\").click()")
    values = page.js("Array.from(document.querySelectorAll('#nets tbody tr')).map(r => r.children[10].textContent)"
                     ".filter(v => v)")
    assert values == sorted(values, key=float, reverse=True) and len(values) == 148
    # filtering
    page.js("const f = document.getElementById('filter'); f.value = 'transfer-ft'; f.dispatchEvent(new Event('input'))")
    assert page.js("document.getElementById('shown').textContent") == "42 of 170 nets"
    page.js("const g = document.getElementById('filter'); g.value = 'netbase'; g.dispatchEvent(new Event('input'))")
    assert page.js("Array.from(document.querySelectorAll('#nets tbody tr')).map(r => r.dataset.name)") == ["netbase"]
    # one net's curves, with axes and units
    page.js("document.querySelector('#nets tbody tr.net').click()")
    assert page.js("document.querySelectorAll('tr.curves svg.curve polyline').length") == 3
    labels = page.js("document.querySelector('tr.curves').textContent")
    assert "iteration" in labels and "top-1" in labels and "loss" in labels
    # the overview: a small chart for every net with logs, by family
    assert page.js("document.querySelectorAll('#overview .mini').length") == 148
    assert page.js("document.querySelectorAll('#overview h3').length") == 8
    prov = page.js("document.querySelector('#provenance').textContent")
    assert "command" in prov and "transferfeat" in prov and "sha256" in prov and "not found" not in prov
    assert page.js("document.querySelectorAll('#logs tr').length") > 300                 # every log's digest
    errors, requests = page.errors(), page.requests()
    assert errors == []
    assert set(requests) == {out.as_uri()}                         # the page itself, nothing else
    import numpy as np
    for width, shot in shots.items():
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("L"))
        assert img.shape == (900, width)
        cells = [img[y:y + 150, x:x + 100] for x in range(0, width, 100) for y in range(0, 900, 150)]
        inked = sum(1 for c in cells if (c < 200).sum() > 50)
        assert inked >= len(cells) // 4, (width, inked)           # the heading, the text, the numbers are drawn


def test_report_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["report", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 1 and "is rendered or has logs" in r.output and not (tmp_path / "r.html").exists()


def test_a_browser_that_fails_to_start_leaves_no_process(tmp_path):
    """Start-up fails (no DevTools line): every process the browser started is ended all the same."""
    fake = tmp_path / "chromium"
    fake.write_text(f"#!/bin/sh\necho $$ > {tmp_path / 'pid'}\nsleep 300 &\nsleep 300\n")
    fake.chmod(0o755)
    with pytest.raises(AssertionError, match="did not start its DevTools server"):
        Page(str(fake), tmp_path / "browser", start_timeout=2)
    assert not group_alive(int((tmp_path / "pid").read_text()))
