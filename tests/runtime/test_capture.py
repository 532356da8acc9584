"""The compiled path's CPU-side contract (runtime/capture.py): what a CUDA-graph recording runs makes the host
wait for the device nowhere, gives the eager numbers, and refuses what it cannot record.  The recording
itself needs a GPU: benchmarks/gpu_check.py runs it where a session has one."""
import pytest
import torch

from brewnet.core import common
from brewnet.runtime.capture import CapturedStep, HostSyncs, check_recordable, compiled_step, source_layers
from brewnet.core.net import Net
from brewnet.core.registry import layer_class, layer_type_list
from brewnet.runtime.precision import Precision
from brewnet.errors import NetError
from brewnet.layers.python_layer import PythonLayerBase
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import get_solver
from tests.layers.golden_case import golden_cases, run_golden_case, set_golden_top_diffs, setup_golden_layer

NET = """
name: "small" force_backward: true
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 8 dim: 2 dim: 8 dim: 8 } shape { dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 bias_term: false weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "drop" type: "Dropout" bottom: "pool" top: "pool" }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" %s }
"""


def small_net(loss_param=""):
    torch.manual_seed(0)
    net = Net(parse_text(NET % loss_param, caffe_pb2.NetParameter()), phase=caffe_pb2.TRAIN)
    net.blobs["data"].data.copy_(torch.randn(8, 2, 8, 8, generator=torch.Generator().manual_seed(1)))
    net.blobs["label"].data.copy_(torch.tensor([0.0, 1, 2, 1, 0, 2, 2, 1]))
    return net


@pytest.mark.parametrize("loss_param", ["", "loss_param { ignore_label: 2 }"], ids=["all-labels", "ignore"])
def test_the_recorded_step_never_waits_for_the_device(loss_param):
    net = small_net(loss_param)
    step = CapturedStep(net, Precision("fp32"))
    step.eager_step()                                   # the warm-up: lazily created buffers now exist
    with common.graph_capture(), HostSyncs() as syncs:
        loss = step.eager_step()
    assert syncs.found == []
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0


def test_outside_a_recording_the_label_check_is_seen_waiting():
    # The same step with the host-side checks on: the detector sees the label range check (so an empty
    # list above means something).
    net = small_net("loss_param { ignore_label: 2 }")
    with HostSyncs() as syncs:
        net.forward()
    assert any("_local_scalar_dense" in s and "layers/loss.py" in s for s in syncs.found)


@pytest.mark.parametrize("loss_param", ["", "loss_param { ignore_label: 2 }"], ids=["all-labels", "ignore"])
def test_recording_mode_computes_the_eager_numbers(loss_param):
    results = []
    for capturing in (False, True):
        net = small_net(loss_param)
        torch.manual_seed(5)                             # the same dropout mask
        if capturing:
            with common.graph_capture():
                loss = float(CapturedStep(net, Precision("fp32")).eager_step())
        else:
            loss = net.forward()
            net.backward()
        results.append((loss, net.blobs["data"].diff.clone(), net.layer_by_name("conv").blobs[0].diff.clone()))
    (eager_loss, eager_dx, eager_dw), (rec_loss, rec_dx, rec_dw) = results
    assert rec_loss == pytest.approx(eager_loss, rel=1e-6) and eager_loss > 0.1
    torch.testing.assert_close(rec_dx, eager_dx)
    torch.testing.assert_close(rec_dw, eager_dw)


def test_data_layers_run_outside_and_python_layers_are_refused():
    net = small_net()
    assert source_layers(net) == 1
    check_recordable(net, 1)
    text = NET.replace('layer { name: "drop" type: "Dropout" bottom: "pool" top: "pool" }',
                       'layer { name: "py" type: "Python" bottom: "pool" top: "pool2" '
                       'python_param { module: "tests.runtime.test_capture" layer: "Twice" } }\n'
                       'layer { name: "drop" type: "Dropout" bottom: "pool2" top: "pool2" }')
    text = text.replace('name: "ip" type: "InnerProduct" bottom: "pool"', 'name: "ip" type: "InnerProduct" bottom: "pool2"') % ""
    with pytest.raises(NetError, match="layer 'py' of type Python cannot be recorded"):
        check_recordable(Net(parse_text(text, caffe_pb2.NetParameter())), 1)


def test_the_memory_check_sees_a_moved_or_reshaped_blob():
    net = small_net()
    step = CapturedStep(net, Precision("fp32"))
    net.forward_backward()
    recorded = step._memory()
    assert len(recorded) == len(net._blobs) + sum(len(layer.blobs) for layer in net.layers)
    assert step._memory() == recorded
    net.blobs["ip"].data = net.blobs["ip"].data.clone()         # a layer handing its top a fresh tensor
    assert step._memory() != recorded
    recorded = step._memory()
    net.blobs["pool"].reshape((8, 36))                          # the same count: the memory stays, the shape not
    assert step._memory() != recorded and net.blobs["pool"].count() == 8 * 4 * 3 * 3


def test_a_filter_layer_is_refused_by_name():
    net = Net(parse_text("""
        layer { name: "in" type: "Input" top: "x" top: "keep" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
        layer { name: "pick" type: "Filter" bottom: "x" bottom: "keep" top: "kept" }""", caffe_pb2.NetParameter()))
    with pytest.raises(NetError, match="layer 'pick' of type Filter cannot be recorded .*depends on the selector"):
        check_recordable(net, source_layers(net))


def test_a_layer_declaring_it_not_recordable_is_refused_with_its_own_reason():
    from tests.runtime import capability_layers  # noqa: F401  (registers HostCounter)
    text = NET.replace('layer { name: "drop" type: "Dropout" bottom: "pool" top: "pool" }',
                       'layer { name: "count" type: "HostCounter" bottom: "pool" top: "pool" }') % ""
    net = Net(parse_text(text, caffe_pb2.NetParameter()))
    with pytest.raises(NetError, match=r"layer 'count' of type HostCounter cannot be recorded into a CUDA graph "
                                       r"\(it counts its calls on the host\); run without -compile"):
        check_recordable(net, source_layers(net))
    check_recordable(net, net.layer_index("ip"))       # from a later layer on, nothing refuses


# Data layers and Python read the host; Filter, DropPath and MultiStageMeanfield decide sizes or paths from
# values on the host (the rows Filter keeps, the paths that survive, the lattice an image makes).
NOT_RECORDABLE_TYPES = {"Data", "DummyData", "DropPath", "Filter", "HDF5Data", "HDF5Output", "ImageData", "Input",
                        "MemoryData", "MultiStageMeanfield", "Python", "WindowData"}


def test_the_data_python_and_filter_layers_say_why_they_cannot_be_recorded():
    builtin = [t for t in layer_type_list() if layer_class(t).__module__.startswith("brewnet.")]
    refused = {t: layer_class(t).not_recordable for t in builtin if layer_class(t).not_recordable is not None}
    assert set(refused) == NOT_RECORDABLE_TYPES
    assert all(isinstance(reason, str) and reason.startswith(("it ", "its ", "the ")) for reason in refused.values())
    assert "Convolution" in builtin and "BatchNorm" in builtin


class Twice(PythonLayerBase):
    """A Python layer (its not_recordable reason, PythonLayer's, is what check_recordable reads)."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff


def test_on_the_cpu_compile_runs_the_eager_path(caplog):
    assert compiled_step(small_net(), Precision("fp32")) is None
    params = []
    for compile_ in (True, False):
        torch.manual_seed(0)
        sp = caffe_pb2.SolverParameter(base_lr=0.1, momentum=0.9, lr_policy="fixed", display=0, max_iter=100,
                                       random_seed=3)
        sp.net_param.CopyFrom(parse_text(NET % "", caffe_pb2.NetParameter()))
        solver = get_solver(sp)
        solver.compile = compile_
        solver.net.blobs["data"].data.normal_()
        solver.net.blobs["label"].data.copy_(torch.tensor([0.0, 1, 2, 1, 0, 2, 2, 1]))
        solver.step(3)
        params.append([b.data.clone() for b in solver.net.learnable_params])
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert "CUDA graphs need a CUDA device" in caplog.text




@pytest.mark.parametrize("name", golden_cases())
def test_every_caffe_layer_records_without_host_work_and_computes_caffes_numbers(golden, name):
    # What a recording runs of each layer (forward and backward, host checks off) neither waits for the
    # device nor feeds it host values, so that -compile can record any Caffe net but one with Filter ...
    layer, layer_param, case, arrays, bottom, top = setup_golden_layer(golden / "layers", name)
    propagate_down = [b in case.get("check_bottom_diff", []) for b in layer_param.bottom]

    def step():
        layer.forward_loss(bottom, top)
        if case.get("check_backward", True):
            layer.Backward(top, propagate_down, bottom)

    layer.forward_loss(bottom, top)                     # the warm-up
    if case.get("check_backward", True):
        set_golden_top_diffs(layer_param, arrays, top)
    with common.graph_capture(), HostSyncs() as syncs:
        step()
    if layer_class(case["layer_type"]).not_recordable:      # Filter: its output size depends on the values
        assert syncs.found and all(s.startswith("aten.nonzero") for s in syncs.found), syncs.found
        return
    assert syncs.found == []
    # ... and gives Caffe's numbers (the recording skips checks, and SoftmaxWithLoss takes another path).
    with common.graph_capture():
        report = run_golden_case(golden / "layers", name)
    assert report["compared"]
