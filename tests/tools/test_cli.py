"""The caffe/brewnet command line: flags as gflags reads them, train / test / time / device_query, tool dispatch,
and the signals (SIGINT, SIGHUP, SIGKILL) a long training run meets."""
import glob
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from brewnet.solvers import SolverAction, get_solver
from brewnet.tools import cli
from brewnet.tools.flags import FlagError, HelpRequested, parse_flags
from brewnet.tools.signal_handler import SignalHandler

from ..solvers._nets import golden_workdir

FLAGS = {"solver": ("", "s"), "iterations": (50, "n"), "gpu": ("", "g"), "debug": (False, "d"),
         "rate": (0.5, "r")}


def glog_messages(text):
    return [line.split("] ", 1)[1] for line in text.splitlines() if re.match(r"^[IWEF]\d{4} ", line)]


# --- flags ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["train", "-solver", "s.prototxt", "-iterations", "7"],
    ["train", "-solver=s.prototxt", "-iterations=7"],
    ["--solver=s.prototxt", "train", "--iterations", "7"],
    ["-iterations", "3", "train", "--solver", "s.prototxt", "-iterations=7"],     # the last one wins
])
def test_flag_spellings(argv):
    values, positional = parse_flags(argv, FLAGS)
    assert positional == ["train"] and values["solver"] == "s.prototxt" and values["iterations"] == 7
    assert values["gpu"] == "" and values["debug"] is False and values["rate"] == 0.5


def test_bool_flags_and_double_dash():
    assert parse_flags(["-debug"], FLAGS)[0]["debug"] is True
    assert parse_flags(["-debug=false"], FLAGS)[0]["debug"] is False
    assert parse_flags(["-debug", "-nodebug"], FLAGS)[0]["debug"] is False
    assert parse_flags(["--", "-debug"], FLAGS) == ({n: d for n, (d, _) in FLAGS.items()}, ["-debug"])


def test_flag_errors():
    with pytest.raises(FlagError, match="unknown command line flag 'sovler'"):
        parse_flags(["-sovler", "x"], FLAGS)
    with pytest.raises(FlagError, match="illegal value 'ten' specified for int32 flag 'iterations'"):
        parse_flags(["-iterations", "ten"], FLAGS)
    with pytest.raises(FlagError, match="missing its argument"):
        parse_flags(["-solver"], FLAGS)
    with pytest.raises(HelpRequested, match="-iterations \\(n\\) type: int32 default: 50"):
        parse_flags(["--help"], FLAGS, "usage")


def test_usage_and_unknown_action(capsys):
    assert cli.main([]) == 1
    assert "usage: caffe <command> <args>" in capsys.readouterr().err
    assert cli.main(["trian"]) == 1
    err = capsys.readouterr().err
    assert "Unknown action: trian" in err and "\ttrain" in err
    assert cli.main(["train", "-sovler", "x"]) == 1
    assert "unknown command line flag 'sovler'" in capsys.readouterr().err


# --- train ---------------------------------------------------------------------------------------------------
def write_solver(path, **fields):
    text = {"net": '"net.prototxt"', "base_lr": 0.1, "lr_policy": '"fixed"', "momentum": 0.9, "display": 2,
            "max_iter": 4, "random_seed": 1, "solver_mode": "CPU", "snapshot_prefix": '"run"'}
    text.update(fields)
    path.write_text("".join(f"{k}: {v}\n" for k, v in text.items()))
    return str(path)


def test_train_logs_and_snapshots(golden, tmp_path, monkeypatch, capsys):
    golden_workdir(golden, tmp_path, monkeypatch)
    solver = write_solver(tmp_path / "s.prototxt", test_net='"net.prototxt"', test_iter=2, test_interval=2)
    assert cli.main(["train", f"--solver={solver}"]) == 0
    messages = glog_messages(capsys.readouterr().err)
    for line in ["Use CPU.", "Starting Optimization", "Solving tiny", "Iteration 0, Testing net (#0)",
                 "Iteration 2, lr = 0.1", "Snapshotting to binary proto file run_iter_4.caffemodel",
                 "Snapshotting solver state to binary proto file run_iter_4.solverstate", "Optimization Done."]:
        assert line in messages, line
    assert messages[-1] == "Optimization Done." and messages.count("Optimization Done.") == 2
    assert os.path.exists("run_iter_4.solverstate") and os.path.exists("run_iter_4.solverstate.brewnet")


def test_train_resumes_from_caffes_snapshot(golden, tmp_path, monkeypatch, capsys):
    """`caffe train -snapshot` on Caffe's own iteration-6 files ends where Caffe's resumed run ended."""
    source = golden_workdir(golden, tmp_path, monkeypatch)
    solver = tmp_path / "adam.solver.prototxt"
    solver.write_text((source / "adam.solver.prototxt").read_text() + "snapshot_after_train: true\n")
    assert cli.main(["train", "-solver", str(solver), "-snapshot", str(source / "adam_iter_6.solverstate")]) == 0
    assert "Resuming from " + str(source / "adam_iter_6.solverstate") in glog_messages(capsys.readouterr().err)
    final = get_solver(str(solver))
    final.restore("adam_iter_12.solverstate")
    expected = np.load(source / "adam.resumed.npz")
    for name in ("ip1", "ip2"):
        for i, blob in enumerate(final.net.layer_by_name(name).blobs):
            np.testing.assert_allclose(blob.data.numpy(), expected[f"iter12/{name}/{i}"], rtol=1e-4, atol=1e-6)


def test_train_finetunes_from_weights(golden, tmp_path, monkeypatch, capsys):
    source = golden_workdir(golden, tmp_path, monkeypatch)
    solver = write_solver(tmp_path / "s.prototxt", max_iter=0)
    weights = str(source / "sgd_momentum_step_l2_iter_6.caffemodel")
    assert cli.main(["train", "-solver", solver, "-weights", weights]) == 0
    assert f"Finetuning from {weights}" in glog_messages(capsys.readouterr().err)
    ours, theirs = get_solver(solver), get_solver(solver)
    ours.net.copy_trained_layers_from("run_iter_0.caffemodel")
    theirs.net.copy_trained_layers_from(weights)
    for a, b in zip(ours.net.learnable_params, theirs.net.learnable_params):
        assert torch.equal(a.data, b.data)


def test_train_compile_on_the_cpu_runs_the_eager_path(golden, tmp_path, monkeypatch, capsys):
    # -compile records a CUDA graph on a GPU; on the CPU it says so and trains exactly as without it.
    golden_workdir(golden, tmp_path, monkeypatch)
    finals = []
    for flags, prefix in ((["-compile"], "compiled"), ([], "eager")):
        solver = write_solver(tmp_path / f"{prefix}.prototxt", snapshot_prefix=f'"{prefix}"')
        assert cli.main(["train", "-solver", solver] + flags) == 0
        final = get_solver(solver)
        final.net.copy_trained_layers_from(f"{prefix}_iter_4.caffemodel")
        finals.append([b.data.clone() for b in final.net.learnable_params])
    assert "-compile: CUDA graphs need a CUDA device" in capsys.readouterr().err
    for a, b in zip(*finals):
        assert torch.equal(a, b)


def test_train_refuses_snapshot_and_weights_together(golden, tmp_path, monkeypatch, capsys):
    golden_workdir(golden, tmp_path, monkeypatch)
    solver = write_solver(tmp_path / "s.prototxt")
    assert cli.main(["train", "-solver", solver, "-snapshot", "a.solverstate", "-weights", "b.caffemodel"]) == 1
    assert "Give a snapshot to resume training or weights to finetune but not both." in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train"], "Need a solver definition to train"),
    (["train", "-solver", "missing.prototxt"], "solver file not found: missing.prototxt"),
    (["test", "-model", "net.prototxt"], "Need model weights to score"),
    (["time"], "Need a model definition to time"),
])
def test_command_errors(argv, message, golden, tmp_path, monkeypatch, capsys):
    golden_workdir(golden, tmp_path, monkeypatch)
    if "S" in argv:
        argv[argv.index("S")] = write_solver(tmp_path / "s.prototxt")
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(r"^F\d{4} .*" + re.escape(message), err, re.M), err[-500:]


# --- test / time / device_query ------------------------------------------------------------------------------
def test_test_command_prints_batches_and_means(golden, tmp_path, monkeypatch, capsys):
    source = golden_workdir(golden, tmp_path, monkeypatch)
    weights = str(source / "adam_iter_6.caffemodel")
    assert cli.main(["test", "-model", "net.prototxt", "-weights", weights, "-iterations", "3"]) == 0
    messages = glog_messages(capsys.readouterr().err)
    assert "Running for 3 iterations." in messages
    batches = [float(m.split(" = ")[1]) for m in messages if re.fullmatch(r"Batch \d, loss = [.\d]+", m)]
    assert len(batches) == 3 and len(set(batches)) == 3        # three different mini-batches
    mean = sum(batches) / 3          # of the printed (6-digit) batch losses
    assert re.fullmatch(r"Loss: [.\d]+", messages[-2])
    assert float(messages[-2].split(": ")[1]) == pytest.approx(mean, rel=1e-5)
    assert re.fullmatch(r"loss = ([.\d]+) \(\* 1 = \1 loss\)", messages[-1])
    assert float(messages[-1].split(" = ")[1].split(" ")[0]) == pytest.approx(mean, rel=1e-5)


def test_time_command_lines(golden, tmp_path, monkeypatch, capsys):
    golden_workdir(golden, tmp_path, monkeypatch)
    assert cli.main(["time", "-model", "net.prototxt", "-iterations", "2"]) == 0
    messages = glog_messages(capsys.readouterr().err)
    assert messages[:4][0] == "Use CPU." and "Performing Forward" in messages
    assert any(re.fullmatch(r"Initial loss: [.\d]+", m) for m in messages)
    assert [m for m in messages if m.startswith("Iteration:")][1].startswith("Iteration: 2 forward-backward time: ")
    assert any(re.fullmatch(r"       ip1\tforward: [.\de-]+ ms\.", m) for m in messages)
    assert any(re.fullmatch(r"      loss\tbackward: [.\de-]+ ms\.", m) for m in messages)
    for head in ("Average Forward pass: ", "Average Backward pass: ", "Average Forward-Backward: ", "Total Time: "):
        assert any(m.startswith(head) and m.endswith(" ms.") for m in messages), head
    assert messages[-1] == "*** Benchmark ends ***"


def test_device_query(capsys):
    rc = cli.main(["device_query"])
    text = capsys.readouterr().err
    if torch.cuda.is_available():
        assert rc == 0 and "Name:" in text
    else:
        assert rc == 0 and "No CUDA device is available" in text
        assert cli.main(["device_query", "-gpu", "0"]) == 1


def test_dispatch_to_other_tools(tmp_path, golden):
    log = golden / "training" / "lenet_mnist10k" / "train.log"
    assert cli.main(["parse_log", str(log), str(tmp_path)]) == 0
    assert (tmp_path / "train.log.train").exists() and (tmp_path / "train.log.test").exists()
    assert cli.find_tool("flags") is None and cli.find_tool("no_such_tool") is None
    assert cli.find_tool("upgrade_solver_proto_text") is not None


# --- signals -------------------------------------------------------------------------------------------------
def test_signal_handler_maps_signals_to_actions():
    with SignalHandler(sigint_effect="snapshot", sighup_effect="stop") as handler:
        assert handler.check_for_signals() == SolverAction.NONE
        os.kill(os.getpid(), signal.SIGINT)
        assert handler.check_for_signals() == SolverAction.SNAPSHOT
        assert handler.check_for_signals() == SolverAction.NONE        # each signal is answered once
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGHUP)
        assert handler.check_for_signals() == SolverAction.STOP        # SIGHUP first, as Caffe
        assert handler.check_for_signals() == SolverAction.SNAPSHOT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# lr * |x|^2 must stay well below 2 for this regression to be stable: base_lr 0.001 * 256 inputs = 0.26
# (at 0.01 the loss diverged to inf within ~500 iterations and ended the run before the signal arrived).
BIG_NET = """name: "big"
layer { name: "data" type: "DummyData" top: "x" top: "y" dummy_data_param { shape { dim: 2 dim: 256 }
        shape { dim: 2 dim: 256 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p" inner_product_param { num_output: 256
        weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
"""


def start_training(tmp_path, solver, *flags):
    log = open(tmp_path / f"log{len(glob.glob(str(tmp_path / 'log*')))}.txt", "w")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen([sys.executable, "-m", "brewnet.tools.cli", "train", "-solver", solver, *flags],
                               cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
    return process, log.name


def wait_for(predicate, process, timeout=120):
    end = time.time() + timeout
    while not predicate():
        assert process.poll() is None, "training ended early"
        assert time.time() < end, "timed out"
        time.sleep(0.01)


def snapshots(tmp_path):
    found = glob.glob(str(tmp_path / "big_iter_*.solverstate"))
    return sorted(found, key=lambda p: int(re.search(r"_iter_(\d+)\.", p).group(1)))


def test_sigkill_during_snapshots_leaves_a_loadable_newest_snapshot(tmp_path):
    """Snapshot at every iteration (most of the time goes to writing), kill -9 at random moments, three times:
    the newest solverstate always restores, and the next run resumes from it."""
    (tmp_path / "big.prototxt").write_text(BIG_NET)
    solver = write_solver(tmp_path / "s.prototxt", net='"big.prototxt"', base_lr=0.001, display=0,
                          max_iter=100000, snapshot=1, snapshot_prefix='"big"')
    rng = random.Random(0)
    resume = []
    for _ in range(3):
        before = len(snapshots(tmp_path))
        process, _ = start_training(tmp_path, solver, *resume)
        wait_for(lambda: len(snapshots(tmp_path)) >= before + 2, process)
        time.sleep(rng.uniform(0.0, 0.2))
        process.send_signal(signal.SIGKILL)
        process.wait()
        newest = snapshots(tmp_path)[-1]
        restored = get_solver(solver)
        restored.restore(newest)                       # complete: caffemodel, side file and history all load
        assert restored.iter == int(re.search(r"_iter_(\d+)\.", newest).group(1))
        for leftover in glob.glob(str(tmp_path / "big_iter_*")):
            assert re.search(r"\.(caffemodel|solverstate|solverstate\.brewnet)(\.tmp\d+)?$", leftover), leftover
        resume = ["-snapshot", newest]
    assert restored.iter > 4


def test_sigint_snapshot_then_sighup_stop(tmp_path):
    (tmp_path / "big.prototxt").write_text(BIG_NET)
    solver = write_solver(tmp_path / "s.prototxt", net='"big.prototxt"', base_lr=0.001, display=0,
                          max_iter=100000, snapshot_prefix='"big"', snapshot_after_train="false")
    process, log = start_training(tmp_path, solver, "-sigint_effect", "snapshot", "-sighup_effect", "stop")
    wait_for(lambda: "Starting Optimization" in open(log).read(), process)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    wait_for(lambda: snapshots(tmp_path), process)
    assert process.poll() is None                      # a snapshot does not stop training
    process.send_signal(signal.SIGHUP)
    assert process.wait(timeout=60) == 0
    text = open(log).read()
    assert "Snapshotting solver state to binary proto file" in text and "Optimization stopped early." in text
    assert len(snapshots(tmp_path)) == 1
    get_solver(solver).restore(snapshots(tmp_path)[0])
