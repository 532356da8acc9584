"""The registry of the book's experiments: each is a function registered under the book's section number.

A chapter module adds one with a decorator (and its name to CHAPTERS below):

    @experiment("6.4", "ZCA whitening", book="W = [[3.376, -1.327], [-1.327, 1.056]]")
    def zca(ctx):
        ...                                   # ctx.quick, ctx.data, ctx.figure("name.png"), ctx.say(...)
        return Result(ours="W = ...", numbers={"w00": 3.376}, data="book's covariance")

`ours` and `data` fill the row of RESULTS.md; `numbers` is what the tests assert on.
"""
import dataclasses
import importlib
import os
import sys

# Chapter modules, imported in this order by load_all(); a new chapter adds its module name here.
CHAPTERS = ("ch3", "ch4", "ch5_9", "ch6", "ch7_3", "ch7_4", "ch7_5", "ch7_6", "ch8", "ch8_lenet", "ch9", "ch10", "ch10_dcgan", "ch10_infogan", "ch10_wgan")

EXPERIMENTS = {}


@dataclasses.dataclass
class Experiment:
    ref: str
    title: str
    book: str
    run: object


@dataclasses.dataclass
class Result:
    ours: str
    numbers: dict = dataclasses.field(default_factory=dict)
    data: str = "-"
    figures: list = dataclasses.field(default_factory=list)
    quality: dict = dataclasses.field(default_factory=dict)    # model -> results.quality_row(...) (chapter 10)


@dataclasses.dataclass
class Context:
    """What an experiment gets: quick or full, the IDX data folder (None: bundled digits), where figures go."""
    quick: bool = False
    data: str = None
    gpu: int = None             # --gpu N: the CUDA device for experiments that can use one
    out_root: str = "results/book"
    ref: str = ""
    stream: object = None
    figures: list = dataclasses.field(default_factory=list)

    def figure(self, name):
        """Path for a figure of this experiment, results/book/<ref>/<name>; remembered for the report."""
        folder = os.path.join(self.out_root, self.ref)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        self.figures.append(path)
        return path

    def say(self, text=""):
        print(text, file=self.stream or sys.stdout)


def experiment(ref, title, book):
    """Register the decorated function as the experiment of the book's section `ref`."""
    def register(func):
        if ref in EXPERIMENTS:
            raise ValueError(f"experiment {ref} registered twice ({EXPERIMENTS[ref].run.__module__}, "
                             f"{func.__module__})")
        EXPERIMENTS[ref] = Experiment(ref, title, book, func)
        return func
    return register


def ref_key(ref):
    """'3.4.4' < '3.5' < '6.1' < '6.1 [fashion-mnist]' < '10.2': numeric order of the dotted parts, then the
    data a row names (rows of runs on other data than the bundled digits)."""
    section, _, data = ref.partition(" ")
    return tuple(int(p) if p.isdigit() else p for p in section.replace("-", ".").split(".")), data


def load_all():
    for name in CHAPTERS:
        importlib.import_module(f"{__package__}.{name}")
    return dict(sorted(EXPERIMENTS.items(), key=lambda item: ref_key(item[0])))


def run_experiment(ref, ctx):
    experiments = load_all()
    if ref not in experiments:
        raise KeyError(f"no experiment {ref!r}; known: {', '.join(experiments)}")
    ctx.ref, ctx.figures = ref, []
    result = experiments[ref].run(ctx)
    result.figures = list(ctx.figures)
    return result
