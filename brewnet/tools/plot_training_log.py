"""plot_training_log: curves from one or more training logs -> a PNG (Caffe's
tools/extra/plot_training_log.py.example, on matplotlib and brewnet's parse_log).

    brewnet plot_training_log CHART_TYPE OUTPUT.png LOG [LOG ...]

Chart types (Caffe's numbering):
    0: Test accuracy  vs. Iters        1: Test accuracy  vs. Seconds
    2: Test loss  vs. Iters            3: Test loss  vs. Seconds
    4: Train learning rate  vs. Iters  5: Train learning rate  vs. Seconds
    6: Train loss  vs. Iters           7: Train loss  vs. Seconds
One line per log, labelled with the log's file name.  The output name must end in .png.
"""
import os
import sys

from .parse_log import parse_log

CHARTS = {
    0: ("test", "accuracy", "NumIters"), 1: ("test", "accuracy", "Seconds"),
    2: ("test", "loss", "NumIters"), 3: ("test", "loss", "Seconds"),
    4: ("train", "LearningRate", "NumIters"), 5: ("train", "LearningRate", "Seconds"),
    6: ("train", "loss", "NumIters"), 7: ("train", "loss", "Seconds"),
}
_LABELS = {"accuracy": "Test accuracy", "loss": "loss", "LearningRate": "Train learning rate",
           "NumIters": "Iters", "Seconds": "Seconds"}


def chart_title(chart_type):
    table, y, x = CHARTS[chart_type]
    name = _LABELS[y] if y != "loss" else ("Test loss" if table == "test" else "Train loss")
    return f"{name}  vs. {_LABELS[x]}"


def usage():
    lines = [f"Usage: plot_training_log chart_type[0-{len(CHARTS) - 1}] /where/to/save.png "
             "/path/to/first.log ...", "Supported chart types:"]
    lines += [f"    {k}: {chart_title(k)}" for k in sorted(CHARTS)]
    return "\n".join(lines)


def series(log_path, chart_type):
    """(xs, ys) of the chart for one log; a column the log lacks is a ValueError naming it."""
    table, y, x = CHARTS[chart_type]
    train_rows, test_rows = parse_log(log_path)
    rows = test_rows if table == "test" else train_rows
    rows = [r for r in rows if y in r]
    if not rows:
        raise ValueError(f"{log_path}: no {table} rows with a '{y}' column")
    return [r[x] for r in rows], [r[y] for r in rows]


def plot(chart_type, output, logs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots()
    for path in logs:
        xs, ys = series(path, chart_type)
        axes.plot(xs, ys, marker=".", linewidth=0.75, label=os.path.basename(path))
    _, y, x = CHARTS[chart_type]
    axes.set_title(chart_title(chart_type))
    axes.set_xlabel(_LABELS[x])
    axes.set_ylabel(chart_title(chart_type).split("  vs.")[0])
    axes.legend(loc="best", fontsize="small")
    axes.grid(True, alpha=0.3)
    figure.savefig(output)
    plt.close(figure)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) < 3 or not argv[0].isdigit() or int(argv[0]) not in CHARTS:
        print(usage(), file=sys.stderr)
        return 1
    chart_type, output, logs = int(argv[0]), argv[1], argv[2:]
    if not output.endswith(".png"):
        print(f"plot_training_log: the output must be a .png file, got {output}", file=sys.stderr)
        return 1
    for path in logs:
        if not os.path.isfile(path):
            print(f"plot_training_log: log file not found: {path}", file=sys.stderr)
            return 1
    try:
        plot(chart_type, output, logs)
    except ValueError as error:
        print(f"plot_training_log: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
