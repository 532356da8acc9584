"""python -m examples.book [--list] [--all] [--quick] [--data DIR] [SECTION ...]

    --list            every experiment by the book's section number
    6.4               run one (several may be named); figures under results/book/6.4/, its row in RESULTS.md
    --all             run them all and regenerate RESULTS.md
    --quick           the small version the tests run (RESULTS.md is left as it is)
    --data DIR        MNIST-format IDX folder (default: the bundled digits, data/mnist10k; e.g.
                      /usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist)
    --gpu N           run on CUDA device N where an experiment can (others stay on the CPU)

Torch runs on one thread unless BREWNET_BOOK_THREADS says otherwise.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(ref, args):
    parts = ["python -m examples.book", ref]
    if args.data:
        parts += ["--data", args.data]
    if args.gpu is not None:
        parts += ["--gpu", str(args.gpu)]
    return " ".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m examples.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("sections", nargs="*", help="the book's section numbers, e.g. 3.5 6.4")
    parser.add_argument("--list", action="store_true", help="list the experiments")
    parser.add_argument("--all", action="store_true", help="run every experiment, regenerate RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="small versions (RESULTS.md untouched)")
    parser.add_argument("--data", default=None, help="MNIST-format IDX folder (default: bundled digits)")
    parser.add_argument("--out", default=None, help="figures folder (default: results/book)")
    parser.add_argument("--gpu", type=int, default=None,
                        help="CUDA device for the experiments that can use one (chapter 10's generative models)")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    import torch
    threads = torch.get_num_threads()
    # One thread by default: the book's nets are small, and the laboratory shares its machine.
    torch.set_num_threads(int(os.environ.get("BREWNET_BOOK_THREADS", "1")))
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args):
    from examples.book import registry, results

    experiments = registry.load_all()
    if args.list or not (args.sections or args.all):
        for ref, exp in experiments.items():
            print(f"{ref:8s} {exp.title}   (book: {exp.book})")
        return 0
    refs = list(experiments) if args.all else args.sections
    unknown = [r for r in refs if r not in experiments]
    if unknown:
        print(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(experiments)}", file=sys.stderr)
        return 2
    out_root = args.out or os.path.join(ROOT, "results", "book")
    rows, quality = {}, {}
    for ref in refs:
        exp = experiments[ref]
        print(f"== {ref} {exp.title}")
        ctx = registry.Context(quick=args.quick, data=args.data, out_root=out_root, gpu=args.gpu)
        start = time.perf_counter()
        result = registry.run_experiment(ref, ctx)
        seconds = time.perf_counter() - start
        print(f"-- {ref}: book {exp.book} | brewnet {result.ours} | data {result.data} | {seconds:.1f} s")
        for path in result.figures:
            print(f"   figure {os.path.relpath(path, ROOT) if path.startswith(ROOT) else path}")
        # A run on other data than the bundled digits gets a row of its own beside the default one.
        row = ref if not args.data else f"{ref} [{os.path.basename(os.path.normpath(args.data))}]"
        rows[row] = results.format_row(row, exp.title, exp.book, result.ours, result.data,
                                       _command(ref, args), seconds)
        quality.update(result.quality)
    if not args.quick:
        results.update_rows(rows, new_quality=quality)
        print(f"updated {os.path.relpath(results.PATH, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
