"""Figures for the book's laboratory and for users' own experiments: one module, matplotlib's Agg backend
(no display needed), every function writes one PNG and returns its path.

    line_plot(path, {"measured": ys, "predicted": ys2}, xlabel=..., ylabel=..., logy=True)
    bar_plot(path, labels, {"series": values})
    image_grid(path, images, ncols=8, titles=None)      # images: N x H x W (grey) or N x H x W x 3
    histograms(path, {"conv1": values, ...})            # one panel per entry
    histogram_rows(path, {"activations": {...}, "gradients": {...}})   # one row of panels per entry
    contour_paths(path, f, (x0, x1), (y0, y1), {"Adam": points, ...})  # a 2-D function's contours, solver paths
"""
import os

import numpy as np

from .errors import BrewnetError


class PlotError(BrewnetError):
    """A figure that cannot be drawn from the values given (wrong shape, nothing to draw)."""


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path, title):
    plt = _pyplot()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def line_plot(path, series, xlabel="", ylabel="", title="", logy=False, x=None, styles=None):
    """One line per entry of `series` (name -> values); `styles` maps a name to a matplotlib format ("o--")."""
    if not series:
        raise PlotError(f"line_plot {path}: no series to draw")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in series.items():
        values = np.asarray(values, dtype=float).ravel()
        xs = np.arange(1, len(values) + 1) if x is None else np.asarray(x)
        if len(xs) != len(values):
            raise PlotError(f"line_plot {path}: series {name!r} has {len(values)} values, Expect: {len(xs)}")
        ax.plot(xs, values, (styles or {}).get(name, "-"), label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _save(fig, path, title)


def bar_plot(path, labels, series, ylabel="", title="", logy=False):
    """Grouped bars: one group per label, one bar per series (name -> one value per label)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, len(labels) * 0.9), 4))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        values = np.asarray(values, dtype=float).ravel()
        if len(values) != len(labels):
            raise PlotError(f"bar_plot {path}: series {name!r} has {len(values)} values, Expect: {len(labels)}")
        ax.bar(np.arange(len(labels)) + i * width, values, width, label=name)
    ax.set_xticks(np.arange(len(labels)) + width * (len(series) - 1) / 2, labels, rotation=30, fontsize=8)
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _save(fig, path, title)


def image_grid(path, images, ncols=8, titles=None, title="", normalize=True):
    """Images N x H x W (grey) or N x H x W x 3; each scaled to its own range when `normalize`."""
    images = np.asarray(images, dtype=float)
    if images.ndim not in (3, 4) or len(images) == 0:
        raise PlotError(f"image_grid {path}: Expect: N x H x W or N x H x W x 3 images, Actual: shape "
                        f"{images.shape}")
    plt = _pyplot()
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.6 * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= len(images):
            continue
        img = images[i]
        if normalize:
            low, high = img.min(), img.max()
            img = (img - low) / (high - low) if high > low else np.zeros_like(img)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0 if normalize else None,
                  vmax=1 if normalize else None)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    return _save(fig, path, title)


def histograms(path, values_by_name, bins=50, title="", xlabel=""):
    """One histogram panel per entry (name -> values), side by side."""
    return histogram_rows(path, {xlabel: values_by_name}, bins=bins, title=title)


def histogram_rows(path, rows, bins=50, title=""):
    """Rows of histogram panels: rows maps a row label to {panel name: values} (e.g. activations, gradients
    per layer), the label written under each panel of its row."""
    if not rows or not any(rows.values()):
        raise PlotError(f"histograms {path}: nothing to draw")
    plt = _pyplot()
    ncols = max(len(panels) for panels in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.2 * ncols, 2.3 * len(rows)), squeeze=False)
    for ax_row, (label, panels) in zip(axes, rows.items()):
        for ax in ax_row[len(panels):]:
            ax.axis("off")
        for ax, (name, values) in zip(ax_row, panels.items()):
            counts, edges = np.histogram(np.asarray(values, dtype=float).ravel(), bins=bins)
            ax.stairs(counts, edges, fill=True)
            ax.set_title(name, fontsize=8)
            ax.set_xlabel(label, fontsize=7)
            ax.tick_params(labelsize=6)
    return _save(fig, path, title)


def contour_paths(path, function, xlim, ylim, paths, levels=30, title="", logscale=False):
    """Contour lines of `function(X, Y)` (NumPy grids in, values out) over xlim x ylim, with one polyline per
    entry of `paths` (name -> points, shape (n, 2)), its start and end marked.  `logscale` spaces the levels
    logarithmically above the grid's minimum (valleys whose floor the linear levels would not show)."""
    plt = _pyplot()
    xs, ys = np.linspace(*xlim, 200), np.linspace(*ylim, 200)
    grid_x, grid_y = np.meshgrid(xs, ys)
    values = np.asarray(function(grid_x, grid_y), dtype=float)
    if values.shape != grid_x.shape:
        raise PlotError(f"contour_paths {path}: the function gave shape {values.shape} on a {grid_x.shape} grid")
    if logscale:
        low = values.min()
        levels = low + np.geomspace(1e-3 * (values.max() - low) + 1e-12, values.max() - low, levels)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.contour(grid_x, grid_y, values, levels=levels, cmap="Greys", linewidths=0.6)
    for name, points in paths.items():
        points = np.asarray(points, dtype=float)
        if points.ndim != 2 or points.shape[1] != 2:
            raise PlotError(f"contour_paths {path}: path {name!r} has shape {points.shape}, Expect: (n, 2)")
        line, = ax.plot(points[:, 0], points[:, 1], ".-", markersize=3, linewidth=1, label=name)
        ax.plot(points[-1, 0], points[-1, 1], "o", color=line.get_color(), markersize=5)
    first = next(iter(paths.values()), None)
    if first is not None:
        ax.plot(first[0][0], first[0][1], "k*", markersize=9, label="start")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.legend(fontsize=7)
    return _save(fig, path, title)
