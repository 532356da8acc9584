"""Every case of tests/golden/solvers: real Caffe's parameter trajectories, reproduced step by step.

Same net, same HDF5 data, same initial parameters -> brewnet's parameters after each recorded iteration equal
Caffe's (rtol 1e-4, atol 1e-6); the snapshot cases also restore Caffe's own solverstate / caffemodel files
(BINARYPROTO and HDF5) in a fresh solver and continue to the parameters Caffe reached after its own resume.
"""
import json
import pathlib

import numpy as np
import pytest

from brewnet.solvers import get_solver

from ._nets import golden_workdir, set_golden_init
from ..conftest import GOLDEN

RTOL, ATOL = 1e-4, 1e-6
MANIFEST = json.loads((pathlib.Path(GOLDEN) / "solvers" / "manifest.json").read_text()) \
    if (pathlib.Path(GOLDEN) / "solvers" / "manifest.json").exists() else []


def _check(solver, arrays, k, case):
    for name, layer in zip(solver.net.layer_names, solver.net.layers):
        for i, blob in enumerate(layer.blobs):
            np.testing.assert_allclose(blob.data.numpy(), arrays[f"iter{k}/{name}/{i}"], rtol=RTOL, atol=ATOL,
                                       err_msg=f"{case}: {name} param {i} after iteration {k}")
    # the loss the net computed on the last mini-batch of the step (what the golden file records)
    np.testing.assert_allclose(float(solver.net.blobs["loss"].data), float(arrays[f"iter{k}/loss"]),
                               rtol=RTOL, atol=ATOL, err_msg=f"{case}: loss at iteration {k}")


def test_manifest_is_there(golden):
    assert len(MANIFEST) >= 19 and all((golden / "solvers" / c["solver"]).exists() for c in MANIFEST)


@pytest.mark.parametrize("case", MANIFEST, ids=[c["name"] for c in MANIFEST])
def test_trajectory(case, golden, tmp_path, monkeypatch):
    source = golden_workdir(golden, tmp_path, monkeypatch)
    solver = get_solver(str(source / case["solver"]))
    arrays = np.load(source / case["trajectory"])
    set_golden_init(solver.net, arrays)
    for k in range(1, case["iterations"] + 1):
        solver.step(1)
        _check(solver, arrays, k, case["name"])
    assert solver.iter == case["iterations"]


RESUME_CASES = [c for c in MANIFEST if "solverstate" in c]


def test_resume_cases_cover_both_formats():
    assert {c["snapshot_format"] for c in RESUME_CASES} == {"BINARYPROTO", "HDF5"}


@pytest.mark.parametrize("case", RESUME_CASES, ids=[c["name"] for c in RESUME_CASES])
def test_resume_from_caffe_snapshot(case, golden, tmp_path, monkeypatch):
    """Caffe's own files, restored in a fresh solver (its HDF5Data layer starts again from the first row,
    as Caffe's did), continue to the parameters Caffe reached."""
    source = golden_workdir(golden, tmp_path, monkeypatch)
    solver = get_solver(str(source / case["solver"]))
    solver.restore(str(source / case["solverstate"]))
    assert solver.iter == 6
    arrays = np.load(source / case["resumed_trajectory"])
    for k in range(7, 13):
        solver.step(1)
        _check(solver, arrays, k, case["name"] + " resumed")


@pytest.mark.parametrize("case", RESUME_CASES, ids=[c["name"] for c in RESUME_CASES])
def test_snapshot_written_by_brewnet_matches_caffes(case, golden, tmp_path, monkeypatch):
    """brewnet's snapshot at iteration 6 holds what Caffe's holds: iter, current_step, the history blobs, and a
    learned_net whose weights are Caffe's (to tolerance)."""
    source = golden_workdir(golden, tmp_path, monkeypatch)
    solver = get_solver(str(source / case["solver"]))
    set_golden_init(solver.net, np.load(source / case["trajectory"]))
    solver.step(6)
    state_file = solver.snapshot()
    assert state_file == case["solverstate"]
    ours, theirs = get_solver(str(source / case["solver"])), get_solver(str(source / case["solver"]))
    ours.restore(state_file)
    theirs.restore(str(source / case["solverstate"]))
    assert (ours.iter, ours.current_step) == (theirs.iter, theirs.current_step)
    for mine, caffes in zip(ours.history + ours.net.learnable_params, theirs.history + theirs.net.learnable_params):
        np.testing.assert_allclose(mine.data.numpy(), caffes.data.numpy(), rtol=RTOL, atol=ATOL)
