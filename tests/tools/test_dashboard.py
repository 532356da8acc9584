"""The training dashboard without a browser: the curves read from Caffe's and brewnet's log messages, the
live server (what it serves, what it refuses), `caffe train -dashboard` (a failing dashboard leaves training
alone), `brewnet report`, and the terminal progress of train and the converters."""
import http.client
import io
import json
import logging
import os
import pty
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import get_solver
from brewnet.tools import cli, report
from brewnet.tools.dashboard import Dashboard, layer_statistics, read_log, start_dashboard
from brewnet.tools.dashboard.curves import RunCurves
from brewnet.tools.progress import ERASE, Progress, TrainingProgress

from ..conftest import GOLDEN

SOLVER = {"net": '"net.prototxt"', "test_net": '"net.prototxt"', "test_iter": 1, "base_lr": 0.1,
          "lr_policy": '"inv"', "gamma": 0.001, "power": 0.75, "momentum": 0.9, "random_seed": 1,
          "solver_mode": "CPU", "snapshot_prefix": '"run"'}


def golden_log(name):
    return GOLDEN / "training" / name


def write_training(folder, **fields):
    """The golden tiny HDF5 net (4 inputs, 5 hidden units, 3 classes) and a solver for it, in `folder`."""
    for name in ("net.prototxt", "data.h5", "data_list.txt"):
        target = folder / name
        if not target.exists():
            os.symlink(GOLDEN / "solvers" / name, target)
    text = dict(SOLVER, **fields)
    path = folder / "solver.prototxt"
    path.write_text("".join(f"{k}: {v}\n" for k, v in text.items()))
    return str(path)


# --- the curves of a log --------------------------------------------------------------------------------------
def test_curves_of_caffes_own_log():
    curves = read_log(golden_log("lenet_mnist10k/train.log"))
    run = curves.snapshot()
    assert (run["name"], run["status"], run["iteration"], run["max_iter"]) == ("LeNet", "finished", 10000, 10000)
    its, losses = run["series"]["loss"]["loss"]
    assert its == list(range(0, 10001, 100))
    assert (losses[0], losses[1], losses[-1]) == (2.2707, 0.136968, 0.00301241)
    its, accuracy = run["series"]["test"]["accuracy"]
    assert its == list(range(0, 10001, 500)) and (accuracy[0], accuracy[1], accuracy[-1]) == (0.1045, 0.9635, 0.98)
    assert run["series"]["test"]["loss"][1][1] == 0.126513
    its, rates = run["series"]["lr"]["lr"]
    assert (its[0], rates[0], its[1], rates[1]) == (0, 0.01, 100, 0.00992565)
    # Caffe's first display has no interval yet (it prints -3.96567e-43 iter/s): no speed at iteration 0
    its, speed = run["series"]["speed"]["iter/s"]
    assert (its[0], speed[0]) == (100, 25.74)
    assert run["series"]["weights"] == {} and run["eta"] is None and run["eta_text"] == ""
    # the glog clock: from the first display (00:35:18.601269) to the last line read (00:41:54.188...)
    assert 390 < run["elapsed"] < 400


def test_curves_of_caffes_debug_info_log():
    run = read_log(golden_log("lenet_mnist10k/debug_info.log")).snapshot()
    weights, grads = run["series"]["weights"], run["series"]["grads"]
    assert sorted(weights) == ["conv1[0]", "conv1[1]", "conv2[0]", "conv2[1]", "ip1[0]", "ip1[1]", "ip2[0]",
                               "ip2[1]"]
    assert weights["conv1[0]"] == [[0, 1, 2], [0.177644, 0.177631, 0.177608]]
    assert grads["conv1[0]"] == [[0, 1], [0.0090216, 0.00878922]]
    assert grads["ip2[1]"] == [[0, 1], [0.0591145, 0.0398721]]


def test_curves_of_a_log_that_stops_early(tmp_path):
    lines = golden_log("lenet_mnist10k/train.log").read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if "Iteration 600 (" in line)
    path = tmp_path / "cut.log"
    path.write_text("\n".join(lines[:cut + 1]) + "\n")
    run = read_log(path).snapshot()
    assert (run["status"], run["iteration"]) == ("ended", 600)
    assert run["series"]["train"]["loss"][0][-1] == 500     # the train output line of 600 was cut off


def test_eta_from_the_mean_rate():
    curves = RunCurves(max_iter=1000)
    curves.feed("Iteration 0 (0 iter/s, 0.1s/10 iters), loss = 2", when=100.0)
    assert curves.snapshot(now=100.0)["eta_text"] == ""         # no rate yet
    curves.feed("Iteration 100 (10 iter/s, 10s/100 iters), loss = nan", when=110.0)
    run = curves.snapshot(now=110.0)
    assert run["eta"] == pytest.approx(90.0) and run["eta_text"] == "ETA 90.0 s"
    assert run["series"]["loss"]["loss"] == [[0, 100], [2.0, None]]    # JSON has no NaN: a gap
    curves.set_iteration(400)
    assert curves.snapshot(now=240.0)["eta_text"] == "ETA 3.5 min"     # 400 in 140 s: 600 more in 210 s
    curves.finish("finished")
    assert curves.snapshot()["eta"] is None


# --- the live dashboard of a solver ---------------------------------------------------------------------------
@pytest.fixture
def solver(tmp_path, monkeypatch):
    write_training(tmp_path)
    monkeypatch.chdir(tmp_path)
    text = "".join(f"{k}: {v}\n" for k, v in dict(SOLVER, display=2, max_iter=20, test_interval=4).items())
    solver = get_solver(parse_text(text, caffe_pb2.SolverParameter()))
    yield solver
    solver.close()


def get(url, host=None):
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.headers, response.read()


def test_live_curves_and_layer_statistics(solver):
    dashboard = Dashboard(solver, port=0)
    try:
        assert dashboard.url.startswith("http://127.0.0.1:")
        solver.step(5)
        status, headers, body = get(dashboard.url + "data")
        run = json.loads(body)
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert (run["name"], run["status"], run["max_iter"], run["iteration"]) == ("tiny", "running", 20, 4)
        assert run["series"]["loss"]["loss"][0] == [0, 2, 4]
        assert run["series"]["test"]["loss"][0] == [0, 4]
        assert run["series"]["lr"]["lr"][0] == [0, 2, 4]
        assert re.fullmatch(r"ETA [0-9.]+ (s|min)", run["eta_text"])
        # debug_info's statistic, mean |w|, of each parameter blob at each display, before the update
        assert sorted(run["series"]["weights"]) == ["ip1[0]", "ip1[1]", "ip2[0]", "ip2[1]"]
        weights, grads = layer_statistics(solver.net)
        w = solver.net.layers[solver.net.layer_names.index("ip2")].blobs[0]
        assert weights["ip2[0]"] == pytest.approx(np.abs(w.data.numpy()).mean(), rel=1e-6)
        assert grads["ip2[0]"] == pytest.approx(np.abs(w.diff.numpy()).mean(), rel=1e-6)
        assert run["series"]["grads"]["ip2[0]"][0] == [0, 2, 4]
        solver.step(2)
        assert json.loads(get(dashboard.url + "data")[2])["series"]["loss"]["loss"][0] == [0, 2, 4, 6]
    finally:
        dashboard.close("finished")
    assert dashboard.curves.snapshot()["status"] == "finished"
    with pytest.raises(urllib.error.URLError):
        get(dashboard.url + "data")


def test_events_stream_until_the_end(solver):
    dashboard = Dashboard(solver, port=0)
    connection = http.client.HTTPConnection("127.0.0.1", dashboard.server.port, timeout=30)
    try:
        connection.request("GET", "/events")
        response = connection.getresponse()
        assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
        first = json.loads(response.readline().decode().removeprefix("data: "))
        assert first["status"] == "running"
        solver.step(3)
        dashboard.close("stopped")
        events = response.read().decode()
    finally:
        connection.close()
    assert events.endswith("event: end\ndata: {}\n\n")
    last = [json.loads(line[6:]) for line in events.splitlines() if line.startswith("data: {\"")][-1]
    assert last["status"] == "stopped" and last["series"]["loss"]["loss"][0] == [0, 2]


def test_read_only_and_own_data_only(solver):
    dashboard = Dashboard(solver, port=0)
    url = dashboard.url
    try:
        assert dashboard.server.server_address[0] == "127.0.0.1"
        page = get(url)[2].decode()
        assert '<script src="static/dashboard.js">' in page and "http" not in page
        assert get(url + "static/vendor/uPlot.iife.min.js")[2].startswith(b"/*! https://github.com/leeoniya/uPlot")
        for method in ("POST", "PUT", "DELETE"):
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(urllib.request.Request(url + "data", data=b"{}", method=method))
            assert error.value.code == 405 and error.value.headers["Allow"] == "GET"
        for path in ("static/../server.py", "static/..%2f__init__.py", "../../etc/passwd", "static/", "solver"):
            with pytest.raises(urllib.error.HTTPError) as error:
                get(url + path)
            assert error.value.code == 404, path
        # DNS rebinding: another site's name pointed at 127.0.0.1
        with pytest.raises(urllib.error.HTTPError) as error:
            get(url + "data", host=f"attacker.example:{dashboard.server.port}")
        assert error.value.code == 403
        assert get(url + "data", host=f"localhost:{dashboard.server.port}")[0] == 200
        headers = get(url + "data")[1]
        assert "default-src 'self'" in headers["Content-Security-Policy"] and "Access-Control-Allow-Origin" \
            not in headers
    finally:
        dashboard.close()


def test_a_dashboard_that_cannot_start_leaves_training_alone(solver, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="brewnet"):
            assert start_dashboard(solver, port) is None
            assert start_dashboard(solver, 0, host="no-such-host.invalid") is None
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith(f"Dashboard not started on 127.0.0.1:{port} (Address already in use)")
    assert messages[1].startswith("Dashboard not started on no-such-host.invalid:0")
    assert solver.callbacks == []           # nothing of it left in the loop
    solver.step(2)
    assert solver.iter == 2


def test_a_page_that_goes_away_leaves_training_alone(solver):
    dashboard = Dashboard(solver, port=0)
    try:
        client = socket.create_connection(("127.0.0.1", dashboard.server.port), timeout=30)
        client.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{dashboard.server.port}\r\n\r\n".encode())
        assert client.recv(15) == b"HTTP/1.1 200 OK"
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()                      # a reset, in the middle of the stream
        solver.step(6)
        assert solver.iter == 6
        assert json.loads(get(dashboard.url + "data")[2])["series"]["loss"]["loss"][0] == [0, 2, 4]
    finally:
        dashboard.close()


# --- caffe train -dashboard -----------------------------------------------------------------------------------
def test_dashboard_flag_spellings():
    assert cli._bare_dashboard(["train", "-dashboard"]) == ["train", "-dashboard=0"]
    assert cli._bare_dashboard(["-dashboard", "train", "-solver", "s"]) == ["-dashboard=0", "train", "-solver", "s"]
    assert cli._bare_dashboard(["train", "-dashboard", "8123"]) == ["train", "-dashboard", "8123"]
    assert cli._bare_dashboard(["train", "--dashboard", "-solver", "s"])[1] == "--dashboard=0"


def test_train_with_a_port_out_of_range(capsys):
    assert cli.main(["train", "-solver", "s.prototxt", "-dashboard", "70000"]) == 1
    assert "Expect: a port number from 0 (a free port) to 65535" in capsys.readouterr().err


def test_train_with_the_dashboard_port_in_use(tmp_path, monkeypatch, capsys):
    solver = write_training(tmp_path, display=2, max_iter=4, test_interval=4)
    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["train", "-solver", solver, "-dashboard", str(port)]) == 0
    err = capsys.readouterr().err
    assert f"Dashboard not started on 127.0.0.1:{port} (Address already in use); training goes on" in err
    assert "Iteration 4, loss = " in err and err.rstrip().endswith("Optimization Done.")


def test_train_logs_the_dashboard_and_its_final_state(tmp_path, monkeypatch, capsys):
    solver = write_training(tmp_path, display=2, max_iter=4, test_interval=4)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "-solver", solver, "-dashboard"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"Dashboard: http://127\.0\.0\.1:\d+/ \(read-only; this machine only\)", err)
    assert ERASE not in err                 # stderr is no terminal here: glog lines only


def test_train_progress_line_on_a_terminal(tmp_path):
    solver = write_training(tmp_path, display=100, max_iter=30, test_interval=100)
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "brewnet.tools.cli", "train", "-solver", solver],
                               cwd=tmp_path, stderr=follower, stdout=subprocess.DEVNULL,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:         # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    text = b"".join(chunks).decode()
    assert process.wait(timeout=60) == 0, text[-3000:]
    assert re.search(r"\r\x1b\[KIteration \d+/30 \(\d+%\)", text)
    # every glog line starts at column 0: the status line is erased before it and drawn again after
    lines = text.replace("\r\n", "\n").split("\n")
    assert all(not re.search(r".[IWEF]\d{4} \d\d:", line.split("\x1b[K")[-1]) for line in lines)
    assert "Optimization Done." in text and text.rstrip().endswith("Optimization Done.")


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_training_progress_keeps_below_the_log(solver):
    stream, clock = Terminal(), Clock()
    logger = logging.getLogger("test_dashboard.progress")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        progress = TrainingProgress(solver, stream=stream, clock=clock).attach(logger)
        assert handler.stream is progress and solver.callbacks == [progress]
        clock.now = 4.0
        solver.iter = 5
        progress.on_start()
        assert stream.getvalue() == ERASE + "Iteration 5/20 (25%), 1.25 iter/s, ETA 12.0 s"
        logger.warning("a log line")
        assert stream.getvalue().endswith(ERASE + "a log line\nIteration 5/20 (25%), 1.25 iter/s, ETA 12.0 s")
        progress.close()
        assert handler.stream is stream and stream.getvalue().endswith(ERASE)
    finally:
        logger.removeHandler(handler)


def test_no_progress_when_not_a_terminal(solver):
    stream = io.StringIO()
    logger = logging.getLogger("test_dashboard.quiet")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        progress = TrainingProgress(solver, stream=stream).attach(logger)
        progress.on_start()
        logger.warning("plain")
        progress.close()
        assert handler.stream is stream and solver.callbacks == [] and stream.getvalue() == "plain\n"
        bar = Progress(10, "convert", stream=stream)
        bar.update(5)
        bar.close()
        assert stream.getvalue() == "plain\n"
    finally:
        logger.removeHandler(handler)


def test_converter_bar_with_eta():
    stream, clock = Terminal(), Clock()
    bar = Progress(100, "convert_imageset", stream=stream, width=10, clock=clock)
    clock.now = 2.0
    bar.update(25)
    assert stream.getvalue() == "\rconvert_imageset [##........] 25/100 (12/s, ETA 6.0 s)"
    clock.now = 2.05
    bar.update(26)                          # at most ten redraws a second
    clock.now = 8.0
    bar.close()
    assert stream.getvalue().endswith("\rconvert_imageset [##########] 100/100 (12/s, ETA 0.0 s)\n")


# --- brewnet report -------------------------------------------------------------------------------------------
def test_report_is_one_offline_file(tmp_path, capsys):
    output = tmp_path / "r.html"
    logs = [golden_log("lenet_mnist10k/train.log"), golden_log("lenet_fashion_mnist/train.log")]
    assert cli.main(["report", *map(str, logs), "-o", str(output)]) == 0
    assert capsys.readouterr().out == (f"Wrote {output}: 2 run(s), lenet_mnist10k/train.log (10000 iterations), "
                                       "lenet_fashion_mnist/train.log (10000 iterations)\n")
    page = output.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)      # nothing from the network
    assert page.count("<script") == 2 and "uPlot (v1.6.32)" in page
    data = re.search(r'<script type="application/json" id="runs"[^>]*>(.*?)</script>', page, re.S).group(1)
    runs = json.loads(data)
    assert [r["name"] for r in runs] == ["lenet_mnist10k/train.log", "lenet_fashion_mnist/train.log"]
    assert runs[1]["series"]["test"]["accuracy"][1][-1] == 0.8941


def test_report_of_a_brewnet_log_and_bad_inputs(tmp_path, monkeypatch, capsys):
    solver = write_training(tmp_path, display=2, max_iter=4, test_interval=2)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "-solver", solver]) == 0
    log_path = tmp_path / "train.log"
    log_path.write_text(capsys.readouterr().err)
    runs = report.write_report([str(log_path)], str(tmp_path / "r.html"))
    assert runs[0]["series"]["loss"]["loss"][0] == [0, 2, 4]
    assert runs[0]["series"]["test"]["loss"][0] == [0, 2, 4] and runs[0]["status"] == "finished"
    assert report.main([str(tmp_path / "missing.log")]) == 1
    assert f"report: log file not found: {tmp_path / 'missing.log'}" in capsys.readouterr().err
    assert report.main([solver, "-o", str(tmp_path / "x.html")]) == 1
    assert "holds no training iteration" in capsys.readouterr().err


def test_long_curves_are_thinned_and_new_year_is_crossed(tmp_path):
    curves = RunCurves(max_iter=20000)
    for i in range(10001):
        curves.feed(f"Iteration {i}, loss = {i}", when=float(i))
    its, values = curves.snapshot()["series"]["loss"]["loss"]
    assert len(its) == 3335 and its[:3] == [0, 3, 6]     # every third of 10001, and the last and its[-2:] == [9999, 10000] and values == its
    path = tmp_path / "new_year.log"
    path.write_text("I1231 23:59:50.000000  7 solver.cpp:239] Iteration 0 (0 iter/s, 0s/1 iters), loss = 1\n"
                    "I0101 00:00:10.000000  7 solver.cpp:239] Iteration 10 (0.5 iter/s, 20s/10 iters), loss = 0.5\n")
    assert read_log(path, year=2025).snapshot()["elapsed"] == 20.0
