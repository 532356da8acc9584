"""caffe.draw and the draw_net tool: the DOT graph of a net, its phase filter, and pictures drawn by Graphviz."""
import re
import shutil

import pytest

import caffe.draw
from caffe.proto import caffe_pb2
from brewnet.proto.io import read_net_param
from brewnet.tools import draw_net


# Pictures need Graphviz's `dot` (Debian: apt-get install graphviz; CI installs it).  The DOT text does not.
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's `dot` is not installed (Debian package: graphviz)")


@pytest.fixture
def lenet_file(golden):
    return golden / "models" / "examples_mnist" / "lenet_train_test.prototxt"


@pytest.fixture
def lenet(lenet_file):
    return read_net_param(str(lenet_file))


def nodes_and_edges(dot):
    nodes = dict(re.findall(r'^  "([^"]+)" \[(.*)\];$', dot, re.M))
    edges = re.findall(r'^  "([^"]+)" -> "([^"]+)" \[label="([^"]*)"\];$', dot, re.M)
    return nodes, edges


def test_dot_graph_of_lenet(lenet):
    dot = caffe.draw.get_dot_source(lenet, "LR")
    assert dot.startswith('digraph "LeNet" {\n  rankdir=LR;')
    nodes, edges = nodes_and_edges(dot)
    assert 'label="conv1\\n(Convolution)\\nkernel size: 5\\nstride: 1\\npad: 0"' in nodes["conv1_Convolution"]
    assert 'fillcolor="#FF5050"' in nodes["conv1_Convolution"]
    assert 'label="pool1\\n(Pooling MAX)\\nkernel size: 2\\nstride: 2\\npad: 0"' in nodes["pool1_Pooling"]
    assert 'fillcolor="#FF9900"' in nodes["pool1_Pooling"]
    assert 'fillcolor="#CC33FF"' in nodes["ip1_InnerProduct"]
    assert 'fillcolor="#90EE90"' in nodes["relu1_ReLU"]            # in-place neuron layer
    assert 'shape="octagon"' in nodes["ip1_blob"]
    assert ("mnist_Data", "data_blob", "Batch 64") in edges and ("mnist_Data", "data_blob", "Batch 100") in edges
    assert ("data_blob", "conv1_Convolution", "") in edges
    assert ("conv1_Convolution", "conv1_blob", "20") in edges and ("ip2_InnerProduct", "ip2_blob", "10") in edges
    assert ("ip1_blob", "relu1_ReLU", "") in edges and ("relu1_ReLU", "ip1_blob", "") in edges
    assert len(edges) == sum(len(l.bottom) + len(l.top) for l in lenet.layer)


def test_phase_filter_and_layout_options(lenet):
    train = nodes_and_edges(caffe.draw.get_dot_source(lenet, "TB", phase=caffe_pb2.TRAIN))[0]
    test = nodes_and_edges(caffe.draw.get_dot_source(lenet, "TB", phase=caffe_pb2.TEST))[0]
    assert "accuracy_Accuracy" not in train and "accuracy_Accuracy" in test
    assert "loss_SoftmaxWithLoss" in train and "loss_SoftmaxWithLoss" in test
    # top-bottom drawings put the words side by side; learning-rate multipliers on request
    tb = caffe.draw.get_dot_source(lenet, "TB", display_lrm=True)
    assert 'label="conv1 (Convolution) kernel size: 5 stride: 1 pad: 0 lr mult: 1.0, 2.0"' in tb
    assert "rankdir=TB;" in tb


def test_get_pydot_graph_is_a_pydot_dot(lenet):
    """pycaffe's get_pydot_graph returns a pydot.Dot that scripts extend or write out."""
    pydot = pytest.importorskip("pydot")
    graph = caffe.draw.get_pydot_graph(lenet, "LR", phase=caffe_pb2.TEST)
    assert isinstance(graph, pydot.Dot) and graph.get_name() == '"LeNet"' and graph.get_rankdir() == "LR"
    nodes = {n.get_name().strip('"'): n for n in graph.get_nodes()}
    assert nodes["conv1_Convolution"].get_fillcolor() == '"#FF5050"'
    assert "accuracy_Accuracy" in nodes and "relu1_ReLU" in nodes
    edges = {(e.get_source().strip('"'), e.get_destination().strip('"')): e.get_label() for e in graph.get_edges()}
    assert edges[("conv1_Convolution", "conv1_blob")] == '"20"'
    assert edges[("mnist_Data", "data_blob")] == '"Batch 100"'
    test_layers = [l for l in lenet.layer if not any(r.phase == caffe_pb2.TRAIN for r in l.include)]
    assert len(edges) == len({(b, l.name) for l in test_layers for b in l.bottom} |
                             {(l.name, t) for l in test_layers for t in l.top})


@needs_dot
def test_draw_net_to_png_and_svg(lenet, tmp_path):
    caffe.draw.draw_net_to_file(lenet, str(tmp_path / "lenet.png"), "LR")
    png = (tmp_path / "lenet.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    caffe.draw.draw_net_to_file(lenet, str(tmp_path / "lenet.svg"), "TB", phase=caffe_pb2.TEST)
    svg = (tmp_path / "lenet.svg").read_text()
    assert "<svg" in svg and "accuracy" in svg and "Pooling MAX" in svg
    raw = caffe.draw.draw_net(lenet, "LR", ext="raw")
    assert raw.decode() == caffe.draw.get_dot_source(lenet, "LR")


@needs_dot
def test_draw_net_tool(lenet_file, tmp_path, capsys):
    out = tmp_path / "net.svg"
    assert draw_net.main([str(lenet_file), str(out), "--rankdir", "TB", "--phase", "TRAIN"]) == 0
    assert f"Drawing net to {out}" in capsys.readouterr().out
    svg = out.read_text()
    assert "conv1" in svg and "accuracy" not in svg
    assert draw_net.main([str(tmp_path / "missing.prototxt"), str(tmp_path / "x.png")]) == 1
