"""`caffe train / test / time -precision fp32|bf16|fp16` (brewnet only): the mode reaches the solver and the nets,
results stay close to fp32, weights and snapshots stay fp32, a bad mode is a clear error."""
import re

import numpy as np
import pytest

from brewnet.runtime import precision as prec
from brewnet.proto import caffe_pb2
from brewnet.proto.io import read_binary
from brewnet.tools import cli

from ..solvers._nets import golden_workdir
from .test_cli import glog_messages, write_solver


def final_weights(path):
    model = read_binary(path, caffe_pb2.NetParameter())
    blobs = [b for lp in model.layer for b in lp.blobs]
    assert blobs and all(len(b.double_data) == 0 and len(b.data) for b in blobs)       # float, not double
    return [np.asarray(b.data, dtype=np.float32) for b in blobs]


def test_train_in_each_precision(golden, tmp_path, monkeypatch, capsys):
    golden_workdir(golden, tmp_path, monkeypatch)
    weights = {}
    for mode in ("fp32", "bf16", "fp16"):
        solver = write_solver(tmp_path / f"{mode}.prototxt", snapshot_prefix=f'"{mode}"')
        assert cli.main(["train", "-solver", solver, "-precision", mode]) == 0
        messages = glog_messages(capsys.readouterr().err)
        expected = {"fp32": None, "bf16": "Precision: bf16 compute, fp32 master weights",
                    "fp16": "Precision: fp16 compute, fp32 master weights; [fp16] loss scale 65536 (dynamic)"}[mode]
        assert (expected in messages) if expected else not any(m.startswith("Precision:") for m in messages)
        weights[mode] = final_weights(f"{mode}_iter_4.caffemodel")
    for mode in ("bf16", "fp16"):
        for low, full in zip(weights[mode], weights["fp32"]):
            np.testing.assert_allclose(low, full, rtol=0.05, atol=0.01)
    assert any(not np.array_equal(low, full) for low, full in zip(weights["bf16"], weights["fp32"]))


def test_precision_from_the_environment(golden, tmp_path, monkeypatch, capsys):
    golden_workdir(golden, tmp_path, monkeypatch)
    monkeypatch.setenv(prec.ENV_VARIABLE, "bf16")
    assert cli.main(["train", "-solver", write_solver(tmp_path / "s.prototxt")]) == 0
    assert "Precision: bf16 compute, fp32 master weights" in glog_messages(capsys.readouterr().err)
    assert cli.main(["train", "-solver", write_solver(tmp_path / "s.prototxt"), "-precision", "fp32"]) == 0
    assert not any(m.startswith("Precision:") for m in glog_messages(capsys.readouterr().err))


def test_test_command_in_bf16_scores_as_fp32(golden, tmp_path, monkeypatch, capsys):
    source = golden_workdir(golden, tmp_path, monkeypatch)
    weights = str(source / "adam_iter_6.caffemodel")
    losses = {}
    for mode in ("fp32", "bf16"):
        assert cli.main(["test", "-model", "net.prototxt", "-weights", weights, "-iterations", "2",
                         "-precision", mode]) == 0
        messages = glog_messages(capsys.readouterr().err)
        assert ("Precision: bf16 compute, fp32 weights" in messages) == (mode == "bf16")
        losses[mode] = float(next(m for m in messages if m.startswith("Loss: ")).split(": ")[1])
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


def test_time_command_in_bf16(golden, tmp_path, monkeypatch, capsys):
    golden_workdir(golden, tmp_path, monkeypatch)
    assert cli.main(["time", "-model", "net.prototxt", "-iterations", "1", "-precision", "bf16"]) == 0
    messages = glog_messages(capsys.readouterr().err)
    assert "Precision: bf16 compute, fp32 weights" in messages and messages[-1] == "*** Benchmark ends ***"


@pytest.mark.parametrize("command", ["train", "test", "time"])
def test_unknown_precision_is_an_error(command, golden, tmp_path, monkeypatch, capsys):
    golden_workdir(golden, tmp_path, monkeypatch)
    argv = {"train": ["-solver", write_solver(tmp_path / "s.prototxt")],
            "test": ["-model", "net.prototxt", "-weights", "w.caffemodel"],
            "time": ["-model", "net.prototxt"]}[command]
    assert cli.main([command] + argv + ["-precision", "fp8"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"^F\d{4} .*-precision: Expect: one of fp32, bf16, fp16, Actual: 'fp8'", err, re.M), err[-500:]
