"""report: training logs -> one self-contained HTML page of their curves, the runs overlaid (the book's
comparisons: init methods, optimizers, BN or not).

    brewnet report LOG [LOG ...] -o report.html [-title "ReLU vs sigmoid"]

Reads any glog-format training log, brewnet's or the real Caffe's (curves.py lists the lines it reads), and
draws what the live dashboard draws: train loss raw and smoothed, every test output, learning rate, iterations
per second, and per-layer mean |w| and mean |dw| where the log has debug_info's lines.  The page holds its data,
the chart library (the vendored uPlot) and its script: it opens offline, from a mail or an archive.
"""
import html
import json
import os

from ..errors import BrewnetError
from .dashboard.curves import read_log
from .dashboard.server import static_file
from .tool_flags import run_tool

FLAGS = {
    "o": ("report.html", "The HTML file to write."),
    "title": ("", "Optional; the page's title (default: the logs' names)."),
}
USAGE = "report: training logs -> one HTML page of their curves\nusage: brewnet report LOG [LOG ...] -o report.html"


class ReportError(BrewnetError):
    """A log that cannot be read or holds no training iteration."""


def read_runs(paths):
    """The snapshot of every log, named by its file name (with its folder's name when two are the same)."""
    runs = []
    names = [os.path.basename(p) for p in paths]
    names = [n if names.count(n) == 1 else os.path.join(os.path.basename(os.path.dirname(os.path.abspath(p))), n)
             for p, n in zip(paths, names)]
    for path, name in zip(paths, names):
        if not os.path.isfile(path):
            raise ReportError(f"report: log file not found: {path}")
        curves = read_log(path)
        if not curves.series["loss"] and not curves.series["test"]:
            raise ReportError(f"report: {path} holds no training iteration (no 'Iteration N ..., loss = ' and no "
                              "'Test net output' line): is it a glog-format training log?")
        run = curves.snapshot()
        run["name"] = name
        run["net"] = curves.name
        runs.append(run)
    return runs


def _inline(text):
    """Text safe inside <script> or <style>: no closing tag can end the element early."""
    return text.replace("</", "<\\/")


def render(runs, title=""):
    """The report page, every resource inline."""
    title = title or "brewnet report: " + ", ".join(r["name"] for r in runs)
    data = json.dumps(runs, separators=(",", ":"), allow_nan=False)
    css = static_file("vendor/uPlot.min.css").decode() + static_file("dashboard.css").decode()
    script = static_file("vendor/uPlot.iife.min.js").decode() + "\n" + static_file("dashboard.js").decode()
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_inline(css)}</style>\n</head>\n<body>\n"
            f"<script type=\"application/json\" id=\"runs\" data-title=\"{html.escape(title)}\">{_inline(data)}</script>\n"
            f"<script>{_inline(script)}</script>\n</body>\n</html>\n")


def write_report(paths, output, title=""):
    runs = read_runs(paths)
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(render(runs, title))
    except OSError as error:
        raise ReportError(f"report: cannot write {output}: {error.strerror or error}") from None
    return runs


def main(argv=None):
    def body(flags, logs):
        runs = write_report(logs, flags["o"], flags["title"])
        print(f"Wrote {flags['o']}: {len(runs)} run(s), " + ", ".join(
            f"{r['name']} ({r['iteration']} iterations)" for r in runs))
    return run_tool(body, argv, FLAGS, USAGE, nargs=range(1, 10_000))
