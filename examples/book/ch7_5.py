"""Book 7.5: transfer learning after Yosinski et al. (2014), on LeNet. The digits are split into task A
(classes 0-4) and task B (5-9, labelled 0-4); baseA and baseB are LeNets (5 outputs) trained on each. Then,
for k = 1 ... 4 (conv1, conv2, ip1, ip2: k = 4 is all of them), a new LeNet on B gets its first k layers from
a base net's caffemodel by `-weights` (net.copy_from: layers beyond k are renamed `<name>_new`, so nothing is
copied into them) and either keeps them frozen (`lr_mult: 0`) or fine-tunes them with the rest:

    BnB   first k from baseB, frozen       BnB+  first k from baseB, fine-tuned     (the book's table 7-2)
    AnB   first k from baseA, frozen       AnB+  first k from baseA, fine-tuned     (the book's table 7-3)

All are tested on B's test digits; the tables are written to results/book/7.5/tables.md and drawn as
Yosinski's figure (accuracy against k).
"""
import os

import numpy as np

from brewnet import viz
from brewnet.data.idx_sets import load_idx_set

from .ch7 import LENET_CORE, TEST_BATCH, accuracy, as_input, lenet, train
from .nets import get
from .registry import Result, experiment

CLASSES = 5
GROUPS = {  # name -> (source task, frozen), in the order of the tables' columns
    "BnB": ("B", True), "AnB": ("A", True), "BnB+": ("B", False), "AnB+": ("A", False)}
TABLES = {"7-2 (copied from baseB)": ("BnB", "BnB+"), "7-3 (copied from baseA)": ("AnB", "AnB+")}
# baseA, baseB and the transferred nets start from different random draws, as independent trainings do.
SEEDS = {"A": 1701, "B": 1702, "transfer": 1703}
FULL = dict(iterations=800, batch=64)
QUICK = dict(iterations=20, batch=16, test=300, depths=(1, 4))


def split(images, labels):
    """Task A (digits 0-4) and task B (5-9, relabelled 0-4): name -> (images, labels)."""
    low = labels < CLASSES
    return {"A": (as_input(images[low]), labels[low]), "B": (as_input(images[~low]), labels[~low] - CLASSES)}


def transfer_net(batch, k, frozen):
    """LeNet for B whose first k core layers are copied (and, if `frozen`, kept by lr_mult 0)."""
    copied, rest = LENET_CORE[:k], LENET_CORE[k:]
    return lenet(batch, CLASSES, frozen=copied if frozen else (), fresh=rest)


def core_weights(net, names):
    """layer -> its weight array, for the core layers `names` (looked up under either name)."""
    return {n: get(net.layer_by_name(n if net.has_layer(n) else f"{n}_new").blobs[0]) for n in names}


def run_transfer(ctx, name, k, bases, base_paths, train_b, test_b, setting):
    source, frozen = GROUPS[name]
    text = transfer_net(setting["batch"], k, frozen)
    trained = train(ctx, f"7.5 {name} k={k}", text, *train_b, setting["iterations"], setting["batch"],
                    weights=base_paths[source], seed=SEEDS["transfer"])
    # lr_mult 0 must leave the copied layers exactly as the base net had them.
    moved = 0.0
    if frozen:
        before, after = core_weights(bases[source], LENET_CORE[:k]), core_weights(trained.net, LENET_CORE[:k])
        moved = max(float(np.abs(after[n] - before[n]).max()) for n in before)
    return accuracy(transfer_net(TEST_BATCH, k, frozen), trained.net, *test_b), moved


@experiment("7.5", "transfer learning after Yosinski et al.: tasks A (0-4) and B (5-9), frozen vs fine-tuned",
            book="tables 7-2 (BnB, BnB+) and 7-3 (AnB, AnB+): test accuracy on B with the first k layers copied "
                 "and frozen or fine-tuned, k = 1 ... all")
def transfer(ctx):
    setting = dict(QUICK if ctx.quick else FULL)
    depths = setting.get("depths", range(1, len(LENET_CORE) + 1))
    data = load_idx_set(ctx.data)
    tasks = split(data.train_images, data.train_labels)
    n_test = setting.get("test", len(data.test_labels))
    test_b = split(data.test_images[:n_test], data.test_labels[:n_test])["B"]
    folder = os.path.join(ctx.out_root, ctx.ref)
    os.makedirs(folder, exist_ok=True)
    bases, base_paths, base_acc = {}, {}, {}
    for task in ("A", "B"):
        trained = train(ctx, f"7.5 base{task}", lenet(setting["batch"], CLASSES), *tasks[task],
                        setting["iterations"], setting["batch"], seed=SEEDS[task])
        bases[task], base_paths[task] = trained.net, os.path.join(folder, f"base{task}.caffemodel")
        trained.net.save(base_paths[task])
    base_acc["B"] = accuracy(lenet(TEST_BATCH, CLASSES), bases["B"], *test_b)
    table, moved = {}, {}
    for k in depths:
        for name in GROUPS:
            table[(name, k)], moved[(name, k)] = run_transfer(ctx, name, k, bases, base_paths, tasks["B"],
                                                              test_b, setting)
        ctx.say(f"  k={k}: " + ", ".join(f"{n} {table[(n, k)]:.4f}" for n in GROUPS))
    text = write_tables(ctx, table, depths, base_acc["B"], setting)
    ctx.say(text)
    draw(ctx, table, depths, base_acc["B"])
    numbers = {"baseB": base_acc["B"], "table": table, "frozen_moved": max(moved.values())}
    return Result(ours=summary(setting, numbers, depths), numbers=numbers, data=describe_data(ctx, len(test_b[1])))


def write_tables(ctx, table, depths, base_b, setting):
    """The two tables in markdown: one row per k, the frozen and the fine-tuned column side by side."""
    lines = [f"baseB (LeNet trained on B alone, {setting['iterations']} iterations): {base_b:.4f}", ""]
    for title, (frozen, tuned) in TABLES.items():
        lines += [f"Table {title}", "", f"| k (layers copied) | {frozen} (frozen) | {tuned} (fine-tuned) |",
                  "|---|---|---|"]
        lines += [f"| {k} ({', '.join(LENET_CORE[:k])}) | {table[(frozen, k)]:.4f} | {table[(tuned, k)]:.4f} |"
                  for k in depths]
        lines.append("")
    text = "\n".join(lines)
    with open(ctx.figure("tables.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return text


def draw(ctx, table, depths, base_b):
    series = {name: [table[(name, k)] for k in depths] for name in GROUPS}
    series["baseB"] = [base_b] * len(depths)
    styles = {"BnB": "o-", "BnB+": "o--", "AnB": "s-", "AnB+": "s--", "baseB": "k:"}
    viz.line_plot(ctx.figure("transfer.png"), series, x=list(depths), xlabel="layers copied (k)",
                  ylabel="test accuracy on task B", styles=styles,
                  title="7.5: transfer A->B and B->B, frozen and fine-tuned (Yosinski et al.)")


def summary(setting, n, depths):
    t = n["table"]
    cells = "; ".join(f"k={k}: " + ", ".join(f"{name} {t[(name, k)]:.4f}" for name in GROUPS) for k in depths)
    return (f"{setting['iterations']} iterations of batch {setting['batch']} per net (base and transfer). "
            f"baseB {n['baseB']:.4f}; {cells}. Frozen layers unchanged by training (max |dw| "
            f"{n['frozen_moved']:.1g}); tables.md and transfer.png. " + TRANSFER_NOTES)


TRANSFER_NOTES = (
    "One B test digit is 0.001: most cells differ by noise. Beyond it: AnB with all 4 layers frozen (A's "
    "classifier answering for B) is near chance; AnB with conv1-ip1 frozen falls below BnB (ip1's features "
    "are specific to A, Yosinski's specificity); fine-tuning recovers it. baseB trails the transferred nets "
    "because their copied layers trained 800 iterations more (Yosinski trains base nets to convergence)")


def describe_data(ctx, n_test_b):
    name = "bundled digits" if ctx.data is None else ctx.data
    return f"{name}: A = classes 0-4, B = 5-9 of its train set; {n_test_b} B test digits"
