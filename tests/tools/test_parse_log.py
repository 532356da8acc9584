"""parse_log and plot_training_log on Caffe's own log and on a log brewnet writes; Caffe's regular expressions
(tools/extra/parse_log.py, quoted in the training issue) must read brewnet's log the same way."""
import csv
import re

import pytest

from brewnet.tools import cli, parse_log, plot_training_log

from ..solvers._nets import golden_workdir
from .test_cli import write_solver

# Caffe's parse_log.py patterns, as data
CAFFE_ITERATION = re.compile(r"Iteration (\d+)")
CAFFE_TRAIN = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
CAFFE_TEST = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
CAFFE_LR = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
GLOG_HEAD = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")


@pytest.fixture
def brewnet_log(golden, tmp_path, monkeypatch, capsys):
    golden_workdir(golden, tmp_path, monkeypatch)
    solver = write_solver(tmp_path / "s.prototxt", display=2, max_iter=6, test_net='"net.prototxt"', test_iter=1,
                          test_interval=3, lr_policy='"step"', gamma=0.5, stepsize=2)
    assert cli.main(["train", "-solver", solver]) == 0
    path = tmp_path / "brewnet.log"
    path.write_text(capsys.readouterr().err)
    return path


def caffe_reading(path):
    """(iteration, kind, name, value) for every output line, and the lr values, the way Caffe's regexes see them."""
    outputs, rates, iteration = [], [], -1
    for line in path.read_text().splitlines():
        match = CAFFE_ITERATION.search(line)
        if match:
            iteration = int(match.group(1))
        for kind, regex in (("train", CAFFE_TRAIN), ("test", CAFFE_TEST)):
            match = regex.search(line)
            if match:
                outputs.append((iteration, kind, match.group(2), float(match.group(3))))
        match = CAFFE_LR.search(line)
        if match:
            rates.append((iteration, float(match.group(1))))
    return outputs, rates


def test_brewnet_log_lines_are_glog_lines(brewnet_log):
    lines = [l for l in brewnet_log.read_text().splitlines() if "Iteration" in l]
    assert lines and all(GLOG_HEAD.match(l) for l in lines)


def test_caffe_regexes_and_parse_log_agree_on_brewnet_log(brewnet_log):
    outputs, rates = caffe_reading(brewnet_log)
    assert [(i, k) for i, k, _, _ in outputs] == [(0, "test"), (0, "train"), (2, "train"), (3, "test"),
                                                  (4, "train"), (6, "test")]
    assert rates == [(0, 0.1), (2, 0.05), (4, 0.025)]
    train, test = parse_log.parse_log(str(brewnet_log))
    assert [(r["NumIters"], r["loss"]) for r in train] == [(i, v) for i, k, _, v in outputs if k == "train"]
    assert [(r["NumIters"], r["loss"]) for r in test] == [(i, v) for i, k, _, v in outputs if k == "test"]
    # an output line precedes its iteration's "lr =" line, so a row carries the previous rate; the first row
    # (NaN: no rate seen yet) takes the second row's, as in Caffe's parser
    assert [r["LearningRate"] for r in train] == [0.1, 0.1, 0.05]
    assert all(r["Seconds"] >= 0 for r in train + test)


def test_parse_caffes_own_log(golden, tmp_path):
    log = golden / "training" / "lenet_mnist10k" / "train.log"
    assert parse_log.main([str(log), str(tmp_path), "--delimiter", ";"]) == 0
    with open(tmp_path / "train.log.test") as f:
        test = list(csv.DictReader(f, delimiter=";"))
    with open(tmp_path / "train.log.train") as f:
        train = list(csv.DictReader(f, delimiter=";"))
    assert list(test[0]) == ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]
    assert len(test) == 21 and len(train) == 100
    last = test[-1]
    assert (float(last["NumIters"]), float(last["accuracy"]), float(last["loss"])) == (10000.0, 0.98, 0.089232)
    assert (float(train[1]["NumIters"]), float(train[1]["loss"])) == (100.0, 0.136968)
    # seconds since "Solving LeNet" (00:35:18.089089); the line for iteration 100 is at 00:35:22.487388
    assert float(train[1]["Seconds"]) == pytest.approx(4.398299, abs=1e-6)


def test_timestamps_with_and_without_year():
    a = parse_log.extract_datetime("I20261127 00:35:18.089089 19179 solver.cpp:289] Solving LeNet", 1999)
    b = parse_log.extract_datetime("I1127 00:35:18.089089 19179 solver.cpp:289] Solving LeNet", 2026)
    assert a == b and a.year == 2026 and a.microsecond == 89089


def test_plot_training_log_writes_pngs(brewnet_log, golden, tmp_path):
    caffe_log = golden / "training" / "lenet_mnist10k" / "train.log"
    for chart in (0, 3, 4, 6, 7):
        out = tmp_path / f"chart{chart}.png"
        logs = [str(caffe_log)] + ([str(brewnet_log)] if chart != 0 else [])
        assert plot_training_log.main([str(chart), str(out)] + logs) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert cli.main(["plot_training_log", "6", str(tmp_path / "via_cli.png"), str(brewnet_log)]) == 0
    assert (tmp_path / "via_cli.png").exists()


def test_plot_training_log_errors(brewnet_log, tmp_path, capsys):
    assert plot_training_log.main(["9", str(tmp_path / "x.png"), str(brewnet_log)]) == 1
    assert "Supported chart types:" in capsys.readouterr().err
    assert plot_training_log.main(["0", str(tmp_path / "x.jpg"), str(brewnet_log)]) == 1
    assert plot_training_log.main(["0", str(tmp_path / "x.png"), str(tmp_path / "none.log")]) == 1
    assert "log file not found" in capsys.readouterr().err
