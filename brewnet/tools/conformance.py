"""Conformance runner: replay the real BVLC Caffe's layer cases and compare every number.

    python -m brewnet.tools.conformance tests/golden            (or .../golden/layers)
    brewnet-conformance DIR [-case NAME ...] [-rtol 1e-4] [-atol 1e-5]

For each case of layers/manifest.json: build the case's net (Input layers, or Parameter layers for bottoms that
need a gradient, then the layer under test `L`), write the stored bottoms and L's parameters, Forward, compare
L's tops (and parameters after Forward, for BatchNorm's running statistics); write the stored top diffs, clear
the parameter diffs, Backward, compare the bottom and parameter diffs.  One line per case, then
`N passed, M failed`.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from ..core.net import Net
from ..errors import BrewnetError
from ..proto import caffe_pb2


class Mismatch(Exception):
    pass


def _compare(what, actual, expected, rtol, atol):
    actual = np.asarray(actual, dtype=np.float64)
    if actual.size == np.size(expected):   # a scalar loss is shape () in Caffe's pycaffe, (1,) or () here
        actual = actual.reshape(np.shape(expected))
    if actual.shape != np.shape(expected):
        raise Mismatch(f"{what}: shape {np.shape(actual)}, Caffe's {np.shape(expected)}")
    bad = ~np.isclose(actual, expected, rtol=rtol, atol=atol)
    if bad.any():
        i = np.unravel_index(np.argmax(np.abs(actual - expected) * bad), np.shape(expected))
        raise Mismatch(f"{what}: {int(bad.sum())} of {bad.size} values differ; worst at {tuple(int(x) for x in i)}:"
                       f" brewnet {float(actual[i]):.7g}, Caffe {float(expected[i]):.7g}")


def _numpy(tensor):
    return tensor.detach().cpu().numpy()


def run_case(layers_dir, case, rtol=1e-4, atol=1e-5):
    """Run one manifest case; raises Mismatch (or a BrewnetError) on the first difference."""
    name = case["name"]
    stored = np.load(os.path.join(layers_dir, name + ".npz"))
    phase = caffe_pb2.TRAIN if case["phase"] == "TRAIN" else caffe_pb2.TEST
    net = Net(os.path.join(layers_dir, name + ".prototxt"), phase=phase)
    layer = net.layer_by_name("L")
    # Bottoms: Input blobs, or the parameter blob of a Parameter layer (its top shares data and diff).
    for key in stored.files:
        if key.startswith("bottom/"):
            blob = net.blob_by_name(key[len("bottom/"):])
            blob.data.copy_(torch.from_numpy(stored[key]).reshape(blob.shape))
    for i, blob in enumerate(layer.blobs):
        if f"param/{i}" in stored.files:
            blob.data.copy_(torch.from_numpy(stored[f"param/{i}"]).reshape(blob.shape))

    net.forward()
    for top in case["tops"]:
        _compare(f"top '{top}'", _numpy(net.blob_by_name(top).data), stored[f"top/{top}"], rtol, atol)
    for i, blob in enumerate(layer.blobs):
        key = f"param_after_forward/{i}"
        if key in stored.files:
            _compare(f"param {i} after forward", _numpy(blob.data), stored[key], rtol, atol)
    if not case.get("check_backward", True):
        return
    # Parameter diffs start at zero (they accumulate); then the stored top diffs, then Backward through the
    # whole net (a Parameter layer feeding L hands its top's diff to its parameter on the way).
    for blob in net.params:
        blob.diff.zero_()
    for top in case["tops"]:
        key = f"top_diff/{top}"
        if key in stored.files:
            blob = net.blob_by_name(top)
            blob.diff.copy_(torch.from_numpy(stored[key]).reshape(blob.shape))
    net.backward()
    for bottom in case["check_bottom_diff"]:
        key = f"bottom_diff/{bottom}"
        _compare(f"bottom diff '{bottom}'", _numpy(net.blob_by_name(bottom).diff), stored[key], rtol, atol)
    for i, blob in enumerate(layer.blobs):
        key = f"param_diff/{i}"
        if key in stored.files:
            _compare(f"param {i} diff", _numpy(blob.diff), stored[key], rtol, atol)


def run(golden_dir, names=None, rtol=1e-4, atol=1e-5, out=sys.stdout):
    layers_dir = golden_dir if os.path.exists(os.path.join(golden_dir, "manifest.json")) else \
        os.path.join(golden_dir, "layers")
    with open(os.path.join(layers_dir, "manifest.json")) as f:
        cases = json.load(f)
    if names:
        cases = [c for c in cases if c["name"] in names]
    passed, failed = 0, []
    for case in cases:
        start = time.perf_counter()
        try:
            run_case(layers_dir, case, rtol, atol)
        except (Mismatch, BrewnetError, NotImplementedError) as e:
            failed.append(case["name"])
            print(f"FAIL {case['name']:<32} {case['layer_type']:<24} {e}", file=out)
            continue
        passed += 1
        print(f"ok   {case['name']:<32} {case['layer_type']:<24} {1000 * (time.perf_counter() - start):7.1f} ms",
              file=out)
    print(f"{passed} passed, {len(failed)} failed", file=out)
    return passed, failed


def main(argv=None):
    parser = argparse.ArgumentParser(prog="brewnet-conformance", description=__doc__.split("\n\n")[0])
    parser.add_argument("golden", help="the golden folder (or its layers/ subfolder)")
    parser.add_argument("-case", "--case", action="append", help="run only these cases")
    parser.add_argument("-rtol", "--rtol", type=float, default=1e-4)
    parser.add_argument("-atol", "--atol", type=float, default=1e-5)
    args = parser.parse_args(argv)
    from ..log import init_log
    init_log(level=40)   # the nets' assembly logs would drown the report
    _, failed = run(args.golden, args.case, args.rtol, args.atol)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
