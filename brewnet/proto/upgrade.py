"""Upgrade old net and solver definitions to today's format, as Caffe does whenever it loads one.

A net may come in three generations:

* **V0** (2013): ``layers { layer { name: "conv1" type: "conv" kernelsize: 5 ... } bottom: "x" top: "y" }`` —
  every setting flat inside a ``V0LayerParameter``, and zero padding as a separate ``"padding"`` layer;
* **V1** (2014): ``layers { name: "conv1" type: CONVOLUTION blobs_lr: 1 weight_decay: 1
  convolution_param { ... } }`` — the type an enum, learning-rate multipliers in ``blobs_lr``/``weight_decay``;
* **V2** (today): ``layer { name: "conv1" type: "Convolution" param { lr_mult: 1 decay_mult: 1 } ... }``.

`upgrade_net_as_needed` walks a NetParameter through the same steps, in the same order, as Caffe's loader:
V0 -> V1 (folding padding layers into the convolution/pooling that reads them), old data-layer transformation
fields -> ``transform_param``, V1 -> V2, net-level ``input``/``input_dim``/``input_shape`` -> an ``Input`` layer,
and old three-parameter BatchNorm layers -> ``lr_mult: 0``/``decay_mult: 0``.  It logs what it did with
Caffe's words, so that a user who knows Caffe's log recognises it.  Settings Caffe could not place are logged as
errors and skipped (Caffe "continues anyway"); definitions Caffe refuses raise a ProtoError naming the file.

`upgrade_solver_as_needed` turns the ``solver_type`` enum into the ``type`` string.
"""
import os

from ..errors import ProtoError
from ..log import get_logger
from . import caffe_pb2

log = get_logger("upgrade")

V1 = caffe_pb2.V1LayerParameter


class _Refused(Exception):
    """A definition that cannot be upgraded at all; re-raised as ProtoError naming the file."""


# --- what needs upgrading --------------------------------------------------------------------------------------

def net_needs_v0_to_v1_upgrade(net):
    return any(layer.HasField("layer") for layer in net.layers)


def net_needs_v1_to_v2_upgrade(net):
    return len(net.layers) > 0


_DATA_LAYER_PARAMS = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param",
                      V1.WINDOW_DATA: "window_data_param"}
# Old data-layer fields that moved into TransformationParameter (same name on both sides).
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def net_needs_data_upgrade(net):
    for layer in net.layers:
        field = _DATA_LAYER_PARAMS.get(layer.type)
        if field is not None:
            old = getattr(layer, field)
            if any(old.HasField(name) for name in _TRANSFORM_FIELDS):
                return True
    return False


def net_needs_input_upgrade(net):
    return len(net.input) > 0


def net_needs_batch_norm_upgrade(net):
    # The first BatchNorm declared its three statistics blobs as learnable and needed `param { lr_mult: 0 }`
    # three times to keep the solver off them; today's layer protects them itself.
    return any(layer.type == "BatchNorm" and len(layer.param) == 3 for layer in net.layer)


def net_needs_upgrade(net):
    return (net_needs_v0_to_v1_upgrade(net) or net_needs_v1_to_v2_upgrade(net) or net_needs_data_upgrade(net)
            or net_needs_input_upgrade(net) or net_needs_batch_norm_upgrade(net))


def solver_needs_type_upgrade(solver):
    return solver.HasField("solver_type")


# --- the driver ------------------------------------------------------------------------------------------------

def upgrade_net(net, path="<net>"):
    """Upgrade `net` (a NetParameter) in place. Returns False when some setting could not be carried over
    (logged as an error, as Caffe does); raises ProtoError for a definition that cannot be upgraded at all."""
    try:
        return _upgrade_net(net, path)
    except _Refused as e:
        raise ProtoError(f"cannot upgrade NetParameter: {e}", path) from None


def upgrade_net_as_needed(net_param, path="<net>"):
    """Caffe's UpgradeNetAsNeeded: upgrade in place and return the (now current-format) NetParameter."""
    upgrade_net(net_param, path)
    return net_param


def _upgrade_net(net, path):
    success = True
    if net_needs_v0_to_v1_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated V0LayerParameter: %s", path)
        if _upgrade_v0_net(net):
            log.info("Successfully upgraded file specified using deprecated V0LayerParameter")
        else:
            success = False
            log.error("Warning: had one or more problems upgrading V0NetParameter to NetParameter "
                      "(see above); continuing anyway.")
        log.warning("Note that future Caffe releases will not support V0NetParameter; use "
                    "upgrade_net_proto_text for prototxt and upgrade_net_proto_binary for model weights "
                    "to upgrade this and any other net protos to the new format.")
    if net_needs_data_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated transformation parameters: %s",
                 path)
        _upgrade_data_transformation(net)
        log.info("Successfully upgraded file specified using deprecated data transformation parameters.")
        log.warning("Note that future Caffe releases will only support transform_param messages for "
                    "transformation fields.")
    if net_needs_v1_to_v2_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated V1LayerParameter: %s", path)
        if _upgrade_v1_net(net):
            log.info("Successfully upgraded file specified using deprecated V1LayerParameter")
        else:
            success = False
            log.error("Warning: had one or more problems upgrading V1LayerParameter (see above); "
                      "continuing anyway.")
    if net_needs_input_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated input fields: %s", path)
        _upgrade_input(net)
        log.info("Successfully upgraded file specified using deprecated input fields.")
        log.warning("Note that future Caffe releases will only support input layers and not input fields.")
    if net_needs_batch_norm_upgrade(net):
        log.info("Attempting to upgrade batch norm layers using deprecated params: %s", path)
        _upgrade_batch_norm(net)
        log.info("Successfully upgraded batch norm layers using deprecated params.")
    return success


# --- V0 -> V1 --------------------------------------------------------------------------------------------------

_V0_TYPES = {
    "accuracy": V1.ACCURACY, "bnll": V1.BNLL, "concat": V1.CONCAT, "conv": V1.CONVOLUTION, "data": V1.DATA,
    "dropout": V1.DROPOUT, "euclidean_loss": V1.EUCLIDEAN_LOSS, "flatten": V1.FLATTEN,
    "hdf5_data": V1.HDF5_DATA, "hdf5_output": V1.HDF5_OUTPUT, "im2col": V1.IM2COL, "images": V1.IMAGE_DATA,
    "infogain_loss": V1.INFOGAIN_LOSS, "innerproduct": V1.INNER_PRODUCT, "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": V1.POOLING, "relu": V1.RELU,
    "sigmoid": V1.SIGMOID, "softmax": V1.SOFTMAX, "softmax_loss": V1.SOFTMAX_LOSS, "split": V1.SPLIT,
    "tanh": V1.TANH, "window_data": V1.WINDOW_DATA,
}

# Where each flat V0 setting lives now, by V0 layer type: (sub-message of V1LayerParameter, field in it).
# A field of None means the V0 value is itself that whole sub-message.  In Caffe's order of handling.
_CONV_OR_IP = ("conv", "innerproduct")
_V0_ROUTES = [
    ("num_output", {"conv": ("convolution_param", "num_output"),
                    "innerproduct": ("inner_product_param", "num_output")}),
    ("biasterm", {"conv": ("convolution_param", "bias_term"),
                  "innerproduct": ("inner_product_param", "bias_term")}),
    ("weight_filler", {"conv": ("convolution_param", "weight_filler"),
                       "innerproduct": ("inner_product_param", "weight_filler")}),
    ("bias_filler", {"conv": ("convolution_param", "bias_filler"),
                     "innerproduct": ("inner_product_param", "bias_filler")}),
    ("pad", {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")}),
    ("kernelsize", {"conv": ("convolution_param", "kernel_size"), "pool": ("pooling_param", "kernel_size")}),
    ("group", {"conv": ("convolution_param", "group")}),
    ("stride", {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")}),
    ("pool", {"pool": ("pooling_param", "pool")}),
    ("dropout_ratio", {"dropout": ("dropout_param", "dropout_ratio")}),
    ("local_size", {"lrn": ("lrn_param", "local_size")}),
    ("alpha", {"lrn": ("lrn_param", "alpha")}),
    ("beta", {"lrn": ("lrn_param", "beta")}),
    ("k", {"lrn": ("lrn_param", "k")}),
    ("source", {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
                "images": ("image_data_param", "source"), "window_data": ("window_data_param", "source"),
                "infogain_loss": ("infogain_loss_param", "source")}),
    ("scale", "transform"),
    ("meanfile", "transform"),
    ("batchsize", {"data": ("data_param", "batch_size"), "hdf5_data": ("hdf5_data_param", "batch_size"),
                   "images": ("image_data_param", "batch_size"),
                   "window_data": ("window_data_param", "batch_size")}),
    ("cropsize", "transform"),
    ("mirror", "transform"),
    ("rand_skip", {"data": ("data_param", "rand_skip"), "images": ("image_data_param", "rand_skip")}),
    ("shuffle_images", {"images": ("image_data_param", "shuffle")}),
    ("new_height", {"images": ("image_data_param", "new_height")}),
    ("new_width", {"images": ("image_data_param", "new_width")}),
    ("concat_dim", {"concat": ("concat_param", "concat_dim")}),
    ("det_fg_threshold", {"window_data": ("window_data_param", "fg_threshold")}),
    ("det_bg_threshold", {"window_data": ("window_data_param", "bg_threshold")}),
    ("det_fg_fraction", {"window_data": ("window_data_param", "fg_fraction")}),
    ("det_context_pad", {"window_data": ("window_data_param", "context_pad")}),
    ("det_crop_mode", {"window_data": ("window_data_param", "crop_mode")}),
    ("hdf5_output_param", {"hdf5_output": ("hdf5_output_param", None)}),
]
# Transformation settings were type-independent in V0; they land in transform_param whatever the layer.
_V0_TRANSFORM = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size", "mirror": "mirror"}


def _upgrade_v0_net(net):
    """V0 -> V1 in place. Like Caffe, only name, layers, input, input_dim and force_backward survive."""
    padded = _fold_v0_padding_layers(net)
    name = net.name if net.HasField("name") else None
    inputs, input_dims = list(net.input), list(net.input_dim)
    force_backward = net.force_backward if net.HasField("force_backward") else None
    net.Clear()
    if name is not None:
        net.name = name
    ok = True
    for v0 in padded:
        ok &= _upgrade_v0_layer(v0, net.layers.add())
    net.input.extend(inputs)
    net.input_dim.extend(input_dims)
    if force_backward is not None:
        net.force_backward = force_backward
    return ok


def _fold_v0_padding_layers(net):
    """The V0 layers without their "padding" layers: a padding layer's `pad` moves into the convolution or
    pooling layer that reads its output, which then reads the padding layer's input directly."""
    last_producer = {name: None for name in net.input}      # blob -> index of the layer that last wrote it
    kept = []
    for i, connection in enumerate(net.layers):
        v0 = connection.layer
        if v0.type != "padding":
            kept.append(_copy(connection))
        for j, blob in enumerate(connection.bottom):
            if blob not in last_producer:
                raise _Refused(f"unknown blob input '{blob}' to layer '{v0.name}'")
            source_index = last_producer[blob]
            if source_index is None:
                continue
            source = net.layers[source_index]
            if source.layer.type != "padding":
                continue
            if v0.type not in ("conv", "pool"):
                raise _Refused(f"padding layer '{source.layer.name}' feeds layer '{v0.name}' of type "
                               f"'{v0.type}'; only conv and pool layers can take a padding layer's output")
            if len(connection.bottom) != 1:
                raise _Refused(f"layer '{v0.name}' reads a padding layer and must then take a single bottom, "
                               f"not {len(connection.bottom)}")
            if len(source.bottom) != 1 or len(source.top) != 1:
                raise _Refused(f"padding layer '{source.layer.name}' must have exactly one bottom and one top")
            kept[-1].layer.pad = source.layer.pad
            kept[-1].bottom[j] = source.bottom[0]
        for blob in connection.top:
            last_producer[blob] = i
    return kept


def _upgrade_v0_layer(connection, layer):
    """One V0 layer (wrapped in its V1 connection) -> V1 `layer`. False if some setting had no place."""
    layer.Clear()
    layer.bottom.extend(connection.bottom)
    layer.top.extend(connection.top)
    if not connection.HasField("layer"):
        return True
    v0 = connection.layer
    kind = v0.type
    if v0.HasField("name"):
        layer.name = v0.name
    if v0.HasField("type"):
        if kind not in _V0_TYPES:
            raise _Refused(f"unknown V0 layer type '{kind}' (layer '{v0.name}')")
        layer.type = _V0_TYPES[kind]
    layer.blobs.extend(v0.blobs)
    layer.blobs_lr.extend(v0.blobs_lr)
    layer.weight_decay.extend(v0.weight_decay)
    ok = True
    for field, route in _V0_ROUTES:
        if not v0.HasField(field):
            continue
        value = getattr(v0, field)
        if route == "transform":
            _assign(layer.transform_param, _V0_TRANSFORM[field], value)
        elif kind in route:
            sub, target = route[kind]
            if target is None:
                getattr(layer, sub).CopyFrom(value)
            elif field == "pool":
                layer.pooling_param.pool = caffe_pb2.PoolingParameter.PoolMethod.Value(
                    caffe_pb2.V0LayerParameter.PoolMethod.Name(value))
            else:
                _assign(getattr(layer, sub), target, value)
        else:
            log.error("Unknown parameter %s for layer type %s", field, kind)
            ok = False
    return ok


def _assign(message, field, value):
    """message.field = value, whether the field is a scalar, a repeated scalar (append) or a sub-message."""
    descriptor = message.DESCRIPTOR.fields_by_name[field]
    # `is_repeated` is protobuf >= 5's spelling; older releases only have `label`.
    repeated = getattr(descriptor, "is_repeated", None)
    if repeated is None:
        repeated = descriptor.label == descriptor.LABEL_REPEATED
    if repeated:
        getattr(message, field).append(value)
    elif descriptor.message_type is not None:
        getattr(message, field).CopyFrom(value)
    else:
        setattr(message, field, value)


def _copy(message):
    duplicate = type(message)()
    duplicate.CopyFrom(message)
    return duplicate


# --- old data-layer transformation fields ----------------------------------------------------------------------

def _upgrade_data_transformation(net):
    for layer in net.layers:
        field = _DATA_LAYER_PARAMS.get(layer.type)
        if field is None:
            continue
        old = getattr(layer, field)
        # Caffe touches both sub-messages of every data layer here, so both are present afterwards even when
        # empty; doing the same keeps the upgraded net equal to Caffe's.
        old.SetInParent()
        layer.transform_param.SetInParent()
        for name in _TRANSFORM_FIELDS:
            if old.HasField(name):
                setattr(layer.transform_param, name, getattr(old, name))
                old.ClearField(name)


# --- V1 -> V2 --------------------------------------------------------------------------------------------------

# The V1 enum's Caffe type strings (the names the layer registry knows).
_V1_TYPE_NAMES = {
    V1.NONE: "", V1.ABSVAL: "AbsVal", V1.ACCURACY: "Accuracy", V1.ARGMAX: "ArgMax", V1.BNLL: "BNLL",
    V1.CONCAT: "Concat", V1.CONTRASTIVE_LOSS: "ContrastiveLoss", V1.CONVOLUTION: "Convolution",
    V1.DECONVOLUTION: "Deconvolution", V1.DATA: "Data", V1.DROPOUT: "Dropout", V1.DUMMY_DATA: "DummyData",
    V1.EUCLIDEAN_LOSS: "EuclideanLoss", V1.ELTWISE: "Eltwise", V1.EXP: "Exp", V1.FLATTEN: "Flatten",
    V1.HDF5_DATA: "HDF5Data", V1.HDF5_OUTPUT: "HDF5Output", V1.HINGE_LOSS: "HingeLoss", V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData", V1.INFOGAIN_LOSS: "InfogainLoss", V1.INNER_PRODUCT: "InnerProduct",
    V1.LRN: "LRN", V1.MEMORY_DATA: "MemoryData", V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    V1.MVN: "MVN", V1.POOLING: "Pooling", V1.POWER: "Power", V1.RELU: "ReLU", V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", V1.SILENCE: "Silence", V1.SOFTMAX: "Softmax",
    V1.SOFTMAX_LOSS: "SoftmaxWithLoss", V1.SPLIT: "Split", V1.SLICE: "Slice", V1.TANH: "TanH",
    V1.WINDOW_DATA: "WindowData", V1.THRESHOLD: "Threshold",
}

# Layer-specific settings that exist under the same name in V1 and V2 and are carried over whole.
_V1_PARAM_MESSAGES = (
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param", "convolution_param",
    "data_param", "dropout_param", "dummy_data_param", "eltwise_param", "exp_param", "hdf5_data_param",
    "hdf5_output_param", "hinge_loss_param", "image_data_param", "infogain_loss_param", "inner_product_param",
    "lrn_param", "memory_data_param", "mvn_param", "pooling_param", "power_param", "relu_param",
    "sigmoid_param", "softmax_param", "slice_param", "tanh_param", "threshold_param", "window_data_param",
    "transform_param", "loss_param",
)


def _upgrade_v1_net(net):
    """V1 `layers` -> V2 `layer`, in place; every net-level field stays."""
    if len(net.layer) > 0:
        raise _Refused("the definition has both 'layer' and 'layers' fields. The current format defines "
                       "'layer' fields with string type like layer { type: 'Layer' ... } and not "
                       "layers { type: LAYER ... }. Switch the definition to the 'layer' format by hand.")
    old_layers = list(net.layers)
    ok = True
    for i, old in enumerate(old_layers):
        if not _upgrade_v1_layer(old, net.layer.add()):
            log.error("Upgrade of input layer %d failed.", i)
            ok = False
    net.ClearField("layers")
    return ok


def _upgrade_v1_layer(old, layer):
    layer.Clear()
    layer.bottom.extend(old.bottom)
    layer.top.extend(old.top)
    if old.HasField("name"):
        layer.name = old.name
    layer.include.extend(old.include)
    layer.exclude.extend(old.exclude)
    if old.HasField("type"):
        if old.type not in _V1_TYPE_NAMES:
            raise _Refused(f"unknown V1LayerParameter layer type {old.type} (layer '{old.name}')")
        layer.type = _V1_TYPE_NAMES[old.type]
    layer.blobs.extend(old.blobs)

    def spec(i):
        # The i-th ParamSpec, created (empty) together with any before it, as Caffe grows the list.
        while len(layer.param) <= i:
            layer.param.add()
        return layer.param[i]

    for i, name in enumerate(old.param):
        spec(i).name = name
    for i, mode in enumerate(old.blob_share_mode):
        spec(i).share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(V1.DimCheckMode.Name(mode))
    for i, lr in enumerate(old.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(old.weight_decay):
        spec(i).decay_mult = decay
    layer.loss_weight.extend(old.loss_weight)
    for field in _V1_PARAM_MESSAGES:
        if old.HasField(field):
            getattr(layer, field).CopyFrom(getattr(old, field))
    if old.HasField("layer"):
        log.error("Input NetParameter has V0 layer -- ignoring.")
        return False
    return True


# --- net-level inputs -> Input layer ---------------------------------------------------------------------------

def _upgrade_input(net):
    """`input` + `input_shape`/`input_dim` -> one Input layer named "input", placed first. Inputs without any
    shape (as in old caffemodels) are simply dropped."""
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if has_shape or has_dim:
        names = list(net.input)
        if has_shape and len(net.input_shape) < len(names):
            raise _Refused(f"{len(names)} inputs but only {len(net.input_shape)} input_shape entries")
        if not has_shape and len(net.input_dim) < 4 * len(names):
            raise _Refused(f"{len(names)} inputs need {4 * len(names)} input_dim values (4 per input), "
                           f"got {len(net.input_dim)}")
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        layer.input_param.SetInParent()
        for i, name in enumerate(names):
            layer.top.append(name)
            if has_shape:
                layer.input_param.shape.add().CopyFrom(net.input_shape[i])
            else:
                layer.input_param.shape.add().dim.extend(net.input_dim[4 * i:4 * i + 4])
        rest = list(net.layer)
        net.ClearField("layer")
        net.layer.extend([layer] + rest)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


# --- BatchNorm -------------------------------------------------------------------------------------------------

def _upgrade_batch_norm(net):
    # Keep each ParamSpec (a name may share the statistics) but make sure no solver ever updates them.
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


# --- solver ----------------------------------------------------------------------------------------------------

_SOLVER_TYPE_NAMES = {
    caffe_pb2.SolverParameter.SGD: "SGD", caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
    caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad", caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
    caffe_pb2.SolverParameter.ADADELTA: "AdaDelta", caffe_pb2.SolverParameter.ADAM: "Adam",
}


def upgrade_solver(solver, path="<solver>"):
    """Upgrade `solver` (a SolverParameter) in place; False if there was nothing Caffe could upgrade."""
    if not solver_needs_type_upgrade(solver):
        return True
    log.info("Attempting to upgrade input file specified using deprecated 'solver_type' field (enum)': %s",
             path)
    if solver.HasField("type"):
        raise ProtoError("Failed to upgrade solver: old solver_type field (enum) and new type field (string) "
                         "cannot be both specified in solver proto text.", path)
    solver.type = _SOLVER_TYPE_NAMES[solver.solver_type]
    solver.ClearField("solver_type")
    log.info("Successfully upgraded file specified using deprecated 'solver_type' field (enum) to 'type' "
             "field (string).")
    log.warning("Note that future Caffe releases will only support 'type' field (string) for a solver's type.")
    return True


def upgrade_solver_as_needed(solver_param, path="<solver>"):
    """Caffe's UpgradeSolverAsNeeded: upgrade in place and return the SolverParameter."""
    upgrade_solver(solver_param, path)
    return solver_param


def upgrade_snapshot_prefix(solver_param, path):
    """Caffe's default snapshot_prefix: the solver file's path without extension when none is given; when
    the prefix names a directory, snapshots go inside it, named after the solver file."""
    path = os.fspath(path)
    if not solver_param.HasField("snapshot_prefix"):
        solver_param.snapshot_prefix = os.path.splitext(path)[0]
        log.info("snapshot_prefix was not specified and is set to %s", solver_param.snapshot_prefix)
    elif os.path.isdir(solver_param.snapshot_prefix):
        stem = os.path.splitext(os.path.basename(path))[0]
        solver_param.snapshot_prefix = os.path.join(solver_param.snapshot_prefix, stem)
        log.info("snapshot_prefix was a directory and is replaced to %s", solver_param.snapshot_prefix)
    return solver_param
