"""The upgrade tools, run on the files Caffe's own tools upgraded (tests/golden/files)."""
import subprocess
import sys

import numpy as np
import pytest

from brewnet.proto import caffe_pb2, io
from brewnet.proto.weights import fill_blob_proto, load_weights
from brewnet.tools import upgrade_net_proto_binary, upgrade_net_proto_text, upgrade_solver_proto_text


@pytest.mark.parametrize("name", ["lenet_v1", "v0net"])
def test_upgrade_net_proto_text_matches_caffe(golden, tmp_path, name):
    out = tmp_path / f"{name}.prototxt"
    assert upgrade_net_proto_text.main([str(golden / "files" / f"{name}.prototxt"), str(out)]) == 0
    expected = io.read_text(golden / "files" / f"{name}.upgraded.prototxt", caffe_pb2.NetParameter())
    assert io.read_text(out, caffe_pb2.NetParameter()) == expected


def test_upgrade_solver_proto_text_matches_caffe(golden, tmp_path):
    out = tmp_path / "solver.prototxt"
    assert upgrade_solver_proto_text.main([str(golden / "files" / "solver_old.prototxt"), str(out)]) == 0
    expected = io.read_text(golden / "files" / "solver_old.upgraded.prototxt", caffe_pb2.SolverParameter())
    assert io.read_text(out, caffe_pb2.SolverParameter()) == expected


def test_upgrade_net_proto_binary_upgrades_a_v1_caffemodel(tmp_path):
    old = caffe_pb2.NetParameter(name="old")
    conv = old.layers.add(name="conv", type=caffe_pb2.V1LayerParameter.CONVOLUTION, blobs_lr=[1, 2])
    weight = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 1, 2, 2)
    fill_blob_proto(conv.blobs.add(), weight)
    src, out = tmp_path / "old.caffemodel", tmp_path / "new.caffemodel"
    io.write_binary(old, src)
    assert upgrade_net_proto_binary.main([str(src), str(out)]) == 0
    new = io.read_binary(out, caffe_pb2.NetParameter())
    assert len(new.layers) == 0 and new.layer[0].type == "Convolution"
    assert [p.lr_mult for p in new.layer[0].param] == [1, 2]
    np.testing.assert_array_equal(load_weights(out)["conv"][0], weight)


def test_already_current_file_is_copied(golden, tmp_path):
    out = tmp_path / "same.prototxt"
    src = golden / "files" / "lenet_v1.upgraded.prototxt"
    assert upgrade_net_proto_text.main([str(src), str(out)]) == 0
    assert io.read_text(out, caffe_pb2.NetParameter()) == io.read_text(src, caffe_pb2.NetParameter())


def test_exit_codes_for_bad_usage_and_unreadable_input(tmp_path):
    assert upgrade_net_proto_text.main(["only_one_argument"]) == 1
    assert upgrade_solver_proto_text.main([]) == 1
    assert upgrade_net_proto_text.main([str(tmp_path / "missing.prototxt"), str(tmp_path / "o")]) == 2
    (tmp_path / "bad.prototxt").write_text("layer { name: ")
    assert upgrade_solver_proto_text.main([str(tmp_path / "bad.prototxt"), str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_runs_as_a_module(golden, tmp_path):
    out = tmp_path / "v0.prototxt"
    done = subprocess.run([sys.executable, "-m", "brewnet.tools.upgrade_net_proto_text",
                           str(golden / "files" / "v0net.prototxt"), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Successfully upgraded file specified using deprecated V0LayerParameter" in done.stderr
    assert "Wrote upgraded NetParameter text proto to" in done.stderr
    assert io.read_text(out, caffe_pb2.NetParameter()).layer[0].type == "Input"
