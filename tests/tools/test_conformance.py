"""The conformance runner over every layer case of the real Caffe (tests/golden/layers)."""
import io
import json
import subprocess
import sys

from brewnet.tools import conformance


def test_every_golden_layer_case_passes(golden):
    out = io.StringIO()
    passed, failed = conformance.run(str(golden), out=out)
    cases = json.load(open(golden / "layers" / "manifest.json"))
    lines = out.getvalue().splitlines()
    assert failed == [], "\n".join(l for l in lines if l.startswith("FAIL"))
    assert passed == len(cases) >= 107
    assert lines[-1] == f"{passed} passed, 0 failed"
    assert sum(l.startswith("ok ") for l in lines) == passed


def test_runner_reports_a_mismatch_with_the_worst_value(golden, tmp_path):
    # A copy of one case whose stored top is perturbed must fail, naming the blob and both values.
    layers = tmp_path / "layers"
    layers.mkdir()
    import numpy as np
    stored = dict(np.load(golden / "layers" / "relu.npz"))
    stored["top/t0"] = stored["top/t0"].copy()
    stored["top/t0"].flat[3] += 0.5
    np.savez(layers / "relu.npz", **stored)
    (layers / "relu.prototxt").write_text((golden / "layers" / "relu.prototxt").read_text())
    case = [c for c in json.load(open(golden / "layers" / "manifest.json")) if c["name"] == "relu"]
    (layers / "manifest.json").write_text(json.dumps(case))
    out = io.StringIO()
    passed, failed = conformance.run(str(tmp_path), out=out)
    assert (passed, failed) == (0, ["relu"])
    assert "top 't0': 1 of" in out.getvalue() and "brewnet" in out.getvalue()


def test_command_line_exit_status(golden):
    result = subprocess.run([sys.executable, "-m", "brewnet.tools.conformance", str(golden), "-case", "conv_k3_p1",
                             "-case", "softmax_loss"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "2 passed, 0 failed"
