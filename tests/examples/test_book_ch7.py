"""Chapter 7's experiments 7.3-7.5 (quick versions: a few iterations on the bundled digits) and the LeNet
builder they share."""
import numpy as np
import pytest
import torch

from brewnet.data.idx_sets import load_idx_set
from examples.book import ch7
from examples.book.nets import net_from_text
from examples.book.registry import Context, run_experiment


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as `python -m examples.book` runs (the nets are small; more threads only contend)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_idx_set()


def quick(ref, tmp_path):
    return run_experiment(ref, Context(quick=True, out_root=str(tmp_path)))


def test_lenet_builder_freezes_and_renames_layers():
    net = net_from_text(ch7.lenet(4, classes=5, frozen=("conv1",), fresh=("ip2",), dropout=0.5))
    assert net.layer_names == ["data", "label", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "drop1",
                               "ip2_new", "loss"]
    assert net.params_lr == [0.0, 0.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]    # conv1's weight and bias frozen
    assert tuple(net.blobs["ip2"].shape) == (4, 5)                      # the renamed layer keeps its top
    bn = net_from_text(ch7.lenet(4, batch_norm=True))
    assert [n for n in bn.layer_names if n.endswith(("_bn", "_scale"))] == [
        "conv1_bn", "conv1_scale", "conv2_bn", "conv2_scale", "ip1_bn", "ip1_scale"]


def test_occlusion_blacks_out_the_bottom_half(digits):
    images = digits.test_images[:3]
    hidden = ch7.occlude(images)
    assert not hidden[:, 14:].any()
    np.testing.assert_array_equal(hidden[:, :14], images[:, :14])
    assert images[:, 14:].any()


def test_bn_trains_lenet_on_raw_pixels_and_resnet_needs_it(tmp_path, digits):
    result = quick("7.3", tmp_path)
    n = result.numbers
    lenet, res = n["lenet"], n["resnet"]
    raw = lenet["raw pixels"]
    assert raw["diverged"] is not None and raw["diverged"] < 10      # loss NaN within a few steps
    # A dead net answers class 0 everywhere: the accuracy is the share of 0s (the book's 0.1).
    assert raw["accuracy"] == pytest.approx(np.mean(digits.test_labels[:200] == 0))
    assert lenet["raw pixels + BN"]["diverged"] is None and lenet["raw pixels + BN"]["accuracy"] > 0.7
    assert lenet["scaled 1/256"]["accuracy"] > 0.7
    assert res["BN, lr 0.1"]["diverged"] is None and np.isfinite(res["BN, lr 0.1"]["loss"]).all()
    assert res["no BN, lr 0.1"]["diverged"] is not None                 # the same net without BN blows up
    # Without BN the residual sums grow the logits: the first loss is far above BN's (about ln 10).
    assert res["no BN, lr 0.001"]["loss"][0] > 3 * res["BN, lr 0.1"]["loss"][0]
    assert any(p.endswith("resnet20_loss.png") for p in result.figures)


def test_occluded_digits_and_the_dropout_sweep(tmp_path):
    result = quick("7.4", tmp_path)
    n = result.numbers
    assert n["whole_on_whole"] > 0.7
    assert n["whole_on_occluded"] < n["whole_on_whole"] - 0.3          # half a digit fools the whole-digit net
    assert n["occluded_on_occluded"] > n["whole_on_occluded"] + 0.2     # training on occluded digits helps
    assert list(n["sweep"]) == [0.9, 0.0] and n["sweep"][0.0] == n["whole_on_occluded"]
    assert any(p.endswith("dropout_sweep.png") for p in result.figures)


def test_transfer_tables_copy_and_freeze_layers(tmp_path):
    result = quick("7.5", tmp_path)
    n = result.numbers
    table = n["table"]
    assert n["frozen_moved"] == 0.0                        # lr_mult 0 keeps the copied weights exactly
    assert table[("BnB", 4)] == n["baseB"]                 # all four layers copied from baseB and frozen: baseB
    assert table[("AnB", 4)] < 0.4                         # A's frozen classifier on B's digits: near chance
    assert table[("AnB+", 4)] > 0.7 and table[("BnB+", 4)] > 0.7
    assert sorted(table) == sorted((g, k) for g in ("AnB", "AnB+", "BnB", "BnB+") for k in (1, 4))
    tables = (tmp_path / "7.5" / "tables.md").read_text()
    assert "Table 7-2" in tables and "| 4 (conv1, conv2, ip1, ip2) |" in tables
    assert (tmp_path / "7.5" / "baseA.caffemodel").exists()
