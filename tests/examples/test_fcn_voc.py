"""fcn.berkeleyvision.org's voc-fcn32s code (net.py, solver.prototxt, voc_layers.py, surgery.py's transplant and
interp, score.py) runs on brewnet end to end on a VOC-format folder of brewnet's digit set: scripts/fcn_voc_fcn32s.sh.  Their code is
not vendored: $FCN names a checkout or bare clone of github.com/shelhamer/fcn.berkeleyvision.org, and the test
skips without one."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FCN = pathlib.Path(os.environ.get("FCN", "") or "/nonexistent")


@pytest.mark.skipif(not FCN.is_dir(), reason="no fcn.berkeleyvision.org checkout or clone ($FCN)")
def test_voc_fcn32s_generates_solves_and_scores_on_a_voc_folder():
    done = subprocess.run(["bash", str(ROOT / "scripts" / "fcn_voc_fcn32s.sh"), str(FCN)],
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHON=sys.executable))
    assert done.returncode == 0, done.stderr[-3000:]
    scores = dict(re.findall(r"Iteration 2 (overall accuracy|mean IU|fwavacc|loss) ([0-9.eE+-]+)", done.stdout))
    assert set(scores) == {"loss", "overall accuracy", "mean IU", "fwavacc"}, done.stdout[-2000:]
    assert float(scores["loss"]) > 0
    # surgery.transplant copied VGG16's convolutions and coerced its fc6 / fc7 into convolutions, values intact.
    assert "transplant conv1_1 (64, 3, 3, 3) -> (64, 3, 3, 3): equal" in done.stdout
    assert "transplant fc6 (4096, 25088) -> (4096, 512, 7, 7): equal" in done.stdout
    assert "transplant fc7 (4096, 4096) -> (4096, 4096, 1, 1): equal" in done.stdout
    for name in ("overall accuracy", "mean IU", "fwavacc"):
        assert 0.0 < float(scores[name]) <= 1.0
