import numpy as np
import pytest

from brewnet import viz

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as handle:
        return handle.read(8) == PNG


def test_each_plot_writes_a_png(tmp_path):
    paths = [
        viz.line_plot(str(tmp_path / "a" / "line.png"), {"m": [1, 2, 4], "p": [1, 2, 3]}, logy=True,
                      styles={"p": "--"}),
        viz.bar_plot(str(tmp_path / "bar.png"), ["x", "y"], {"s": [1, 2], "t": [3, 4]}),
        viz.image_grid(str(tmp_path / "grid.png"), np.random.RandomState(0).rand(5, 8, 8), ncols=3,
                       titles=list("abcde")),
        viz.image_grid(str(tmp_path / "rgb.png"), np.ones((2, 4, 4, 3))),
        viz.histograms(str(tmp_path / "hist.png"), {"a": np.arange(10), "b": np.zeros(3)}),
    ]
    assert all(_is_png(p) for p in paths)


def test_bad_inputs_name_the_figure_and_the_values(tmp_path):
    with pytest.raises(viz.PlotError, match=r"line_plot .*l.png: series 'm' has 3 values, Expect: 2"):
        viz.line_plot(str(tmp_path / "l.png"), {"m": [1, 2, 3]}, x=[1, 2])
    with pytest.raises(viz.PlotError, match=r"Expect: N x H x W or N x H x W x 3 images, Actual: shape \(4, 4\)"):
        viz.image_grid(str(tmp_path / "g.png"), np.zeros((4, 4)))
    with pytest.raises(viz.PlotError, match="series 's' has 1 values, Expect: 2"):
        viz.bar_plot(str(tmp_path / "b.png"), ["x", "y"], {"s": [1]})
    with pytest.raises(viz.PlotError, match="no series"):
        viz.line_plot(str(tmp_path / "e.png"), {})


def test_histogram_rows_leave_missing_panels_blank(tmp_path):
    path = viz.histogram_rows(str(tmp_path / "rows.png"), {"act": {"a": [1, 2], "b": [3]}, "grad": {"a": [0.1]}})
    assert _is_png(path)
    with pytest.raises(viz.PlotError, match="nothing to draw"):
        viz.histogram_rows(str(tmp_path / "none.png"), {"act": {}})


def test_contour_paths_draws_a_function_and_refuses_bad_paths(tmp_path):
    bowl = lambda x, y: x ** 2 + 3 * y ** 2
    out = viz.contour_paths(str(tmp_path / "c.png"), bowl, (-2, 2), (-1, 1),
                            {"gd": [[1.5, 0.8], [1.0, 0.2], [0.5, 0.05]]}, logscale=True)
    assert _is_png(out)
    with pytest.raises(viz.PlotError, match=r"c2.png: path 'gd' has shape \(3,\), Expect: \(n, 2\)"):
        viz.contour_paths(str(tmp_path / "c2.png"), bowl, (-2, 2), (-1, 1), {"gd": [1, 2, 3]})
    with pytest.raises(viz.PlotError, match=r"the function gave shape \(\) on a \(200, 200\) grid"):
        viz.contour_paths(str(tmp_path / "c3.png"), lambda x, y: 1.0, (-2, 2), (-1, 1), {})
