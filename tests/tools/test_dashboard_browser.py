"""The dashboard and the report in a real browser: Debian's headless Chromium, driven through its DevTools
protocol, loads the live page during a `caffe train -dashboard` run and a report of the real Caffe's log.
Screenshots are kept in tmp/artifacts/ of the checkout.  Without Chromium these tests skip, naming the package."""
import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from brewnet.tools import report

from .test_dashboard import golden_log, write_training

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
websocket = pytest.importorskip("websocket", reason="websocket-client (the test extra) drives Chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                                         "chromium); the browser tests need it")
ARTIFACTS = Path(__file__).resolve().parents[2] / "tmp" / "artifacts"
# Generous: a loaded CI machine starts Chromium and the training process slowly; the waits end as soon as the
# page shows what they wait for.
WAIT_S = 60


class Browser:
    """One headless Chromium page, spoken to over the DevTools protocol (JSON over a WebSocket)."""

    def __init__(self, profile):
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1280,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = self._devtools_port(profile / "DevToolsActivePort")
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=WAIT_S,
                                                  suppress_origin=True)
        self.ids = itertools.count(1)
        self.call("Page.enable")

    def _devtools_port(self, path):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().strip():
                return int(path.read_text().split()[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"Chromium exited with status {self.process.returncode}")
            time.sleep(0.1)
        raise RuntimeError("Chromium did not open its DevTools port")

    def call(self, method, **params):
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, what):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"the page never showed {what} ({expression})")

    def open(self, url):
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && !!window.brewnetDashboard", f"{url} loaded")

    def screenshot(self, name):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self):
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=WAIT_S)


@pytest.fixture
def browser(tmp_path):
    page = Browser(tmp_path / "chromium-profile")
    yield page
    page.close()


def points(browser, chart):
    return browser.evaluate(f"brewnetDashboard.pointCount({json.dumps(chart)})")


def dashboard_url(log_path, process):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        match = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+/)", log_path.read_text())
        if match:
            return match.group(1)
        assert process.poll() is None, log_path.read_text()[-2000:]
        time.sleep(0.1)
    raise AssertionError("caffe train never logged the dashboard's address")


def test_live_dashboard_during_training(tmp_path, browser):
    solver = write_training(tmp_path, max_iter=1_000_000, display=5, test_interval=40)
    log_path = tmp_path / "train.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="0")
    with open(log_path, "w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "brewnet.tools.cli", "train", "-solver", solver,
                                    "-dashboard"], cwd=tmp_path, stderr=log_file, env=env)
    try:
        browser.open(dashboard_url(log_path, process))
        first = browser.wait_for("brewnetDashboard.pointCount('loss') >= 2 && brewnetDashboard.pointCount('loss')",
                                 "two points of the loss curve")
        browser.wait_for(f"brewnetDashboard.pointCount('loss') > {first}", "the loss curve growing")
        eta = browser.wait_for("/^ETA [0-9.]+ (s|min)$/.test(document.getElementById('eta').textContent) && "
                               "document.getElementById('eta').textContent", "an ETA")
        assert re.fullmatch(r"ETA [0-9.]+ (s|min)", eta)
        browser.wait_for("brewnetDashboard.pointCount('test-loss') >= 2", "two test results")
        for chart in ("lr", "speed", "weights", "grads"):
            assert points(browser, chart) >= 1, chart
        assert browser.evaluate("document.getElementById('connection').textContent") == "live"
        browser.screenshot("dashboard.png")
        # SIGINT stops the run (sigint_effect stop); the page keeps the final state
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT_S) == 0, log_path.read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
    final = browser.wait_for("document.body.getAttribute('data-status') === 'stopped' && "
                             "document.getElementById('eta').textContent", "the final state")
    assert re.fullmatch(r"final state: stopped early at iteration \d+", final)
    assert "final state stays" in browser.evaluate("document.getElementById('connection').textContent")
    stopped_at = int(final.rsplit(" ", 1)[1])
    last_display = int(re.findall(r"Iteration (\d+) \(", log_path.read_text())[-1])
    assert last_display <= stopped_at <= last_display + 5
    assert points(browser, "loss") > first
    browser.screenshot("dashboard_final.png")


def test_report_of_caffe_logs_in_the_browser(tmp_path, browser):
    mnist, fashion = golden_log("lenet_mnist10k/train.log"), golden_log("lenet_fashion_mnist/train.log")
    output = tmp_path / "report.html"
    assert report.main([str(mnist), str(fashion), "-o", str(output), "-title", "MNIST vs Fashion-MNIST"]) == 0
    browser.open(output.as_uri())
    # Caffe displayed every 100 of 10000 iterations (101 points) and tested every 500 (21)
    assert points(browser, "loss") == 101
    assert points(browser, "test-accuracy") == 21
    assert points(browser, "lr") == 100
    assert browser.evaluate("document.title") == "MNIST vs Fashion-MNIST"
    rows = browser.evaluate("Array.from(document.querySelectorAll('#runs-table tr')).slice(1)"
                            ".map(r => Array.from(r.cells).map(c => c.textContent))")
    assert [row[:4] for row in rows] == [["lenet_mnist10k/train.log", "finished", "10000 / 10000", "0.003012"],
                                         ["lenet_fashion_mnist/train.log", "finished", "10000 / 10000", "0.2105"]]
    assert rows[0][4] == "accuracy 0.98, loss 0.08923"
    legend = browser.evaluate("Array.from(document.querySelectorAll('#chart-loss .u-legend .u-series'))"
                              ".map(s => s.textContent.trim())")
    assert legend == ["lenet_mnist10k/train.log · raw", "lenet_mnist10k/train.log · smoothed",
                          "lenet_fashion_mnist/train.log · raw", "lenet_fashion_mnist/train.log · smoothed"]
    browser.screenshot("report.png")
