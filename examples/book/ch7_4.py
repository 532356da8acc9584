"""Book 7.4: dropout and occlusion. LeNet trained on whole digits and tested on digits with their bottom half
blacked out; LeNet trained on such half-occluded digits; and the dropout-ratio sweep of the book's figure 7-8:
a Dropout layer after ip1's ReLU with ratio 0.9 ... 0, trained on whole digits, tested on half-occluded ones.
"""
import numpy as np

from brewnet import viz
from brewnet.data.idx_sets import load_idx_set

from .ch7 import accuracy, as_input, lenet, occlude, train, TEST_BATCH
from .registry import Result, experiment

RATIOS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)
BOOK_SWEEP = {0.9: 0.66, 0.0: 0.44}     # the ends of figure 7-8 (the book prints the curve, not a table)
FULL = dict(iterations=1000, batch=64)
QUICK = dict(iterations=30, batch=16, test=200, ratios=(0.9, 0.0))


def run_lenet(ctx, label, train_x, train_y, test_sets, setting, dropout=None):
    """Train one LeNet; its accuracy on each named test set (name -> (images, labels))."""
    trained = train(ctx, label, lenet(setting["batch"], dropout=dropout), train_x, train_y,
                    setting["iterations"], setting["batch"])
    test_text = lenet(TEST_BATCH, dropout=dropout)
    return {name: accuracy(test_text, trained.net, x, y) for name, (x, y) in test_sets.items()}


@experiment("7.4", "dropout and occlusion: LeNet on half-occluded digits, dropout-ratio sweep (figure 7-8)",
            book="trained on whole digits, tested on half-occluded 0.4358; trained on half-occluded 0.9044; "
                 "dropout ratio 0.9 ... 0: 0.66 ... 0.44 (figure 7-8, full MNIST)")
def dropout_occlusion(ctx):
    setting = dict(QUICK if ctx.quick else FULL)
    ratios = setting.get("ratios", RATIOS)
    data = load_idx_set(ctx.data)
    n_test = setting.get("test", len(data.test_labels))
    train_x, train_y = as_input(data.train_images), data.train_labels
    test_y = data.test_labels[:n_test]
    whole, hidden = as_input(data.test_images[:n_test]), as_input(occlude(data.test_images[:n_test]))
    tests = {"whole": (whole, test_y), "occluded": (hidden, test_y)}
    plain = run_lenet(ctx, "7.4 whole digits", train_x, train_y, tests, setting)
    on_occluded = run_lenet(ctx, "7.4 occluded digits", as_input(occlude(data.train_images)), train_y, tests,
                            setting)
    sweep = {0.0: plain["occluded"]}       # ratio 0 is the net without dropout (a ratio-0 layer is the identity)
    for ratio in ratios:
        if ratio > 0:
            sweep[ratio] = run_lenet(ctx, f"7.4 dropout {ratio}", train_x, train_y,
                                     {"occluded": tests["occluded"]}, setting, dropout=ratio)["occluded"]
    sweep = {r: sweep[r] for r in ratios}
    ctx.say(f"  whole-digit LeNet: whole {plain['whole']:.4f}, occluded {plain['occluded']:.4f} (book 0.4358); "
            f"occluded-digit LeNet: occluded {on_occluded['occluded']:.4f} (book 0.9044), whole "
            f"{on_occluded['whole']:.4f}")
    ctx.say("  dropout sweep, occluded test: " + ", ".join(f"{r}: {a:.4f}" for r, a in sweep.items()))
    draw(ctx, data, ratios, sweep)
    numbers = {"whole_on_whole": plain["whole"], "whole_on_occluded": plain["occluded"],
               "occluded_on_occluded": on_occluded["occluded"], "occluded_on_whole": on_occluded["whole"],
               "sweep": sweep}
    return Result(ours=summary(setting, numbers), numbers=numbers, data=describe_data(ctx, n_test))


def draw(ctx, data, ratios, sweep):
    viz.line_plot(ctx.figure("dropout_sweep.png"),
                  {"brewnet": [sweep[r] for r in ratios],
                   "book (ends of figure 7-8)": [BOOK_SWEEP.get(r, np.nan) for r in ratios]},
                  x=list(ratios), xlabel="dropout ratio", ylabel="accuracy on half-occluded digits",
                  styles={"brewnet": "o-", "book (ends of figure 7-8)": "s"},
                  title="7.4 (figure 7-8): dropout ratio vs occluded-digit accuracy")
    sample = data.test_images[:8]
    viz.image_grid(ctx.figure("occluded_digits.png"), np.concatenate([sample, occlude(sample)]), ncols=8,
                   title="7.4: test digits, whole and with the bottom half occluded", normalize=False)


def summary(setting, n):
    sweep = n["sweep"]
    best = max(sweep, key=sweep.get)
    return (f"{setting['iterations']} iterations of batch {setting['batch']} each (the book: 10 000 of 64 on "
            f"60 000 digits). Trained on whole digits: whole {n['whole_on_whole']:.4f}, bottom half occluded "
            f"{n['whole_on_occluded']:.4f}; trained on occluded digits: occluded {n['occluded_on_occluded']:.4f} "
            f"(whole {n['occluded_on_whole']:.4f}). Dropout after ip1, ratio -> occluded accuracy: "
            + ", ".join(f"{r}: {a:.4f}" for r, a in sweep.items())
            + f" (best {best}); figure dropout_sweep.png. The book does not say which half it hides; "
              "this row hides the bottom one (rows 14-27 set to 0)")


def describe_data(ctx, n_test):
    name = "bundled digits (8 000 train" if ctx.data is None else f"{ctx.data} (full train"
    return f"{name}, {n_test} test, the same test digits with their bottom half occluded)"
