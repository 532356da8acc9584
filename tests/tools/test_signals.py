"""Signals sent with os.kill to a real `caffe` process: SIGTERM (what batch schedulers send before they kill a
job) during training, per -sigterm_effect; SIGINT during `caffe test`, `caffe time` and training's start-up,
where no handler turns it into a solver action: one line, status 130, no traceback."""
import os
import signal
import subprocess
import sys

import pytest

from brewnet.solvers import get_solver

from ..solvers._nets import golden_workdir
from .test_cli import BIG_NET, snapshots, wait_for, write_solver


def start_caffe(tmp_path, *args):
    """`caffe args...` in tmp_path, its log (stdout and stderr) in a file; returns (process, log path)."""
    log = tmp_path / f"log{len(list(tmp_path.glob('log*')))}.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path)] + sys.path))
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "brewnet.tools.cli", *args], cwd=tmp_path, stdout=out,
                                   stderr=subprocess.STDOUT, env=env)
    return process, log


def big_solver(tmp_path, **fields):
    (tmp_path / "big.prototxt").write_text(BIG_NET)
    values = dict(net='"big.prototxt"', base_lr=0.001, display=1, max_iter=100000, snapshot_prefix='"big"',
                  snapshot_after_train="false")
    values.update(fields)
    return write_solver(tmp_path / "s.prototxt", **values)


def sigterm_after_three_iterations(tmp_path, *flags):
    solver = big_solver(tmp_path)
    process, log = start_caffe(tmp_path, "train", "-solver", solver, *flags)
    wait_for(lambda: "Iteration 3 " in log.read_text(), process)
    os.kill(process.pid, signal.SIGTERM)
    return process, log, solver


def test_sigterm_snapshots_then_stops(tmp_path):
    """The default: a snapshot of the last iteration (snapshot_after_train is off here), then a clean stop."""
    process, log, solver = sigterm_after_three_iterations(tmp_path)
    assert process.wait(timeout=60) == 0
    text = log.read_text()
    assert "SIGTERM received: snapshotting and stopping" in text and "Optimization stopped early." in text
    assert text.rstrip().endswith("Optimization Done.") and "Traceback" not in text
    [state] = snapshots(tmp_path)
    restored = get_solver(solver)
    restored.restore(state)
    assert restored.iter == int(state.rsplit("_iter_", 1)[1].split(".")[0]) >= 3
    assert os.path.exists(state + ".brewnet")


def test_sigterm_stop(tmp_path):
    process, log, _ = sigterm_after_three_iterations(tmp_path, "-sigterm_effect", "stop")
    assert process.wait(timeout=60) == 0
    text = log.read_text()
    assert "SIGTERM received: stopping" in text and "Optimization stopped early." in text
    assert snapshots(tmp_path) == []


def test_sigterm_none_is_ignored(tmp_path):
    process, log, _ = sigterm_after_three_iterations(tmp_path, "-sigterm_effect", "none", "-sigint_effect", "stop")
    iteration = log.read_text().count("Iteration ")
    wait_for(lambda: log.read_text().count("Iteration ") > iteration + 3, process)    # it goes on training
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) == 0
    text = log.read_text()
    assert "SIGTERM" not in text and "Optimization stopped early." in text


def assert_interrupted(process, log):
    assert process.wait(timeout=60) == 130
    lines = log.read_text().splitlines()
    assert lines[-1].startswith("E") and lines[-1].endswith("] Interrupted by SIGINT")
    assert "Traceback" not in log.read_text() and "KeyboardInterrupt" not in log.read_text()


def test_sigint_during_time(tmp_path):
    (tmp_path / "big.prototxt").write_text(BIG_NET)
    process, log = start_caffe(tmp_path, "time", "-model", "big.prototxt", "-iterations", "1000000")
    wait_for(lambda: "Iteration: 2 forward-backward" in log.read_text(), process)
    os.kill(process.pid, signal.SIGINT)
    assert_interrupted(process, log)


def test_sigint_during_test(golden, tmp_path, monkeypatch):
    source = golden_workdir(golden, tmp_path, monkeypatch)
    process, log = start_caffe(tmp_path, "test", "-model", "net.prototxt", "-weights",
                               str(source / "adam_iter_6.caffemodel"), "-iterations", "1000000")
    wait_for(lambda: "Batch 2, " in log.read_text(), process)
    os.kill(process.pid, signal.SIGINT)
    assert_interrupted(process, log)


SLOW_LAYER = '''
import time
from brewnet.layers.python_layer import PythonLayerBase


class Slow(PythonLayerBase):
    """Stands for a long start-up (a large net, a slow data source): it says when it starts, then takes long."""
    def setup(self, bottom, top):
        open("assembling", "w").close()
        time.sleep(120)

    def reshape(self, bottom, top):
        top[0].reshape(1)
'''


@pytest.mark.parametrize("command", ["train", "time"])
def test_sigint_during_start_up(tmp_path, command):
    (tmp_path / "slow_layer.py").write_text(SLOW_LAYER)
    (tmp_path / "slow.prototxt").write_text('name: "slow" layer { name: "slow" type: "Python" top: "x" '
                                            'python_param { module: "slow_layer" layer: "Slow" } }\n')
    solver = write_solver(tmp_path / "s.prototxt", net='"slow.prototxt"')
    args = ["train", "-solver", solver] if command == "train" else ["time", "-model", "slow.prototxt"]
    process, log = start_caffe(tmp_path, *args)
    wait_for(lambda: (tmp_path / "assembling").exists(), process)
    os.kill(process.pid, signal.SIGINT)
    assert_interrupted(process, log)             # within its 60 s wait: at once, not after the layer's 120 s
    assert "Starting Optimization" not in log.read_text()


def test_sigterm_during_data_parallel_training(tmp_path):
    """-procs 2: the launcher passes SIGTERM on to rank 0, whose decision every rank follows."""
    process, log, solver = sigterm_after_three_iterations(tmp_path, "-procs", "2")
    assert process.wait(timeout=120) == 0
    text = log.read_text()
    assert text.count("SIGTERM received: snapshotting and stopping") == 1 and "Traceback" not in text
    [state] = snapshots(tmp_path)
    restored = get_solver(solver)
    restored.restore(state)
    assert restored.iter >= 3
