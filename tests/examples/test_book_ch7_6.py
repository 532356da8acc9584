"""Book 7.6 (quick version): the six structures train on the bundled digits, their parameter counts are the
generators' closed formulas, and the block-deletion table covers the blocks each net can lose."""
import os

import numpy as np
import pytest
import torch

from examples.book.registry import Context, run_experiment
from tests.models.test_densenet import densenet_formula
from tests.models.test_dsn import dsn_formula
from tests.models.test_fractalnet import fractal_formula
from tests.models.test_resnet import resnet_formula


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # as `python -m examples.book` runs it: tiny nets, a shared machine
    try:
        return run_experiment("7.6", Context(quick=True, out_root=str(tmp_path_factory.mktemp("book"))))
    finally:
        torch.set_num_threads(threads)


def test_table_counts_are_the_formulas(result):
    table = result.numbers["table"]
    assert list(table) == ["ResNet-8", "Plain-8", "DSN", "DSN without companions", "FractalNet-C3", "DenseNet-7"]
    counts = {name: row["parameters"] for name, row in table.items()}
    assert counts == {
        "ResNet-8": resnet_formula(1, 4, 1, 10) == 5142 and 5142,
        "Plain-8": resnet_formula(1, 4, 1, 10, shortcuts=False) == 4934 and 4934,
        "DSN": dsn_formula((4, 8), 2, 1, 10, False, True),
        "DSN without companions": dsn_formula((4, 8), 2, 1, 10, False, False),
        "FractalNet-C3": fractal_formula(3, (4, 8), 1, 10),
        "DenseNet-7": densenet_formula(7, 4, 8, 1, 10),
    }
    assert counts["DSN"] - counts["DSN without companions"] == 4 * 10 + 10    # one companion after stage 1
    for row in table.values():
        assert row["ms_per_iteration"] > 0
        assert round(row["accuracy"] * 48) == pytest.approx(row["accuracy"] * 48)   # k right of 48


def test_deletions_cover_the_deletable_blocks(result):
    deletions = result.numbers["deletions"]
    assert list(deletions["ResNet-8"]) == ["res1_1", "res2_1", "res3_1"]     # projections keep the shortcut
    assert list(deletions["Plain-8"]) == ["res1_1"]                          # the others change the shape
    for accuracies in deletions.values():
        assert all(0 <= a <= 1 for a in accuracies.values())
    assert list(result.numbers["columns"]["FractalNet-C3"]) == [0, 1, 2]


def test_training_curves_and_figures(result):
    curves = result.numbers["curves"]
    assert all(len(c) == 30 and np.isfinite(c).all() for c in curves.values())
    resnet = curves["ResNet-8"]
    assert np.mean(resnet[-5:]) < np.mean(resnet[:5]) - 0.2                 # it learns within 30 iterations
    assert sorted(os.path.basename(p) for p in result.figures) == ["accuracy.png", "block_deletion.png",
                                                                   "dsn_loss.png"]
    assert all(os.path.getsize(p) > 0 for p in result.figures)
    assert "bundled digits (8000 training images, the first 48 test images)" == result.data
