"""Chapter 10's experiments (quick versions): the VAE of cdoersch/vae_tutorial and the book's DCGAN."""
import os

import numpy as np
import pytest
import torch

from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from examples.book import ch10, ch10_common, ch10_dcgan, results
from examples.book.nets import net_from_text
from examples.book.registry import Context, run_experiment
from brewnet.tools.sample_quality import QualityReport


@pytest.fixture(scope="module")
def out_root(tmp_path_factory):
    """One output folder for the module, so the quick classifier is trained once."""
    return str(tmp_path_factory.mktemp("book"))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # as `python -m examples.book` runs them: a shared machine
    yield
    torch.set_num_threads(threads)


def _without_source(param):
    for layer in param.layer:
        if layer.type == "Data":
            layer.data_param.ClearField("source")
    return param


def test_the_vae_net_is_cdoerschs_but_for_the_data_path():
    with open(os.path.join(ch10.VAE_DIR, "mnist_vae.prototxt"), encoding="utf-8") as handle:
        original = parse_text(handle.read(), caffe_pb2.NetParameter())
    ours = parse_text(ch10.vae_net_text("/some/lmdb"), caffe_pb2.NetParameter())
    assert [layer.data_param.source for layer in ours.layer if layer.type == "Data"] == ["/some/lmdb"]
    assert _without_source(ours) == _without_source(original)
    two = parse_text(ch10.vae_net_text("/some/lmdb", latent=2), caffe_pb2.NetParameter())
    sizes = {layer.name: layer.inner_product_param.num_output for layer in two.layer if layer.name in ("mu", "logsd")}
    assert sizes == {"mu": 2, "logsd": 2}


@pytest.mark.skipif(not os.environ.get("VAE_TUTORIAL"), reason="set VAE_TUTORIAL to a cdoersch/vae_tutorial checkout")
def test_the_vendored_files_equal_the_checkout():
    for name in ("mnist_vae.prototxt", "mnist_vae_solver_adam.prototxt", "LICENSE"):
        with open(os.path.join(os.environ["VAE_TUTORIAL"], name), "rb") as theirs, \
                open(os.path.join(ch10.VAE_DIR, name), "rb") as ours:
            assert ours.read() == theirs.read(), name


def test_vae_trains_and_its_kl_is_the_books_formula(out_root):
    result = run_experiment("10.1", Context(quick=True, out_root=out_root))
    for label in ("30-D", "2-D"):
        n = result.numbers[label]
        assert n["loss_start"] == pytest.approx(784 * np.log(2), rel=0.01)     # sigmoid(0) for every pixel
        assert n["loss_end"] < 0.6 * n["loss_start"]
        assert n["kl"]["max_abs_per_element"] < 1e-5 and n["kl"]["rel_sum"] < 1e-6
        assert n["kl"]["klloss"] > 0
        low, high = n["sample_range"]
        assert 0 <= low < high <= 1
        assert sum(n["histogram"]) == ch10_common.QUICK_SAMPLES
    axis = result.numbers["2-D"]["grid_axis"]
    assert len(axis) == ch10.QUICK_GRID and axis[0] == pytest.approx(-axis[-1])
    assert axis[-1] == pytest.approx(1.383, abs=0.01)           # Phi^-1(11/12): the grid's outer quantile
    assert result.numbers["real_score"] > 5.0            # the real digits: confident and spread over the classes
    assert set(result.quality) == {"VAE (30-D latent)", "VAE (2-D latent)", "real digits"}
    names = {os.path.basename(p) for p in result.figures}
    assert {"fig10-2_samples.png", "fig10-4_latent_grid.png", "loss.png"} <= names
    assert all(os.path.getsize(p) > 0 for p in result.figures)


def test_dcgan_nets_have_the_books_shapes():
    g = net_from_text(ch10_dcgan.generator(4))
    shapes = {name: tuple(g.blob_by_name(name).shape) for name in ("fc1", "fc2_4d", "up1", "conv1", "up2", "gen")}
    assert shapes == {"fc1": (4, 1024), "fc2_4d": (4, 128, 7, 7), "up1": (4, 128, 14, 14),
                      "conv1": (4, 64, 14, 14), "up2": (4, 64, 28, 28), "gen": (4, 1, 28, 28)}
    d = net_from_text(ch10_dcgan.discriminator(4))
    shapes = {name: tuple(d.blob_by_name(name).shape) for name in ("pool1", "pool2", "fc1", "score")}
    assert shapes == {"pool1": (4, 64, 14, 14), "pool2": (4, 128, 5, 5), "fc1": (4, 1024), "score": (4, 1)}


def test_the_fixed_deconvolution_is_nearest_neighbour_upsampling():
    g = net_from_text(ch10_dcgan.generator(2, width=0.125))
    g.forward()
    x, up = g.blob_by_name("fc2_4d").data, g.blob_by_name("up1").data
    torch.testing.assert_close(up, x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3), rtol=0, atol=0)


def test_dcgan_trains_and_draws_its_figures(out_root):
    result = run_experiment("10.2", Context(quick=True, out_root=out_root))
    n = result.numbers
    width, batch, epochs, digits = ch10_dcgan.SETTINGS["quick"]
    assert n["rounds"] == epochs * ch10_dcgan.QUICK_ROUNDS_PER_EPOCH
    assert all(np.isfinite([n["d_loss_start"], n["d_loss_end"], n["g_loss_start"], n["g_loss_end"]]))
    # Before any step D cannot tell: both losses start near log 2 (D's is the mean over real and fake).
    assert n["d_loss_start"] == pytest.approx(np.log(2), abs=0.35)
    assert sum(n["histogram"]) == ch10_common.QUICK_SAMPLES and 1.0 <= n["score"] <= 10.0
    low, high = n["sample_range"]
    assert -1 <= low < high <= 1
    names = {os.path.basename(p) for p in result.figures}
    assert {"fig10-8_iter0.png", f"fig10-12_end_epoch{epochs}.png", "fig10-7_losses.png"} <= names
    assert list(result.quality) == ["DCGAN"]
    assert result.quality["DCGAN"].startswith(f"| DCGAN | 10.2 | {ch10_common.QUICK_SAMPLES} |")


def test_snapshot_marks_follow_the_books_figures():
    assert ch10_dcgan.snapshots_at(125, 22) == {0: "fig10-8_iter0.png", 400: "fig10-9_iter400.png",
                                                1250: "fig10-10_epoch10.png", 2500: "fig10-11_epoch20.png",
                                                2750: "fig10-12_end_epoch22.png"}


def test_mosaic_tiles_digits_in_rows():
    digits = np.arange(3 * 28 * 28, dtype=float).reshape(3, 28, 28)
    tiled = ch10_common.mosaic(digits, ncols=2)
    assert tiled.shape == (2 * 29 + 1, 2 * 29 + 1)
    np.testing.assert_array_equal(tiled[30:58, 1:29], digits[2])


def test_quality_table_survives_rewrites_of_the_experiments_table(tmp_path):
    path = str(tmp_path / "RESULTS.md")
    report = QualityReport(n=10, histogram=np.array([1] * 10), score=9.5)
    results.update_rows({"6.4": "| 6.4 | ZCA | a | b | c | `d` | 1.0 s |"}, path,
                        new_quality={"DCGAN": results.quality_row("DCGAN", "10.2", report, "note")})
    results.update_rows({"3.5": "| 3.5 | AND | a | b | c | `d` | 1.0 s |"}, path)
    assert list(results.read_rows(path)) == ["3.5", "6.4"]
    text = open(path, encoding="utf-8").read()
    assert text.count(results.QUALITY_TITLE) == 1
    assert "| DCGAN | 10.2 | 10 | 9.50 | 10.0 10.0 10.0 10.0 10.0 10.0 10.0 10.0 10.0 10.0 | none (no categorical code) | note |" in text
