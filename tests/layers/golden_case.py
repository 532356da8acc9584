"""Run one golden layer case from real BVLC Caffe against brewnet, at layer level.

Usage in a layer test::

    from tests.layers.golden_case import run_golden_case, golden_cases

    @pytest.mark.parametrize("name", golden_cases("ReLU", "PReLU"))
    def test_golden(golden, name):
        run_golden_case(golden / "layers", name)

`run_golden_case(golden_dir, name)` follows `golden/README.md` (layers/):

1. reads the case from `manifest.json`, builds the layer named "L" from `NAME.prototxt` (its phase set from
   the manifest, as the Net would);
2. fills the bottoms from `bottom/<blob>` (bottoms produced by a Parameter layer in Caffe — the manifest's
   `parameter_bottoms` — are ordinary bottoms here; a top named like a bottom is the same Blob: in place);
3. `setup`, then copies `param/<i>` into `layer.blobs[i].data`;
4. `Forward`, compares every top with `top/<blob>` and, when present, the parameters with
   `param_after_forward/<i>` (BatchNorm's running statistics);
5. when `check_backward`: zeroes the parameter diffs, sets top diffs from `top_diff/<blob>`, runs `Backward`
   with propagate_down true exactly for the bottoms in `check_bottom_diff`, and compares those bottoms'
   diffs with `bottom_diff/<blob>` and the parameter diffs with `param_diff/<i>`.

Parameter bottoms: in Caffe's run, a Parameter layer's Forward re-shares its top with its own parameter blob,
which the generator never wrote: the value stored as `bottom/<blob>` was overwritten by the parameter's initial
zeros before layer L ran.  The stored tops and diffs prove it (batch_reindex and filter tops are all zero;
infogain's loss equals that of an all-zero input).  So these bottoms are zeros here, exactly what Caffe's L saw;
their diffs are compared as usual.

Tolerances: rtol 1e-4 / atol 1e-5 unless given.  A mismatch raises AssertionError naming the case, the array,
the worst element and both values.  The return value is a small report dict (what was compared, worst
errors) for tests that want to assert more.
"""
import json
import pathlib

import numpy as np
import torch

from brewnet.core.blob import Blob
from brewnet.core.registry import create_layer
from brewnet.proto import caffe_pb2
from brewnet.proto.io import read_text

_MANIFESTS = {}


def _manifest(golden_dir):
    golden_dir = pathlib.Path(golden_dir)
    key = str(golden_dir.resolve())
    if key not in _MANIFESTS:
        with open(golden_dir / "manifest.json") as f:
            _MANIFESTS[key] = {case["name"]: case for case in json.load(f)}
    return _MANIFESTS[key]


def golden_cases(*layer_types, golden_dir=None):
    """Names of the golden cases whose layer_type is one of `layer_types`, or all of them when none is given
    (for pytest parametrize)."""
    if golden_dir is None:
        from tests.conftest import GOLDEN
        golden_dir = GOLDEN / "layers"
    if not (pathlib.Path(golden_dir) / "manifest.json").is_file():
        # Let the test itself fail loudly through the `golden` fixture rather than collect nothing silently.
        return [f"<golden data missing: {golden_dir}>"]
    return [n for n, c in _manifest(golden_dir).items() if not layer_types or c["layer_type"] in layer_types]


def build_golden_layer(golden_dir, name):
    """The LayerParameter of layer "L" of case `name`, with the manifest's phase, and the case dict."""
    golden_dir = pathlib.Path(golden_dir)
    case = _manifest(golden_dir)[name]
    net_param = read_text(str(golden_dir / f"{name}.prototxt"), caffe_pb2.NetParameter())
    matches = [lp for lp in net_param.layer if lp.name == "L"]
    if len(matches) != 1:
        raise AssertionError(f"golden case {name}: expected one layer named 'L', found {len(matches)}")
    layer_param = caffe_pb2.LayerParameter()
    layer_param.CopyFrom(matches[0])
    layer_param.phase = caffe_pb2.Phase.Value(case["phase"])
    return layer_param, case


def compare_golden(case_name, what, actual, expected, rtol, atol, report):
    actual = actual.detach().cpu().to(torch.float64).numpy()
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        # Caffe may store a blob with a different (but equal-count) shape, e.g. scalar losses.
        if actual.size != expected.size:
            raise AssertionError(f"golden case {case_name}: {what} has shape {actual.shape}, "
                                 f"Caffe's has {expected.shape}")
        actual = actual.reshape(expected.shape)
    error = np.abs(actual - expected)
    allowed = atol + rtol * np.abs(expected)
    worst = float(error.max()) if error.size else 0.0
    report[what] = worst
    if error.size and not np.all(error <= allowed):
        bad = np.argwhere(error > allowed)
        i = tuple(bad[np.argmax(error[tuple(bad.T)] - allowed[tuple(bad.T)])])
        raise AssertionError(
            f"golden case {case_name}: {what} differs from Caffe at {len(bad)} of {error.size} elements "
            f"(rtol {rtol}, atol {atol}); worst at index {i}: brewnet {actual[i]!r}, Caffe {expected[i]!r}")


def _tensor(arrays, key):
    return torch.from_numpy(np.array(arrays[key], dtype=np.float32))


def setup_golden_layer(golden_dir, name):
    """Layer "L" of case `name` set up on its bottoms, with Caffe's parameters copied in (steps 1-3 of the
    module docstring): (layer, layer_param, case, arrays, bottom, top)."""
    golden_dir = pathlib.Path(golden_dir)
    layer_param, case = build_golden_layer(golden_dir, name)
    arrays = np.load(golden_dir / f"{name}.npz")
    blobs = {}
    bottom = []
    parameter_bottoms = set(case.get("parameter_bottoms", []))
    for name_b in layer_param.bottom:
        blob = Blob(arrays[f"bottom/{name_b}"].shape, dtype=torch.float32, name=name_b)
        if name_b not in parameter_bottoms:
            blob.data = _tensor(arrays, f"bottom/{name_b}")
        # else: zeros — see "Parameter bottoms" in the module docstring.
        blobs[name_b] = blob
        bottom.append(blob)
    top = [blobs[t] if t in blobs else blobs.setdefault(t, Blob(dtype=torch.float32, name=t))
           for t in layer_param.top]

    layer = create_layer(layer_param)
    layer.setup(bottom, top)
    num_params = case.get("num_params", 0)
    if len(layer.blobs) != num_params:
        raise AssertionError(f"golden case {name}: layer has {len(layer.blobs)} parameter blobs, "
                             f"Caffe has {num_params}")
    for i, blob in enumerate(layer.blobs):
        expected = arrays[f"param/{i}"]
        if tuple(blob.shape) != tuple(expected.shape):
            raise AssertionError(f"golden case {name}: param {i} has shape {blob.shape}, "
                                 f"Caffe's has {tuple(expected.shape)}")
        blob.data.copy_(_tensor(arrays, f"param/{i}").to(blob.data.device))
    return layer, layer_param, case, arrays, bottom, top


def set_golden_top_diffs(layer_param, arrays, top):
    for t, blob in zip(layer_param.top, top):
        blob.diff.copy_(_tensor(arrays, f"top_diff/{t}").reshape(blob.shape).to(blob.diff.device))


def run_golden_case(golden_dir, name, rtol=1e-4, atol=1e-5, diff_rtol=None, diff_atol=None):
    """Check layer "L" of golden case `name` against Caffe (see the module docstring). Returns a report."""
    layer, layer_param, case, arrays, bottom, top = setup_golden_layer(golden_dir, name)
    diff_rtol = rtol if diff_rtol is None else diff_rtol
    diff_atol = atol if diff_atol is None else diff_atol

    report = {"case": name, "compared": []}
    layer.Forward(bottom, top)
    for t, blob in zip(layer_param.top, top):
        compare_golden(name, f"top/{t}", blob.data, arrays[f"top/{t}"], rtol, atol, report)
        report["compared"].append(f"top/{t}")
    for i, blob in enumerate(layer.blobs):
        key = f"param_after_forward/{i}"
        if key in arrays.files:
            compare_golden(name, key, blob.data, arrays[key], rtol, atol, report)
            report["compared"].append(key)

    if not case.get("check_backward", True):
        return report

    # Zero the parameter diffs first: a Parameter layer's top diff *is* its parameter's diff.
    for blob in layer.blobs:
        blob.diff.zero_()
    set_golden_top_diffs(layer_param, arrays, top)
    checked = set(case.get("check_bottom_diff", []))
    propagate_down = [b in checked for b in layer_param.bottom]
    layer.Backward(top, propagate_down, bottom)
    for b, blob in zip(layer_param.bottom, bottom):
        if b in checked:
            compare_golden(name, f"bottom_diff/{b}", blob.diff, arrays[f"bottom_diff/{b}"], diff_rtol, diff_atol,
                     report)
            report["compared"].append(f"bottom_diff/{b}")
    for i, blob in enumerate(layer.blobs):
        compare_golden(name, f"param_diff/{i}", blob.diff, arrays[f"param_diff/{i}"], diff_rtol, diff_atol, report)
        report["compared"].append(f"param_diff/{i}")
    return report
