"""Caffe's golden layer cases on a GPU, eagerly and replayed from a CUDA graph (a section of gpu_check).

Every case of tests/golden/layers runs twice on the device:

  eager     tests/layers/golden_case.run_golden_case in GPU mode: the layer's forward and backward on CUDA
            tensors against BVLC Caffe's numbers, at the test suite's tolerances (rtol 1e-4, atol 1e-5);
  recorded  what `-compile` does to a net, for this one layer (runtime/capture.py): bottoms and top diffs copied
            in, forward, backward, recorded once into a CUDA graph after an eager warm-up (the layer's blobs
            restored afterwards, as CapturedStep does), then replayed; the replay's tops, running statistics
            and diffs against Caffe's.

A case that misses the tolerances is tried again ten times looser, so the report tells "rounds differently on
the GPU" from "wrong".  On the CPU (`--device cpu`, a dry run) the recording is replaced by the recording mode
alone (host checks off), which is what the test suite checks too.
"""
import pathlib

import torch

from brewnet.core import common
from brewnet.core.registry import layer_class
from tests.layers.golden_case import (build_golden_layer, compare_golden, golden_cases, run_golden_case,
                                      set_golden_top_diffs, setup_golden_layer)

LOOSE = 10.0


def _tolerant(check, golden_dir, name, *args):
    """{'case', 'ok', 'loose', 'error'}: ok at the suite's tolerances, else loose (10x) or the error."""
    result = {"case": name, "ok": False, "loose": False, "error": None}
    try:
        check(golden_dir, name, *args, rtol=1e-4, atol=1e-5)
        result["ok"] = True
        return result
    except Exception as e:                  # noqa: BLE001 - every failure is reported, none stops the sweep
        result["error"] = f"{type(e).__name__}: {e}"[:400]
    try:
        check(golden_dir, name, *args, rtol=1e-4 * LOOSE, atol=1e-5 * LOOSE)
        result["loose"] = True
    except Exception:                       # noqa: BLE001
        pass
    return result


def eager_case(golden_dir, name, rtol, atol):
    run_golden_case(golden_dir, name, rtol=rtol, atol=atol)


def recorded_case(golden_dir, name, rtol, atol):
    layer, layer_param, case, arrays, bottom, top = setup_golden_layer(golden_dir, name)
    backward = case.get("check_backward", True)
    propagate_down = [b in case.get("check_bottom_diff", []) for b in layer_param.bottom]
    inputs = [b.data.clone() for b in bottom]          # in-place layers overwrite their bottoms
    if backward:
        set_golden_top_diffs(layer_param, arrays, top)
    top_diffs = [t.diff.clone() for t in top] if backward else []

    def step():
        for b, x in zip(bottom, inputs):
            b.data.copy_(x)
        layer.forward_loss(bottom, top)
        if backward:
            for blob in layer.blobs:
                blob.diff.zero_()
            for t, dy in zip(top, top_diffs):
                t.diff.copy_(dy)
            layer.Backward(top, propagate_down, bottom)

    saved = [b.data.clone() for b in layer.blobs]       # BatchNorm's statistics move with every forward
    step()                                              # the eager warm-up: lazily made buffers now exist
    for blob, data in zip(layer.blobs, saved):
        blob.data.copy_(data)
    device = bottom[0].data.device if bottom else common.device()
    if device.type == "cuda":
        graph = torch.cuda.CUDAGraph()
        with common.graph_capture(), torch.cuda.graph(graph):
            step()
        graph.replay()
        torch.cuda.synchronize(device)
    else:
        with common.graph_capture():
            step()

    report = {}
    for t, blob in zip(layer_param.top, top):
        compare_golden(name, f"top/{t}", blob.data, arrays[f"top/{t}"], rtol, atol, report)
    for i, blob in enumerate(layer.blobs):
        if f"param_after_forward/{i}" in arrays.files:
            compare_golden(name, f"param_after_forward/{i}", blob.data, arrays[f"param_after_forward/{i}"],
                           rtol, atol, report)
    if not backward:
        return
    for b, blob, down in zip(layer_param.bottom, bottom, propagate_down):
        if down:
            compare_golden(name, f"bottom_diff/{b}", blob.diff, arrays[f"bottom_diff/{b}"], rtol, atol, report)
    for i, blob in enumerate(layer.blobs):
        compare_golden(name, f"param_diff/{i}", blob.diff, arrays[f"param_diff/{i}"], rtol, atol, report)


def layer_type(golden_dir, name):
    return build_golden_layer(golden_dir, name)[1]["layer_type"]


def sweep(golden_dir, device):
    """Both runs of every golden layer case on `device`; a summary dict with the failures listed."""
    golden_dir = pathlib.Path(golden_dir)
    if device.type == "cuda":
        common.set_device(device.index or 0)
        common.set_mode_gpu()
    try:
        names = golden_cases(golden_dir=golden_dir)
        recordable = [n for n in names if layer_class(layer_type(golden_dir, n)).not_recordable is None]
        results = {"eager": [_tolerant(eager_case, golden_dir, n) for n in names],
                   "recorded": [_tolerant(recorded_case, golden_dir, n) for n in recordable]}
    finally:
        common.set_mode_cpu()
    summary = {"cases": len(names), "not_recordable": sorted(set(names) - set(recordable))}
    for kind, rows in results.items():
        summary[kind] = {"ok": sum(r["ok"] for r in rows),
                         "loose": [r["case"] for r in rows if not r["ok"] and r["loose"]],
                         "failed": {r["case"]: r["error"] for r in rows if not r["ok"] and not r["loose"]},
                         "first_error": {r["case"]: r["error"] for r in rows if not r["ok"]}}
    return summary


def markdown(summary):
    lines = [f"Caffe's golden layer cases on the device ({summary['cases']} cases, rtol 1e-4 / atol 1e-5; "
             f"'loose': within {LOOSE:g}x that):", ""]
    lines.append(f"- not recorded (refused by -compile): {', '.join(summary['not_recordable']) or 'none'}")
    for kind in ("eager", "recorded"):
        s = summary[kind]
        lines.append(f"- {kind}: {s['ok']} agree, {len(s['loose'])} only loosely "
                     f"({', '.join(s['loose']) or 'none'}), {len(s['failed'])} differ "
                     f"({', '.join(s['failed']) or 'none'})")
        for case, error in s["failed"].items():
            lines.append(f"  - {case}: {error}")
    return "\n".join(lines) + "\n"
