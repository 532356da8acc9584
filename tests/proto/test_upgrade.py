"""Upgrading old nets and solvers as Caffe does on load: checked against what Caffe's own upgrade tools wrote
(tests/golden/files) and against hand-written expectations for each upgrade step."""
import logging

import pytest

from brewnet.errors import ProtoError
from brewnet.proto import caffe_pb2, io
from brewnet.proto.upgrade import (net_needs_upgrade, upgrade_net, upgrade_net_as_needed,
                                   upgrade_solver_as_needed)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


@pytest.fixture
def brewnet_log():
    """The messages brewnet logs during a test (its logger does not propagate to pytest's caplog)."""
    handler, logger = _Records(), logging.getLogger("brewnet")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)          # whatever GLOG_minloglevel says
    yield handler.lines
    logger.setLevel(level)
    logger.removeHandler(handler)


def _net(text):
    return io.parse_text(text, caffe_pb2.NetParameter())


# --- golden: what Caffe's upgrade tools wrote ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lenet_v1", "v0net"])
def test_upgrade_equals_caffes(golden, name):
    upgraded = io.read_net_param(golden / "files" / f"{name}.prototxt")
    expected = io.read_text(golden / "files" / f"{name}.upgraded.prototxt", caffe_pb2.NetParameter())
    assert upgraded == expected
    assert not net_needs_upgrade(upgraded)


def test_solver_upgrade_equals_caffes(golden):
    path = golden / "files" / "solver_old.prototxt"
    solver = upgrade_solver_as_needed(io.read_text(path, caffe_pb2.SolverParameter()), path)
    expected = io.read_text(golden / "files" / "solver_old.upgraded.prototxt", caffe_pb2.SolverParameter())
    assert solver == expected and solver.type == "Adam" and not solver.HasField("solver_type")


def test_upgrade_logs_like_caffe(golden, brewnet_log):
    path = golden / "files" / "lenet_v1.prototxt"
    io.read_net_param(path)
    assert ("INFO", f"Attempting to upgrade input file specified using deprecated V1LayerParameter: {path}") \
        in brewnet_log
    assert ("INFO", "Successfully upgraded file specified using deprecated V1LayerParameter") in brewnet_log


def _golden_models(golden_dir):
    return sorted(p for p in golden_dir.rglob("*.prototxt"))


def test_every_golden_model_parses_and_upgrades(golden):
    models = _golden_models(golden / "models")
    assert len(models) >= 50          # SOURCES.md: Caffe's models/ and examples/, and the ResNets
    nets = solvers = 0
    for path in models:
        if "solver" in path.name:
            solver = io.read_solver_param(path)
            assert not solver.HasField("solver_type") and solver.snapshot_prefix, path
            solvers += 1
            continue
        net = io.read_net_param(path)
        assert len(net.layers) == 0 and len(net.input) == 0 and len(net.input_dim) == 0, path
        assert len(net.layer) > 0 and all(layer.type for layer in net.layer), path
        nets += 1
    assert nets >= 30 and solvers >= 20


def test_golden_resnet_input_fields_become_an_input_layer(golden):
    net = io.read_net_param(golden / "models" / "resnet" / "ResNet-50-deploy.prototxt")
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["data"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 3, 224, 224]]
    assert net.layer[1].name == "conv1"


def test_golden_bn_net_gets_zero_lr_on_batch_norm_statistics(golden):
    net = io.read_net_param(golden / "models" / "examples_cifar10" / "cifar10_full_sigmoid_train_test_bn.prototxt")
    bns = [layer for layer in net.layer if layer.type == "BatchNorm"]
    assert bns and all(len(layer.param) == 3 for layer in bns)
    assert all(spec.lr_mult == 0 and spec.decay_mult == 0 for layer in bns for spec in layer.param)


# --- input fields -------------------------------------------------------------------------------------------------

def test_input_dim_becomes_first_input_layer():
    net = upgrade_net_as_needed(_net('name: "n" input: "a" input_dim: 2 input_dim: 3 input_dim: 4 input_dim: 5 '
                                     'input: "b" input_dim: 2 input_dim: 1 input_dim: 1 input_dim: 1 '
                                     'layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "c" }'))
    assert [layer.name for layer in net.layer] == ["input", "c"]
    first = net.layer[0]
    assert first.type == "Input" and list(first.top) == ["a", "b"]
    assert [list(s.dim) for s in first.input_param.shape] == [[2, 3, 4, 5], [2, 1, 1, 1]]
    assert len(net.input) == len(net.input_dim) == len(net.input_shape) == 0


def test_input_shape_becomes_input_layer():
    net = upgrade_net_as_needed(_net('input: "x" input_shape { dim: 7 dim: 3 } '
                                     'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }'))
    assert net.layer[0].type == "Input" and [list(s.dim) for s in net.layer[0].input_param.shape] == [[7, 3]]


def test_input_without_shape_is_just_dropped():
    # Old caffemodels list their inputs without shapes; Caffe strips them.
    net = upgrade_net_as_needed(_net('input: "x" layer { name: "r" type: "ReLU" bottom: "x" top: "y" }'))
    assert [layer.name for layer in net.layer] == ["r"] and len(net.input) == 0


def test_input_dim_count_must_fit(tmp_path):
    with pytest.raises(ProtoError, match=r"net\.prototxt: .*2 inputs need 8 input_dim values.*got 4"):
        upgrade_net_as_needed(_net('input: "a" input: "b" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1'),
                              "net.prototxt")


# --- V1 -------------------------------------------------------------------------------------------------------

def test_v1_layer_fields_move_to_v2():
    net = upgrade_net_as_needed(_net('''
      layers { name: "ip" type: INNER_PRODUCT bottom: "x" top: "y" param: "w" param: "" blob_share_mode: PERMISSIVE
               blobs_lr: 1 blobs_lr: 2 weight_decay: 0.5 loss_weight: 3
               include { phase: TRAIN } exclude { stage: "deploy" }
               inner_product_param { num_output: 4 } blobs { shape { dim: 1 } data: 9 } }
      layers { name: "loss" type: SIGMOID_CROSS_ENTROPY_LOSS bottom: "y" bottom: "t" loss_param { normalize: false } }
      layers { name: "s" type: SILENCE bottom: "t" }
    '''))
    ip, loss, silence = net.layer
    assert (ip.type, loss.type, silence.type) == ("InnerProduct", "SigmoidCrossEntropyLoss", "Silence")
    assert [(p.name, p.share_mode, p.lr_mult) for p in ip.param] == [("w", caffe_pb2.ParamSpec.PERMISSIVE, 1.0),
                                                                    ("", caffe_pb2.ParamSpec.STRICT, 2.0)]
    assert ip.param[0].decay_mult == 0.5 and not ip.param[1].HasField("decay_mult")
    assert not ip.param[1].HasField("share_mode")
    assert list(ip.loss_weight) == [3.0] and ip.include[0].phase == caffe_pb2.TRAIN
    assert list(ip.exclude[0].stage) == ["deploy"] and ip.inner_product_param.num_output == 4
    assert list(ip.blobs[0].data) == [9.0]
    assert loss.loss_param.normalize is False and not loss.HasField("inner_product_param")
    assert len(net.layers) == 0


def test_v1_data_layer_transformation_fields_move_to_transform_param():
    net = upgrade_net_as_needed(_net('''
      layers { name: "d" type: DATA top: "x" data_param { source: "db" batch_size: 4 scale: 0.5 mean_file: "m"
               crop_size: 3 mirror: true } }
      layers { name: "i" type: IMAGE_DATA top: "y" image_data_param { source: "list" } }
    '''))
    data, images = net.layer
    t = data.transform_param
    assert (t.scale, t.mean_file, t.crop_size, t.mirror) == (0.5, "m", 3, True)
    dp = data.data_param
    assert (dp.source, dp.batch_size) == ("db", 4)
    assert not any(dp.HasField(f) for f in ("scale", "mean_file", "crop_size", "mirror"))
    # Caffe touches every data layer's transform_param in this step: present, though empty.
    assert images.HasField("transform_param") and images.transform_param.ByteSize() == 0


def test_layer_and_layers_together_are_refused():
    with pytest.raises(ProtoError, match=r"mixed\.prototxt: .*both 'layer' and 'layers'"):
        upgrade_net_as_needed(_net('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }'),
                              "mixed.prototxt")


# --- V0 -------------------------------------------------------------------------------------------------------

def test_v0_padding_layer_is_folded_into_the_convolution():
    net = upgrade_net_as_needed(_net('''
      input: "data" input_dim: 1 input_dim: 1 input_dim: 5 input_dim: 5
      layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
      layers { layer { name: "conv1" type: "conv" num_output: 3 kernelsize: 3 group: 1 } bottom: "pad1"
               top: "conv1" }
      layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.25 } bottom: "conv1" top: "conv1" }
      layers { layer { name: "norm" type: "lrn" local_size: 3 alpha: 0.1 beta: 0.5 k: 2 } bottom: "conv1"
               top: "norm" }
      layers { layer { name: "d" type: "data" source: "db" batchsize: 8 scale: 0.25 cropsize: 4 mirror: true
                       meanfile: "mean" rand_skip: 3 } top: "x" }
    '''))
    names = [layer.name for layer in net.layer]
    assert names == ["input", "conv1", "drop", "norm", "d"]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"] and list(conv.convolution_param.pad) == [2]
    assert list(conv.convolution_param.kernel_size) == [3] and conv.convolution_param.group == 1
    assert net.layer[2].dropout_param.dropout_ratio == 0.25
    lrn = net.layer[3].lrn_param
    assert (lrn.local_size, lrn.alpha, lrn.beta, lrn.k) == (3, pytest.approx(0.1), 0.5, 2.0)
    data = net.layer[4]
    assert (data.type, data.data_param.source, data.data_param.batch_size, data.data_param.rand_skip) == \
        ("Data", "db", 8, 3)
    t = data.transform_param
    assert (t.scale, t.crop_size, t.mirror, t.mean_file) == (0.25, 4, True, "mean")


def test_v0_setting_without_a_place_is_logged_and_reported(brewnet_log):
    net = _net('input: "x" layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "x" top: "x" }')
    assert upgrade_net(net, "old.prototxt") is False
    assert ("ERROR", "Unknown parameter num_output for layer type relu") in brewnet_log
    assert net.layer[0].type == "ReLU"             # the rest of the layer still upgraded, as in Caffe


def test_v0_unknown_type_is_refused():
    with pytest.raises(ProtoError, match=r"old\.prototxt: .*unknown V0 layer type 'warp'"):
        upgrade_net_as_needed(_net('layers { layer { name: "w" type: "warp" } }'), "old.prototxt")


def test_v0_padding_must_feed_conv_or_pool():
    net = _net('input: "x" layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" } '
               'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }')
    with pytest.raises(ProtoError, match=r"padding layer 'p' feeds layer 'r' of type 'relu'"):
        upgrade_net_as_needed(net, "old.prototxt")


# --- BatchNorm, solver ----------------------------------------------------------------------------------------

def test_batch_norm_with_three_params_gets_zero_lr_and_decay():
    net = upgrade_net_as_needed(_net('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" '
                                     'param { name: "m" lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } }'))
    assert [(p.name, p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [("m", 0, 0), ("", 0, 0), ("", 0, 0)]


def test_solver_with_type_and_solver_type_is_refused():
    solver = io.parse_text('type: "SGD" solver_type: ADAM', caffe_pb2.SolverParameter())
    with pytest.raises(ProtoError, match=r"s\.prototxt: .*cannot be both specified"):
        upgrade_solver_as_needed(solver, "s.prototxt")


@pytest.mark.parametrize("enum, name", [("SGD", "SGD"), ("NESTEROV", "Nesterov"), ("ADAGRAD", "AdaGrad"),
                                        ("RMSPROP", "RMSProp"), ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")])
def test_solver_type_enum_to_string(enum, name):
    solver = upgrade_solver_as_needed(io.parse_text(f"solver_type: {enum}", caffe_pb2.SolverParameter()))
    assert solver.type == name and not solver.HasField("solver_type")


def test_read_solver_param_defaults_snapshot_prefix(tmp_path):
    (tmp_path / "my_solver.prototxt").write_text('net: "n.prototxt" base_lr: 0.1')
    solver = io.read_solver_param(tmp_path / "my_solver.prototxt")
    assert solver.snapshot_prefix == str(tmp_path / "my_solver")
    (tmp_path / "snaps").mkdir()
    (tmp_path / "s2.prototxt").write_text(f'snapshot_prefix: "{tmp_path / "snaps"}"')
    assert io.read_solver_param(tmp_path / "s2.prototxt").snapshot_prefix == str(tmp_path / "snaps" / "s2")
    (tmp_path / "s3.prototxt").write_text('snapshot_prefix: "lenet"')
    assert io.read_solver_param(tmp_path / "s3.prototxt").snapshot_prefix == "lenet"
